"""The methods end to end: answers, monotone descent, jit/vmap, float32, pytrees, user Jacobians."""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nlls
from nlls import loop
from nlls.problem import FlatProblem
from nlls.termination import Tolerances

METHODS = [
    "lm",
    "gn",
    "dogleg",
    nlls.LevenbergMarquardt(geodesic=True),
    nlls.LevenbergMarquardt(damping="trust_region"),
]


def rosenbrock(p):
    return jnp.array([1.0 - p[0], 10.0 * (p[1] - p[0] ** 2)])


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


def decay_data(seed=0, size=30, dtype=jnp.float64):
    t = jnp.linspace(0.0, 4.0, size, dtype=dtype)
    truth = jnp.array([2.5, 1.3, 0.4], dtype)
    noise = 0.01 * jax.random.normal(jax.random.PRNGKey(seed), (size,), dtype)
    return t, decay(truth, t, 0.0) + noise


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_rosenbrock(method):
    sol = nlls.least_squares(rosenbrock, jnp.array([-1.2, 1.0]), method=method)
    assert bool(sol.success), sol.message
    np.testing.assert_allclose(np.asarray(sol.params), [1.0, 1.0], atol=1e-7)


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_all_methods_agree_with_an_independent_fit(method):
    from scipy.optimize import least_squares as scipy_least_squares

    t, y = decay_data()
    start = jnp.array([1.0, 1.0, 0.0])
    sol = nlls.least_squares(decay, start, args=(t, y), method=method, ftol=1e-15, xtol=1e-15)
    reference = scipy_least_squares(
        lambda p: np.asarray(decay(jnp.asarray(p), t, y)),
        np.asarray(start),
        method="lm",
        jac=lambda p: np.asarray(jax.jacfwd(decay)(jnp.asarray(p), t, y)),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    # A cost within ftol·cost of the minimum leaves the parameters within ~sqrt(ftol) of it.
    np.testing.assert_allclose(float(sol.cost), reference.cost, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(sol.params), reference.x, rtol=1e-6)


# -- every accepted step decreases the cost, on random small problems --------------------------
# (except a step judged at the rounding level, where the cost cannot tell: it may not rise beyond
# rounding)


def random_residual(p, a, b, c, y):
    """r(θ) = A tanh(Bθ + c) + 0.1 θᵀθ − y: nonlinear, smooth, of any (m, n)."""
    return a @ jnp.tanh(b @ p + c) + 0.1 * (p @ p) - y


_SHAPES = [(3, 2), (7, 3), (4, 6)]


def _stepper(method, path):
    @eqx.filter_jit
    def step(problem, state):
        return method.step(problem, path, state)

    @eqx.filter_jit
    def init(problem, params):  # compiled: run op by op, the start took most of the test's time
        return method.init(problem, path, params)

    return init, step


_STEPPERS = {}


# Derandomized: CI draws the same 30 examples on every run. A randomly drawn case where Gauss–Newton's
# line search is exhausted (its reported failure) is pinned in the test below instead.
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    shape=st.sampled_from(_SHAPES),
    seed=st.integers(0, 2**31 - 1),
    method=st.sampled_from(["lm", "gn", "dogleg", "geodesic", "trust_region"]),
)
def test_every_accepted_step_decreases_the_cost(shape, seed, method):
    m, n = shape
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal(s) for s in ((m, 4), (4, n), (4,), (m,))]
    solver = {
        "lm": nlls.LevenbergMarquardt(),
        "gn": nlls.GaussNewton(),
        "dogleg": nlls.Dogleg(),
        "geodesic": nlls.LevenbergMarquardt(geodesic=True),
        "trust_region": nlls.LevenbergMarquardt(damping="trust_region"),
    }[method]
    path = "normal" if n <= m else "min_norm"
    problem = FlatProblem(
        random_residual, tuple(map(jnp.asarray, data)), lambda p: p, "fwd" if n <= m else "rev"
    )
    key = (shape, method)
    if key not in _STEPPERS:
        _STEPPERS[key] = _stepper(solver, path)
    init, step = _STEPPERS[key]
    state = init(problem, jnp.asarray(rng.standard_normal(n)))
    accepted_any = False
    for _ in range(15):
        before = float(state.point.cost)
        state, report = step(problem, state)
        after = float(state.point.cost)
        if bool(report.accepted) and not bool(report.rounding):
            accepted_any = True
            assert after < before
        elif bool(report.accepted):
            # Judged at the rounding level (nlls.solvers.base): the costs differ by rounding only,
            # and the step is accepted on its gradient unless the cost rose beyond √eps·cost.
            accepted_any = True
            assert float(report.predicted_reduction) < 256 * np.finfo(np.float64).eps * before
            assert after <= before * (1 + np.sqrt(np.finfo(np.float64).eps))
        else:
            assert after == before
        if bool(report.failed) or bool(report.at_precision):
            break
    assert accepted_any or before < 1e-20


