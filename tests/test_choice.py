"""``method="auto"`` (``nlls.choice``): it runs the method its rule names, iterate for iterate, says
why in ``stats.choice``, and reaches NIST's certified values wherever the rule sends a fit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls

X = jnp.linspace(0.0, 4.0, 40)
Y = 3.0 * jnp.exp(-1.3 * X) + 0.5 + 0.01 * jnp.sin(7 * X)


def exponential(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


START = jnp.asarray([1.0, 1.0, 0.0])


def _same_run(a, b):
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    assert int(a.stats.nfev) == int(b.stats.nfev) and int(a.stats.steps) == int(b.stats.steps)


def test_auto_on_a_small_system_runs_trust_region_damping_step_for_step():
    automatic = nlls.least_squares(exponential, START, args=(X, Y), method="auto")
    trust_region = nlls.LevenbergMarquardt(damping="trust_region")
    direct = nlls.least_squares(exponential, START, args=(X, Y), method=trust_region)
    _same_run(automatic, direct)
    reason = automatic.stats.choice
    assert reason.startswith("auto: ") and "trust-region damping" in reason and "3×3" in reason
    assert direct.stats.choice == ""  # a method named by the caller is not a choice
    assert automatic.stats.method == "LevenbergMarquardt"
    assert automatic.success
    assert f"choice:   {reason}" in str(automatic) and "choice:" not in str(direct)


def _linear_system(m, n):
    rng = np.random.default_rng(1)
    a, b = jnp.asarray(rng.standard_normal((m, n))), jnp.asarray(rng.standard_normal(m))
    return lambda p: a @ (p + 0.1 * jnp.sin(p)) - b, jnp.zeros(n)


@pytest.mark.parametrize(("m", "n"), [(100, 70), (70, 100)])
def test_auto_on_a_large_system_runs_nielsen_damping(m, n):
    residual, p0 = _linear_system(m, n)
    automatic = nlls.least_squares(residual, p0, method="auto")
    _same_run(automatic, nlls.least_squares(residual, p0, method="lm"))
    assert f"Nielsen damping (damped system {min(m, n)}×{min(m, n)} > 64" in automatic.stats.choice


def test_auto_on_the_matrix_free_path_runs_nielsen_damping():
    residual, p0 = _linear_system(30, 10)
    automatic = nlls.least_squares(residual, p0, method="auto", linear="krylov")
    _same_run(automatic, nlls.least_squares(residual, p0, method="lm", linear="krylov"))
    assert "matrix-free" in automatic.stats.choice


def test_auto_with_bounds_takes_a_method_that_takes_bounds():
    bounds = (jnp.asarray([0.0, 0.0, 0.6]), jnp.asarray([10.0, 10.0, 10.0]))
    automatic = nlls.least_squares(
        exponential, START + 0.7, args=(X, Y), method="auto", bounds=bounds
    )
    direct = nlls.least_squares(exponential, START + 0.7, args=(X, Y), method="lm", bounds=bounds)
    _same_run(automatic, direct)
    assert "bounds" in automatic.stats.choice
    assert float(automatic.params[2]) == pytest.approx(0.6, abs=1e-8)  # the bound holds


@pytest.mark.slow
def test_auto_reaches_every_nist_certified_value():
    """Both starts of the 19 NIST StRD sets at LRE ≥ 6 (the acceptance of ``method="auto"``; as
    ``test_accuracy``'s test of the default method)."""
    from problems import NIST_NAMES, load_nist, lre

    for name in NIST_NAMES:
        problem = load_nist(name)
        x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
        for start in problem.starts:
            sol = nlls.least_squares(
                problem.residual,
                jnp.asarray(start),
                args=(x, y),
                method="auto",
                max_steps=5000,
                ftol=1e-15,
                xtol=1e-15,
                gtol=0.0,
            )
            errors = lre(problem.labelled(sol.params), problem.certified)
            assert errors.min() >= 6, f"{name} from {start}: LRE {np.round(errors, 2)}"
            assert bool(sol.success), sol.message


def test_fit_curve_fit_and_minibatch_take_auto():
    x = jnp.linspace(-1.0, 1.0, 64)[:, None]
    y = jnp.sin(2.0 * x)
    model = eqx.nn.MLP(1, 1, width_size=6, depth=1, activation=jnp.tanh, key=jax.random.key(0))
    model = jax.tree_util.tree_map(
        lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, model
    )
    fitted = nlls.fit(model, x, y, method="auto", max_steps=50)
    assert fitted.solution.stats.choice.startswith("auto: ")

    popt, _ = nlls.curve_fit(
        lambda x, a, k: a * jnp.exp(-k * x),
        X,
        2.0 * jnp.exp(-1.5 * X),
        p0=[1.0, 1.0],
        method="auto",
    )
    np.testing.assert_allclose(np.asarray(popt), [2.0, 1.5], rtol=1e-10)

    batched = nlls.fit(model, x, y, method="auto", batch_size=16, epochs=2)
    assert batched.solution.stats.choice == "auto: minibatch Levenberg–Marquardt (with batch_size)"


def test_auto_is_listed_among_the_method_names():
    with pytest.raises(ValueError, match="'auto', 'lm'"):
        nlls.least_squares(exponential, START, args=(X, Y), method="automatic")
