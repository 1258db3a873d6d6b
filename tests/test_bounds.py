"""Bounds (``nlls.bounds``; ``least_squares(bounds=...)``): against scipy's ``least_squares(method=
"trf")`` (the Coleman–Li reflective method) on problems whose optimum lies on a bound, on bounded
MINPACK problems, and on each linear path; iterates feasible, the active bounds reported, the
errors for bad bounds."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlls
from nlls import bounds as box
from problems import minpack

TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def rosenbrock(p):
    return jnp.stack([10.0 * (p[1] - p[0] ** 2), 1.0 - p[0]])


def decay(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def _decay_data():
    x = np.linspace(0.0, 3.0, 40)
    return x, 2.5 * np.exp(-1.3 * x) + 0.3 + 0.01 * np.sin(7.0 * x)


def _scipy(residual, x0, bounds, args=()):
    jac = jax.jacfwd(residual)
    return scipy.optimize.least_squares(
        lambda p: np.asarray(residual(jnp.asarray(p), *args)),
        np.asarray(x0, float),
        jac=lambda p: np.asarray(jac(jnp.asarray(p), *args)),
        bounds=bounds,
        method="trf",
        **TIGHT,
    )


def _assert_feasible(params, lower, upper):
    params = np.asarray(params)
    assert np.all(params >= lower) and np.all(params <= upper)


def _assert_as_good(sol, reference):
    """nlls's cost at most scipy's (to 1e-8 relative, or rounding of a zero cost), the same
    solution."""
    assert float(sol.cost) <= reference.cost * (1 + 1e-8) + 1e-25
    np.testing.assert_allclose(np.asarray(sol.params), reference.x, rtol=1e-6, atol=1e-9)


# scipy's own bounded Rosenbrock cases: the optimum (1, 1) cut off by each box
ROSENBROCK_BOXES = [
    (([-np.inf, -1.5], np.inf), [-1.0, 1.0]),
    (([-np.inf, 1.5], np.inf), [2.0, 2.0]),
    (([-50.0, -0.3], [0.5, 100.0]), [-1.0, 1.0]),
    (([0.0, -np.inf], [0.8, np.inf]), [0.5, 0.5]),
]


@pytest.mark.parametrize("linear", ["normal", "min_norm", "krylov"])
@pytest.mark.parametrize("case", range(len(ROSENBROCK_BOXES)))
def test_rosenbrock_in_a_box_matches_scipy_trf(case, linear):
    bounds, x0 = ROSENBROCK_BOXES[case]
    reference = _scipy(rosenbrock, x0, bounds)
    sol = nlls.least_squares(rosenbrock, jnp.asarray(x0), bounds=bounds, linear=linear, **TIGHT)
    assert sol.stats.linear == linear
    assert bool(sol.success), sol.message
    lower, upper = (np.broadcast_to(np.asarray(b, float), (2,)) for b in bounds)
    _assert_feasible(sol.params, lower, upper)
    _assert_as_good(sol, reference)
    np.testing.assert_array_equal(np.asarray(sol.active_bounds), reference.active_mask)


def test_optimum_on_a_bound_of_a_curve_fit():
    x, y = _decay_data()
    lower, upper = np.array([-np.inf, 0.0, -np.inf]), np.array([np.inf, 1.0, 0.2])
    x0 = np.array([1.0, 0.5, 0.0])
    reference = _scipy(decay, x0, (lower, upper), (x, y))
    sol = nlls.least_squares(decay, jnp.asarray(x0), (x, y), bounds=(lower, upper), **TIGHT)
    _assert_feasible(sol.params, lower, upper)
    _assert_as_good(sol, reference)
    assert np.asarray(sol.active_bounds).tolist() == [0, 1, 0]
    # gtol tests the projected gradient: the bound holds the rate, whose gradient is not zero
    assert abs(float(sol.grad[1])) > 1e-3


# MINPACK problems whose first parameter is bounded halfway between the start and the unbounded
# minimum, so that the bounded minimum lies on that bound.
BOUNDED_MINPACK = [
    "HelicalValley(n=3,m=3)x1",
    "PowellSingular(n=4,m=4)x1",
    "FreudensteinRoth(n=2,m=2)x1",
    "KowalikOsborne(n=4,m=11)x1",
    "Box3D(n=3,m=10)x1",
    "BrownDennis(n=4,m=20)x1",
    "BrownAlmostLinear(n=10,m=10)x1",
    "Osborne2(n=11,m=65)x1",
]


@pytest.mark.parametrize("name", BOUNDED_MINPACK)
def test_bounded_minpack_problems_match_scipy_trf(name):
    run = next(r for r in minpack.minpack_runs() if r.id == name)
    x0 = np.asarray(run.x0, float)
    unbounded = _scipy(run.residual, x0, (-np.inf, np.inf))
    lower, upper = np.full(run.n, -np.inf), np.full(run.n, np.inf)
    halfway = 0.5 * (x0[0] + unbounded.x[0])
    if unbounded.x[0] > x0[0]:
        upper[0] = halfway
    else:
        lower[0] = halfway
    reference = _scipy(run.residual, x0, (lower, upper))
    sol = nlls.least_squares(run.residual, jnp.asarray(x0), bounds=(lower, upper), **TIGHT)
    _assert_feasible(sol.params, lower, upper)
    assert float(sol.cost) <= reference.cost * (1 + 1e-8)
    # costs equal to 1e-8 relative fix the parameters to about its square root along the
    # flattest direction (BrownDennis's valley)
    np.testing.assert_allclose(np.asarray(sol.params), reference.x, rtol=1e-4, atol=1e-8)
    assert np.asarray(sol.active_bounds)[0] == (1 if np.isfinite(upper[0]) else -1)


def test_linear_paths_agree_on_a_bounded_fit():
    x, y = _decay_data()
    bounds = ([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2])
    x0 = jnp.array([1.0, 0.5, 0.0])
    solutions = [
        nlls.least_squares(decay, x0, (x, y), bounds=bounds, linear=linear, **TIGHT)
        for linear in ("normal", "min_norm", "krylov")
    ]
    for sol in solutions[1:]:
        np.testing.assert_allclose(sol.params, solutions[0].params, rtol=1e-9)


@pytest.mark.parametrize("start", [[0.0, 0.0], [0.5, 3.0]])
def test_a_start_on_the_bound_is_moved_inside_and_leaves_it(start):
    # the minimum (1, 1) is inside; the start sits on a bound of both parameters
    bounds = ([0.0, 0.0], [3.0, 3.0]) if start[0] == 0 else ([0.5, -1.0], [3.0, 3.0])
    reference = _scipy(rosenbrock, start, bounds)
    sol = nlls.least_squares(rosenbrock, jnp.array(start), bounds=bounds, **TIGHT)
    _assert_as_good(sol, reference)
    np.testing.assert_allclose(sol.params, [1.0, 1.0], rtol=1e-9)
    assert np.asarray(sol.active_bounds).tolist() == [0, 0]


def test_a_start_on_the_bound_that_is_the_solution():
    bounds = ([-np.inf, 1.5], np.inf)
    reference = _scipy(rosenbrock, [1.5, 1.5], bounds)
    sol = nlls.least_squares(rosenbrock, jnp.array([1.5, 1.5]), bounds=bounds, **TIGHT)
    _assert_as_good(sol, reference)
    assert float(sol.params[1]) >= 1.5


def test_infinite_bounds_solve_as_no_bounds():
    x, y = _decay_data()
    x0 = jnp.array([1.0, 0.5, 0.0])
    free = nlls.least_squares(decay, x0, (x, y), **TIGHT)
    boxed = nlls.least_squares(decay, x0, (x, y), bounds=(-np.inf, np.inf), **TIGHT)
    np.testing.assert_allclose(boxed.params, free.params, rtol=1e-10)
    assert np.asarray(boxed.active_bounds).tolist() == [0, 0, 0]


def test_pytree_parameters_with_scalar_and_pytree_bounds():
    x, y = _decay_data()

    def residual(p, x, y):
        return p["amplitude"] * jnp.exp(-p["rate"][0] * x) + p["rate"][1] - y

    params0 = {"amplitude": jnp.asarray(1.0), "rate": jnp.array([0.5, 0.0])}
    lower = {"amplitude": -np.inf, "rate": np.array([0.0, -np.inf])}
    upper = {"amplitude": np.inf, "rate": np.array([1.0, 0.2])}
    sol = nlls.least_squares(residual, params0, (x, y), bounds=(lower, upper), **TIGHT)
    flat = _scipy(decay, [1.0, 0.5, 0.0], ([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2]), (x, y))
    np.testing.assert_allclose(sol.params["rate"], flat.x[1:], rtol=1e-7)
    assert sol.active_bounds["rate"].tolist() == [1, 0]
    assert sol.active_bounds["amplitude"].tolist() == 0
    # a scalar side broadcasts to every parameter
    sol = nlls.least_squares(residual, params0, (x, y), bounds=(-10.0, upper), **TIGHT)
    np.testing.assert_allclose(sol.params["rate"], flat.x[1:], rtol=1e-7)


def test_float32_stays_feasible_and_converges():
    x, y = (a.astype(np.float32) for a in _decay_data())
    lower, upper = np.array([-np.inf, 0.0, -np.inf]), np.array([np.inf, 1.0, 0.2])
    sol = nlls.least_squares(
        decay, jnp.array([1.0, 0.5, 0.0], jnp.float32), (x, y), bounds=(lower, upper)
    )
    assert sol.params.dtype == jnp.float32
    assert bool(sol.success), sol.message
    _assert_feasible(sol.params, lower.astype(np.float32), upper.astype(np.float32))
    reference = _scipy(decay, [1.0, 0.5, 0.0], (lower, upper), _decay_data())
    np.testing.assert_allclose(sol.params, reference.x, rtol=2e-3)


def test_vmap_over_data_sets_with_bounds():
    x, y = _decay_data()
    ys = np.stack([y, 1.1 * y, 0.9 * y])
    bounds = ([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2])

    @jax.jit
    @jax.vmap
    def solve(y):
        sol = nlls.least_squares(decay, jnp.array([1.0, 0.5, 0.0]), (x, y), bounds=bounds, **TIGHT)
        return sol.params

    batched = solve(jnp.asarray(ys))
    for k, yk in enumerate(ys):
        alone = nlls.least_squares(
            decay, jnp.array([1.0, 0.5, 0.0]), (x, yk), bounds=bounds, **TIGHT
        )
        np.testing.assert_allclose(batched[k], alone.params, rtol=1e-9)


def test_curve_fit_with_bounds_matches_scipy():
    x, y = _decay_data()

    def model(x, a, k, c):
        return a * jnp.exp(-k * x) + c

    bounds = ([0.0, 0.0, -1.0], [10.0, 1.0, 0.2])
    popt, pcov = nlls.curve_fit(model, x, y, p0=[1.0, 0.5, 0.0], bounds=bounds)
    ref, _ = scipy.optimize.curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c, x, y, p0=[1.0, 0.5, 0.0], bounds=bounds
    )
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    # no p0: scipy's feasible start, the middle of the box
    popt, _ = nlls.curve_fit(model, x, y, bounds=bounds)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)


def test_fit_takes_scalar_and_model_shaped_bounds():
    x = jnp.linspace(0.0, 3.0, 40)[:, None]
    y = 2.5 * jnp.exp(-1.3 * x) + 0.3

    def fn(params, xi):
        return params["a"] * jnp.exp(-params["k"] * xi) + params["c"]

    params = {"a": jnp.asarray(1.0), "k": jnp.asarray(0.5), "c": jnp.asarray(0.0)}
    upper = {"a": np.inf, "k": 1.0, "c": np.inf}
    result = nlls.fit((fn, params), x, y, bounds=(-np.inf, upper), history=False, **TIGHT)
    assert float(result.model[1]["k"]) <= 1.0
    np.testing.assert_allclose(float(result.model[1]["k"]), 1.0, atol=1e-9)
    model = eqx.nn.Linear(1, 1, key=jax.random.key(0))
    free = nlls.fit(model, x, y, history=False)
    assert float(free.model.weight[0, 0]) < -0.5  # the slope of the best line
    # a bound on the weight only, in a pytree shaped like the model
    lower = eqx.tree_at(
        lambda m: (m.weight, m.bias),
        model,
        (jnp.full_like(model.weight, -0.5), jnp.full_like(model.bias, -jnp.inf)),
    )
    result = nlls.fit(model, x, y, bounds=(lower, jnp.inf), history=False)
    np.testing.assert_allclose(float(result.model.weight[0, 0]), -0.5, atol=1e-9)


@pytest.mark.parametrize(
    "bounds, message",
    [
        (([0.0, 2.0], [1.0, 3.0]), "outside the bounds"),
        (([-1.0, 0.0], [1.0, 0.0]), "lower == upper"),
        (([1.0, 0.0], [0.0, 2.0]), "lower > upper"),
        (([np.nan, 0.0], [1.0, 2.0]), "NaN"),
        ((0.0,), "pair"),
        (([0.0, 0.0, 0.0], 1.0), "does not broadcast"),
    ],
)
def test_bad_bounds_raise(bounds, message):
    with pytest.raises(ValueError, match=message):
        nlls.least_squares(rosenbrock, jnp.array([0.5, 0.5]), bounds=bounds)


def test_methods_without_bounds_say_so():
    for method in ("gn", "dogleg", "trust_region"):
        with pytest.raises(ValueError, match="does not take bounds; use method='lm'"):
            nlls.least_squares(rosenbrock, jnp.array([0.5, 0.5]), method=method, bounds=(0, 1))
    with pytest.raises(ValueError, match="geodesic"):
        nlls.least_squares(
            rosenbrock,
            jnp.array([0.5, 0.5]),
            method=nlls.LevenbergMarquardt(geodesic=True),
            bounds=(0, 1),
        )
    with pytest.raises(ValueError, match="does not take bounds"):
        nlls.fit(
            (lambda p, x: p * x, jnp.asarray(1.0)),
            jnp.ones(4),
            jnp.ones(4),
            method="adam",
            bounds=(0, 1),
        )


def test_reflective_candidates_beat_the_cut_step():
    """The step chosen is the best of the candidates by the model, and feasible."""
    jac = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    residual = jnp.array([-2.0, 0.5, 1.0])
    grad = jac.T @ residual
    params, lower, upper = jnp.array([0.5, 0.5]), jnp.zeros(2), jnp.ones(2)
    column, curvature = box.effective_scale(params, grad, lower, upper, jnp.ones(2))
    model = box.Model(jac, column, curvature, grad)
    full = jnp.linalg.lstsq(jac, -residual)[0]  # leaves the box
    assert not bool(jnp.all((params + full >= lower) & (params + full <= upper)))
    step, predicted = box.reflective_step(model, params, full, lower, upper, 0.995, 10.0)
    _assert_feasible(params + step, np.zeros(2), np.ones(2))
    scaled = column * step
    value = model.value(scaled, model.image(scaled))
    np.testing.assert_allclose(-value, predicted, rtol=1e-12)
    t, _ = box.step_to_bound(params, full, lower, upper)
    cut = 0.995 * t * column * full
    assert float(value) <= float(model.value(cut, model.image(cut))) + 1e-15


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_bounds_with_a_robust_loss_match_scipy_trf(loss):
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 3.0, 60)
    y = 2.5 * np.exp(-1.3 * x) + 0.3 + 0.01 * rng.standard_normal(60)
    y[::10] += 2.0  # outliers
    bounds = ([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2])
    reference = scipy.optimize.least_squares(
        lambda p: np.asarray(decay(p, x, y)),
        [1.0, 0.5, 0.0],
        bounds=bounds,
        loss=loss,
        f_scale=0.1,
        **TIGHT,
    )
    sol = nlls.least_squares(
        decay, jnp.array([1.0, 0.5, 0.0]), (x, y), bounds=bounds, loss=loss, f_scale=0.1, **TIGHT
    )
    _assert_feasible(sol.params, *bounds)
    assert float(sol.cost) <= reference.cost * (1 + 1e-8)
    np.testing.assert_allclose(sol.params, reference.x, rtol=1e-6)
    assert np.asarray(sol.active_bounds).tolist() == [0, 1, 0]