def test_gauss_newton_reports_an_exhausted_line_search_and_keeps_the_point():
    """A wide random problem (m = 4, n = 6, seed 353659, found by the property test above) where the
    minimum-norm Gauss–Newton step is huge (‖δ‖ ≈ 5.6e5) and 30 halvings find no decrease: the
    trial is reported as failed, the cost and the point are unchanged, nothing non-finite leaks."""
    m, n = 4, 6
    rng = np.random.default_rng(353659)
    data = [rng.standard_normal(s) for s in ((m, 4), (4, n), (4,), (m,))]
    solver = nlls.GaussNewton()
    problem = FlatProblem(random_residual, tuple(map(jnp.asarray, data)), lambda p: p, "rev")
    state = solver.init(problem, "min_norm", jnp.asarray(rng.standard_normal(n)))
    before = state.point
    state, report = _stepper(solver, "min_norm")[1](problem, state)
    assert bool(report.failed) and not bool(report.accepted)
    assert float(report.step_norm) > 1e5
    assert float(state.point.cost) == float(before.cost)
    np.testing.assert_array_equal(np.asarray(state.point.params), np.asarray(before.params))


# -- jit and vmap ------------------------------------------------------------------------------


def test_jit_gives_the_same_answer_as_the_plain_call():
    t, y = decay_data(1)
    start = jnp.array([1.0, 1.0, 0.0])
    plain = nlls.least_squares(decay, start, args=(t, y))
    jitted = jax.jit(lambda y: nlls.least_squares(decay, start, args=(t, y)))(y)
    np.testing.assert_array_equal(np.asarray(jitted.params), np.asarray(plain.params))
    assert int(jitted.status) == int(plain.status)
    assert int(jitted.stats.nfev) == int(plain.stats.nfev)


def test_tolerances_first_seen_under_jit_serve_later_calls():
    """Values the plan caches on a first call made inside a caller's jit (the tolerances as
    device arrays) are concrete: another jitted solve that finds them in the cache runs again on
    JAX's fast path, and plain calls agree (a value made during the first trace once broke the
    second call of the second program)."""
    nlls.plan._device_tolerances.cache_clear()
    t, y = decay_data(1)
    start = jnp.array([1.0, 1.0, 0.0])
    options = {"ftol": 1.23e-9, "xtol": 1.23e-9, "gtol": 1.23e-9}
    results = []
    for shift in (0.0, 0.5):  # two residual functions, so two plans and two outer programs
        residual = jax.jit(lambda p, shift=shift: decay(p, t, y + shift))
        solve = jax.jit(
            lambda start, residual=residual: nlls.least_squares(residual, start, **options).params
        )
        first, again = solve(start), solve(start)
        plain = nlls.least_squares(residual, start, **options)
        np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
        np.testing.assert_array_equal(np.asarray(first), np.asarray(plain.params))
        results.append(first)
    assert not np.array_equal(np.asarray(results[0]), np.asarray(results[1]))


def test_vmap_over_a_thousand_data_sets_matches_the_plain_calls():
    t, _ = decay_data()
    truths = jnp.stack(
        [jnp.linspace(1.0, 3.0, 1000), jnp.linspace(0.5, 2.0, 1000), jnp.linspace(-1, 1, 1000)], 1
    )
    noise = 0.01 * jax.random.normal(jax.random.PRNGKey(3), (1000, t.size))
    ys = jax.vmap(lambda p: decay(p, t, 0.0))(truths) + noise
    start = jnp.array([1.0, 1.0, 0.0])
    batched = jax.vmap(lambda y: nlls.least_squares(decay, start, args=(t, y)))(ys)
    assert batched.params.shape == (1000, 3)
    assert bool(jnp.all(batched.success))
    for i in (0, 137, 999):
        single = nlls.least_squares(decay, start, args=(t, ys[i]))
        np.testing.assert_allclose(
            np.asarray(batched.params[i]), np.asarray(single.params), rtol=1e-10
        )
        assert int(batched.status[i]) == int(single.status)
    assert len(batched.message) == 1000


# -- dtypes, pytrees, Jacobian options -------------------------------------------------------


