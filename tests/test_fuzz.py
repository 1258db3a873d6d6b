"""Fuzz tests: generated options, problems and data, each answered by a clear error or a correct,
honestly reported result — never an error from inside JAX, a solve that does not end, a cost above
the start's, or "converged" at a point that is not stationary.

Hypothesis draws the cases (derandomized: CI runs the same cases every time, over 1,000 of them).
Shapes and dtypes come from small fixed sets and everything else travels as traced arguments or
tolerances, so that the cases reuse a few compiled plans and the whole file runs in about half a
minute. Stationarity is checked independently of the solver: the cosines between the residual and
the columns of a Jacobian from ``jax.jacfwd``, computed in NumPy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nlls
from nlls.termination import Status

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

X = np.linspace(0.0, 3.0, 24)
Y = 2.0 * np.exp(-1.3 * X) + 0.4 + 0.02 * np.sin(5.0 * X)  # no exact fit: a non-zero minimum
START = np.array([1.0, 1.0, 0.0])
METHODS = ("lm", "gn", "dogleg", "trust_region")


def decay(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def _cosines(jac: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """|Jⱼᵀr| / (‖Jⱼ‖‖r‖), in float64 NumPy (0 for a zero column or residual)."""
    jac, residual = np.asarray(jac, np.float64), np.asarray(residual, np.float64)
    norms = np.linalg.norm(jac, axis=0) * np.linalg.norm(residual)
    dots = np.abs(jac.T @ residual)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


@jax.jit
def _decay_jacobian(p, x, y):
    return jax.jacfwd(decay)(p, x, y), decay(p, x, y)


def _assert_reported_honestly(sol, start_cost: float, check_stationary: bool, limit: float):
    status = Status(int(sol.status_code))
    assert status != Status.RUNNING
    cost = float(sol.cost)
    if math.isfinite(start_cost):
        assert np.all(np.isfinite(np.asarray(jax.tree_util.tree_leaves(sol.params)[0])))
        assert cost <= start_cost * (1 + 1e-6) + 1e-300, (cost, start_cost, status)
    if check_stationary and status.converged:
        flat = jnp.asarray(
            np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(sol.params)])
        )
        jac, residual = _decay_jacobian(
            flat, jnp.asarray(X, flat.dtype), jnp.asarray(Y, flat.dtype)
        )
        assert np.max(_cosines(jac, residual)) <= limit, (status, np.asarray(flat))


# -- options: a clear error naming the option, or a solve reported honestly -----------------------

WEIRD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.floats(-1, 1), max_size=2),
)
OPTIONS = {
    "ftol": st.one_of(WEIRD, st.floats(0.0, 1e-6)),
    "xtol": st.one_of(WEIRD, st.floats(0.0, 1e-6)),
    "gtol": st.one_of(WEIRD, st.floats(0.0, 1e-6)),
    "max_steps": st.one_of(WEIRD, st.integers(0, 300)),
    "max_time": st.one_of(WEIRD, st.floats(1.0, 100.0)),
    "method": st.one_of(st.sampled_from(("lm", "dogleg")), st.text(max_size=8), WEIRD),
    # valid values of options that fix the compiled program: a few, each a new plan
    "linear": st.one_of(st.sampled_from(("auto", "krylov")), WEIRD),
    "jac": st.one_of(st.sampled_from(("auto", "rev")), WEIRD),
    "loss": st.one_of(st.sampled_from(("linear", "huber")), WEIRD),
    "f_scale": st.one_of(st.sampled_from((0.5, 1.0)), st.floats(max_value=0.0), WEIRD),
    "max_jacobian_bytes": st.one_of(st.sampled_from((10**6, 10**9)), WEIRD),
    "covariance": st.one_of(st.sampled_from((False, "absolute")), WEIRD),
}
START_COST = 0.5 * float(np.sum(np.asarray(decay(START, X, Y)) ** 2))


@settings(max_examples=540, **SETTINGS)
@given(name=st.sampled_from(sorted(OPTIONS)), data=st.data())
def test_fuzz_least_squares_options(name, data):
    value = data.draw(OPTIONS[name], label=name)
    try:
        sol = nlls.least_squares(
            decay, jnp.asarray(START), args=(jnp.asarray(X), jnp.asarray(Y)), **{name: value}
        )
    except (ValueError, TypeError) as error:
        assert name.split("_")[0] in str(error), (name, value, str(error))
        return
    # Stationarity is asked of the default stopping rules and of tight tolerances (a loose ftol
    # such as 1.0 stops where the user asked it to).
    tight = not isinstance(value, bool) and isinstance(value, (int, float)) and value <= 1e-6
    check = name in ("max_time", "linear", "jac", "max_jacobian_bytes", "covariance")
    check |= (name in ("ftol", "xtol", "gtol") and tight) or (name == "method" and value in METHODS)
    _assert_reported_honestly(sol, START_COST, check_stationary=check, limit=1e-4)


# -- problems: pytrees, dtypes, methods, scales and pathologies ------------------------------------

PATHOLOGIES = ("none", "nan_region", "kink", "constant", "overflow")


def _flat(params):
    if isinstance(params, dict):
        return jnp.concatenate([params["a"][None], params["rest"]])
    return params


def pathological(params, x, y, scale, wall, kink, dependence):
    """``scale·(decay − y)``, NaN where ``a > wall``, plus ``kink·|b − 1|`` (not differentiable at
    b = 1); ``dependence = 0`` makes it constant in the parameters."""
    p = _flat(params)
    model = dependence * (p[0] * jnp.exp(-p[1] * x) + p[2]) + (1 - dependence) * 1.5
    r = scale * (model - y) + kink * jnp.abs(p[1] - 1.0)
    return jnp.where(p[0] > wall, jnp.nan, r)


_pathological_jacobian = jax.jit(jax.jacfwd(pathological))


@settings(max_examples=400, **SETTINGS)
@given(
    # a dict of parameters in float32, a vector in float64: four methods each, eight plans
    layout=st.sampled_from((("dict", "float32"), ("vector", "float64"))),
    method=st.sampled_from(METHODS),
    pathology=st.sampled_from(PATHOLOGIES),
    start=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    log_scale=st.floats(-12.0, 12.0),
    parameter=st.floats(0.5, 5.0),
)
def test_fuzz_problems(layout, method, pathology, start, log_scale, parameter):
    structure, dtype = layout[0], jnp.dtype(layout[1])
    scale, wall, kink, dependence = 10.0**log_scale, np.inf, 0.0, 1.0
    if pathology == "nan_region":
        wall = parameter
    elif pathology == "kink":
        kink = parameter
    elif pathology == "constant":
        dependence = 0.0
    elif pathology == "overflow":
        scale = float(jnp.finfo(dtype).max) / parameter
    flat_start = np.asarray(start, dtype)
    if structure == "dict":
        params0 = {"a": jnp.asarray(flat_start[0]), "rest": jnp.asarray(flat_start[1:])}
    else:
        params0 = jnp.asarray(flat_start)
    args = tuple(jnp.asarray(v, dtype) for v in (X, Y, scale, wall, kink, dependence))
    start_residual = np.asarray(pathological(params0, *args), np.float64)
    start_cost = 0.5 * float(np.sum(start_residual**2))
    with np.errstate(over="ignore", invalid="ignore"):
        start_cost_in_dtype = float(0.5 * np.sum(start_residual.astype(dtype) ** 2, dtype=dtype))
    start_jacobian = jax.tree_util.tree_leaves(_pathological_jacobian(params0, *args))
    finite_start = math.isfinite(start_cost_in_dtype) and all(
        bool(jnp.all(jnp.isfinite(leaf))) for leaf in start_jacobian
    )
    try:
        sol = nlls.least_squares(pathological, params0, args=args, method=method)
    except ValueError as error:  # a plain call refuses a start it cannot evaluate, and says so
        assert not finite_start and "not finite" in str(error), str(error)
        return
    assert finite_start
    # Stationarity at a reported success is asked in float64; in float32 a generated case still
    # fails it (pinned below as a strict xfail), so there only the other properties are asked.
    plain = pathology == "none" and abs(log_scale) <= 8 and dtype == jnp.float64
    limit = 1e-4 if dtype == jnp.float64 else 1e-2
    _assert_reported_honestly(sol, start_cost, check_stationary=False, limit=limit)
    if plain and Status(int(sol.status_code)).converged:
        flat = np.asarray(_flat(sol.params), np.float64)
        jac, residual = _decay_jacobian(jnp.asarray(flat), jnp.asarray(X), jnp.asarray(Y))
        jac = np.asarray(jac)
        # Stationary, or flat to working precision along a column that the dtype cannot resolve
        # (‖Jⱼ‖ below √eps of the largest column: e^(−bx) of a rate b ≈ 100 in float32).
        norms = np.linalg.norm(jac, axis=0)
        resolved = norms > np.sqrt(jnp.finfo(dtype).eps) * norms.max()
        cosines = _cosines(jac, residual)
        assert np.max(cosines[resolved], initial=0.0) <= limit, (method, dtype, flat, cosines)


# -- curve_fit against scipy's on generated data -----------------------------------------------------


@settings(max_examples=100, **SETTINGS)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(1e-4, 0.2),
    weighted=st.booleans(),
)
def test_fuzz_curve_fit_agrees_with_scipy(seed, noise, weighted):
    rng = np.random.default_rng(seed)
    truth = np.array([rng.uniform(0.5, 3.0), rng.uniform(0.3, 2.0), rng.uniform(-1.0, 1.0)])
    y = truth[0] * np.exp(-truth[1] * X) + truth[2] + noise * rng.standard_normal(X.size)
    sigma = rng.uniform(0.5, 2.0, X.size) * noise if weighted else None

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    def numpy_model(x, a, b, c):
        return a * np.exp(-b * x) + c

    try:
        params, cov = nlls.curve_fit(model, X, y, p0=truth * 0.8, sigma=sigma)
    except RuntimeError as error:  # scipy's clear error when no optimum is found, and its wording
        assert "Optimal parameters not found" in str(error)
        return
    assert np.all(np.isfinite(np.asarray(params)))
    try:
        reference, reference_cov = scipy.optimize.curve_fit(
            numpy_model, X, y, p0=truth * 0.8, sigma=sigma, ftol=1e-14, xtol=1e-14, gtol=1e-14
        )
    except RuntimeError:  # scipy's own budget ran out: no reference to compare with
        return
    weights = 1.0 if sigma is None else 1.0 / sigma

    def cost(p):
        return 0.5 * np.sum((weights * (numpy_model(X, *p) - y)) ** 2)

    # At least as low a cost as scipy's, and the same parameters far inside their uncertainty (a
    # ten-thousandth of each standard error; where the minimum is flat the digits beyond that
    # are the stopping rule's, not the data's).
    assert cost(np.asarray(params)) <= cost(reference) * (1 + 1e-10)
    errors = np.sqrt(np.diag(reference_cov))
    np.testing.assert_array_less(np.abs(np.asarray(params) - reference), 1e-4 * errors + 1e-12)
    np.testing.assert_allclose(np.asarray(cov), reference_cov, rtol=1e-3, atol=1e-14)


@pytest.mark.xfail(
    strict=True,
    reason="curve_fit ends on max_steps where scipy converges (seed 67108865, σ = 0.125, "
    "weighted; found by test_fuzz_curve_fit_agrees_with_scipy; not fixed yet)",
)
def test_curve_fit_converges_where_scipy_does_on_a_flat_weighted_fit():
    rng = np.random.default_rng(67108865)
    truth = np.array([rng.uniform(0.5, 3.0), rng.uniform(0.3, 2.0), rng.uniform(-1.0, 1.0)])
    y = truth[0] * np.exp(-truth[1] * X) + truth[2] + 0.125 * rng.standard_normal(X.size)
    sigma = rng.uniform(0.5, 2.0, X.size) * 0.125
    nlls.curve_fit(lambda x, a, b, c: a * jnp.exp(-b * x) + c, X, y, p0=truth * 0.8, sigma=sigma)


def test_float32_dogleg_from_zero_on_a_tiny_residual_stops_at_a_stationary_point():
    """Found by ``test_fuzz_problems``: from θ₀ = 0 the rate's column vanishes, and its Marquardt
    scale was a fixed 1; with a residual of 1e-7 the column then sat below the rank cut-off and
    dogleg reported success at a point where its cosine was 0.46 (``solvers.base.norm_scale``)."""
    args = tuple(jnp.asarray(v, jnp.float32) for v in (X, Y, 1e-7, np.inf, 0.0, 1.0))
    sol = nlls.least_squares(pathological, jnp.zeros(3, jnp.float32), args=args, method="dogleg")
    flat = np.asarray(sol.params, np.float64)
    jac, residual = _decay_jacobian(jnp.asarray(flat), jnp.asarray(X), jnp.asarray(Y))
    assert not Status(int(sol.status_code)).converged or np.max(_cosines(jac, residual)) <= 1e-2


@pytest.mark.xfail(
    strict=True,
    reason="float32 LM from a = 1e-15, b = c = 0 (the rate's column 1e-15 long, so its Marquardt "
    "scale is tiny): eight rejected steps of 1e11 down to 360, then PRECISION at the start, where "
    "the cosines are 0.86 (found by test_fuzz_problems; not fixed yet)",
)
def test_float32_lm_from_a_nearly_vanishing_column_does_not_stop_at_its_start():
    args = tuple(jnp.asarray(v, jnp.float32) for v in (X, Y, 1.0, np.inf, 0.0, 1.0))
    params0 = {"a": jnp.asarray(1e-15, jnp.float32), "rest": jnp.zeros(2, jnp.float32)}
    sol = nlls.least_squares(pathological, params0, args=args, method="lm")
    flat = np.asarray(_flat(sol.params), np.float64)
    jac, residual = _decay_jacobian(jnp.asarray(flat), jnp.asarray(X), jnp.asarray(Y))
    assert not Status(int(sol.status_code)).converged or np.max(_cosines(jac, residual)) <= 1e-2


def test_fuzz_suite_draws_over_a_thousand_cases():
    """The three generated tests above together draw at least 1,000 cases per run."""
    drawn = [
        test.hypothesis.inner_test and test._hypothesis_internal_use_settings.max_examples
        for test in (
            test_fuzz_least_squares_options,
            test_fuzz_problems,
            test_fuzz_curve_fit_agrees_with_scipy,
        )
    ]
    assert sum(drawn) >= 1000
