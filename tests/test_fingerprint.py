"""A residual written anew with the same code finds its compiled plan; one that computes something
else never does (``nlls.fingerprint``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls import plan
from nlls.fingerprint import SameCode

jax.config.update("jax_enable_x64", True)

X = jnp.linspace(0.0, 4.0, 25)
Y = 2.0 * jnp.exp(-1.3 * X) + 0.5

# The source of a notebook cell, run several times in one namespace (``exec`` of the same text
# makes equal code objects, as a re-run cell does).
CELL = """
def residual(p):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y
"""


TIGHT = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 0.0}  # to working precision


def _misses():
    return plan._cached_plan.cache_info().misses


def test_lambdas_with_the_same_code_share_one_plan():
    before = _misses()
    results = [
        nlls.least_squares(
            lambda p: p[0] * jnp.exp(-p[1] * X) + p[2] - Y, jnp.asarray([1.0, 1.0, 0.0]), **TIGHT
        )
        for _ in range(3)
    ]
    assert _misses() - before == 1
    for sol in results:
        np.testing.assert_allclose(sol.params, [2.0, 1.3, 0.5], rtol=1e-10)
        np.testing.assert_array_equal(sol.params, results[0].params)


def test_curve_fit_models_with_the_same_code_share_one_plan():
    before = _misses()
    for _ in range(3):
        popt, _ = nlls.curve_fit(
            lambda x, a, k, c: a * jnp.exp(-k * x) + c, X, Y, p0=[1.0, 1.0, 0.0]
        )
        np.testing.assert_allclose(popt, [2.0, 1.3, 0.5], rtol=1e-10)
    assert _misses() - before == 1


def test_a_cell_run_again_hits_the_cache_and_rebound_data_does_not():
    namespace = {"jnp": jnp, "x": X, "y": Y}
    exec(CELL, namespace)
    first = namespace["residual"]
    nlls.least_squares(first, jnp.asarray([1.0, 1.0, 0.0]), **TIGHT)
    before = _misses()
    exec(CELL, namespace)  # the same cell again: a new function, the same code and globals
    assert namespace["residual"] is not first
    sol = nlls.least_squares(namespace["residual"], jnp.asarray([1.0, 1.0, 0.0]), **TIGHT)
    assert _misses() == before
    np.testing.assert_allclose(sol.params, [2.0, 1.3, 0.5], rtol=1e-10)
    # New data under the same global name: the old plan holds the old y as a constant, so it
    # must not be used.
    namespace["y"] = 3.0 * jnp.exp(-0.7 * X) - 1.0
    exec(CELL, namespace)
    sol = nlls.least_squares(namespace["residual"], jnp.asarray([1.0, 1.0, 0.0]), **TIGHT)
    assert _misses() == before + 1
    np.testing.assert_allclose(sol.params, [3.0, 0.7, -1.0], rtol=1e-10)


@pytest.mark.parametrize("rate", [0.4, 0.9, 1.7])
def test_closures_over_other_values_get_their_own_answers(rate):
    def make(rate, data):
        return lambda p: p[0] * jnp.exp(-rate * X) + p[1] - data

    data = 1.5 * jnp.exp(-rate * X) + 0.25
    sol = nlls.least_squares(make(rate, data), jnp.asarray([1.0, 0.0]), **TIGHT)
    np.testing.assert_allclose(sol.params, [1.5, 0.25], rtol=1e-10)


def test_same_code_compares_code_closures_defaults_and_globals():
    def make(k, scale=1.0):
        return lambda p: scale * (p - k)

    assert SameCode(make(1.0)) == SameCode(make(1.0))
    assert hash(SameCode(make(1.0))) == hash(SameCode(make(1.0)))
    assert SameCode(make(1.0)) != SameCode(make(2.0))
    assert SameCode(make(1)) != SameCode(make(1.0))  # the type of a value is part of it
    assert SameCode(make(1.0, 2.0)) != SameCode(make(1.0))
    a, b = jnp.zeros(3), jnp.zeros(3)
    assert SameCode(make(a)) == SameCode(make(a))
    assert SameCode(make(a)) != SameCode(make(b))  # arrays by identity
    assert SameCode(lambda p: p + 1) != SameCode(lambda p: p + 2)

    def recursive(n):
        return 1 if n == 0 else n * recursive(n - 1)

    assert SameCode(recursive) == SameCode(recursive)  # terminates on self-reference


def test_the_same_code_in_another_namespace_is_another_function():
    # Two namespaces (two modules, or doctest's copies of one) that hold the same objects now may
    # not later: the plan would call the first namespace's function.
    first, second = {"jnp": jnp, "x": X, "y": Y}, {"jnp": jnp, "x": X, "y": Y}
    exec(CELL, first)
    exec(CELL, second)
    assert SameCode(first["residual"]) != SameCode(second["residual"])
    nlls.least_squares(first["residual"], jnp.asarray([1.0, 1.0, 0.0]), **TIGHT)
    first.clear()
    sol = nlls.least_squares(second["residual"], jnp.asarray([1.0, 1.0, 0.0]), **TIGHT)
    np.testing.assert_allclose(sol.params, [2.0, 1.3, 0.5], rtol=1e-10)