@pytest.mark.parametrize("method", ["lm", "gn", "dogleg"])
def test_float32_solve_matches_float64(method):
    t64, y64 = decay_data(2)
    start = jnp.array([1.0, 1.0, 0.0])
    sol64 = nlls.least_squares(decay, start, args=(t64, y64), method=method)
    t32, y32 = t64.astype(jnp.float32), y64.astype(jnp.float32)
    sol32 = nlls.least_squares(decay, start.astype(jnp.float32), args=(t32, y32), method=method)
    assert sol32.params.dtype == jnp.float32
    assert bool(sol32.success), sol32.message
    np.testing.assert_allclose(np.asarray(sol32.params), np.asarray(sol64.params), rtol=2e-4)


def test_pytree_parameters_and_residuals():
    t, y = decay_data(3)

    def residual(p, t, y):
        model = p["amplitude"] * jnp.exp(-p["rate"] * t) + p["offset"][0]
        return {"fit": model - y, "prior": jnp.array([1e-3 * p["rate"]])}

    start = {"amplitude": jnp.array(1.0), "rate": jnp.array(1.0), "offset": jnp.zeros(1)}
    sol = nlls.least_squares(residual, start, args=(t, y))
    assert set(sol.params) == {"amplitude", "rate", "offset"}
    assert sol.params["offset"].shape == (1,)
    assert sol.residual["fit"].shape == t.shape and sol.residual["prior"].shape == (1,)
    flat = nlls.least_squares(
        lambda p, t, y: jnp.concatenate([decay(p, t, y), jnp.array([1e-3 * p[1]])]),
        jnp.array([1.0, 1.0, 0.0]),
        args=(t, y),
    )
    np.testing.assert_allclose(float(sol.params["rate"]), float(flat.params[1]), rtol=1e-8)


def test_user_jacobian_gives_the_same_answer():
    t, y = decay_data(4)
    start = jnp.array([1.0, 1.0, 0.0])

    def jacobian(p, t, y):
        e = jnp.exp(-p[1] * t)
        return jnp.stack([e, -p[0] * t * e, jnp.ones_like(t)], axis=1)

    sol = nlls.least_squares(decay, start, args=(t, y), jac=jacobian)
    auto = nlls.least_squares(decay, start, args=(t, y))
    assert sol.stats.jac == "user"
    np.testing.assert_allclose(np.asarray(sol.params), np.asarray(auto.params), rtol=1e-10)


@pytest.mark.parametrize("jac", ["fwd", "rev"])
def test_forward_and_reverse_jacobians_agree(jac):
    t, y = decay_data(5)
    start = jnp.array([1.0, 1.0, 0.0])
    sol = nlls.least_squares(decay, start, args=(t, y), jac=jac)
    auto = nlls.least_squares(decay, start, args=(t, y))
    assert sol.stats.jac == jac
    np.testing.assert_allclose(np.asarray(sol.params), np.asarray(auto.params), rtol=1e-10)


def test_start_at_the_minimum_takes_no_step():
    sol = nlls.least_squares(rosenbrock, jnp.array([1.0, 1.0]))
    assert nlls.Status(int(sol.status)) is nlls.Status.GTOL
    assert int(sol.stats.steps) == 0


def test_max_steps_is_reported():
    sol = nlls.least_squares(rosenbrock, jnp.array([-1.2, 1.0]), max_steps=2)
    assert nlls.Status(int(sol.status)) is nlls.Status.MAX_STEPS
    assert int(sol.stats.steps) == 2
    assert not bool(sol.success)


def test_importing_nlls_does_not_enable_float64():
    code = "import jax, nlls; print(jax.config.jax_enable_x64)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loop_can_pause_and_resume_with_identical_iterates():
    """``run(pause_at=k)`` stops after k iterations and continuing gives the same iterates."""
    t, y = decay_data(6)
    problem = FlatProblem(decay, (t, y), lambda p: p, "fwd")
    solver = nlls.LevenbergMarquardt()
    tol = Tolerances(1e-12, 1e-12, 0.0)
    start = loop.init(solver, problem, "normal", jnp.array([1.0, 1.0, 0.0]), tol)
    run = eqx.filter_jit(loop.run)
    whole = run(solver, problem, "normal", tol, start, jnp.asarray(100))
    state = start
    for pause in range(1, 101):
        state = run(solver, problem, "normal", tol, state, jnp.asarray(100), jnp.asarray(pause))
        if int(state.status) != 0:
            break
    np.testing.assert_array_equal(np.asarray(state.point.params), np.asarray(whole.point.params))
    assert int(state.steps) == int(whole.steps)
