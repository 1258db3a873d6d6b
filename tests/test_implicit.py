"""Derivatives through solves (``nlls.implicit``): against central finite differences of re-solved
fits, against analytic derivatives of linear least squares, on every linear path, under jit and
vmap, in float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls

#: to working precision, so that re-solved fits differ by rounding only
TIGHT = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 0.0}

X = jnp.linspace(0.0, 2.0, 30)
Y = 2.0 * jnp.exp(-1.3 * X) + 0.3 * jnp.sin(9.0 * X)  # not an exact fit: r ≠ 0 at the minimum
START = jnp.array([1.0, 1.0])


def exponential(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) - y


def linear(p, a, y):
    return a @ p - y


def decay(x, a, k):
    return a * jnp.exp(-k * x)


def decay_model(p, xi):
    return p[0] * jnp.exp(-p[1] * xi)


def decay_model_named(p, xi):
    return p["a"] * jnp.exp(-p["rate"] * xi)


def weighted(p, x, y, w):
    return w * (p[0] * jnp.exp(-p[1] * x) - y)


def central_differences(fn, at, step):
    """``∂fn/∂at`` (columns along the flattened ``at``) by central differences of step ``step``."""
    at = np.asarray(at, np.float64)
    columns = []
    for i in range(at.size):
        bump = np.zeros(at.size)
        bump[i] = step
        up = np.asarray(fn(jnp.asarray((at.ravel() + bump).reshape(at.shape))))
        down = np.asarray(fn(jnp.asarray((at.ravel() - bump).reshape(at.shape))))
        columns.append((up - down) / (2 * step))
    return np.stack(columns, axis=-1)


def relative_error(value, reference):
    return np.max(np.abs(np.asarray(value) - reference)) / np.max(np.abs(reference))


@pytest.mark.parametrize("linear", ["normal", "krylov", "min_norm"])
def test_exponential_fit_derivative_in_the_data_matches_finite_differences(linear):
    """On each linear path (min_norm named for a tall J falls back to the dense Hessian), jacfwd
    and jacrev of the fitted parameters with respect to y agree with central differences of
    re-solved fits to 1e-6; the residual is not zero, so the second-order term of the Hessian
    matters (the Gauss–Newton JᵀJ alone is off by far more than that)."""

    def params(y):
        sol = nlls.least_squares(exponential, START, (X, y), linear=linear, **TIGHT)
        return sol.params

    reference = central_differences(params, Y, 1e-5)
    forward = jax.jacfwd(params)(Y)
    reverse = jax.jacrev(params)(Y)
    assert relative_error(forward, reference) <= 1e-6
    assert relative_error(reverse, reference) <= 1e-6
    sol = nlls.least_squares(exponential, START, (X, Y), linear=linear)
    assert sol.stats.linear == linear
    # The Gauss–Newton derivative −(JᵀJ)⁻¹Jᵀ(∂r/∂y) is measurably different here.
    jac = jax.jacfwd(exponential)(sol.params, X, Y)
    gauss_newton = np.linalg.solve(jac.T @ jac, jac.T)
    assert relative_error(gauss_newton, reference) > 100 * 1e-6


def test_grad_of_a_loss_under_jit_and_without_and_jvp():
    """jax.grad of a scalar of the parameters, with and without jit, equals the finite
    differences; jax.jvp gives J·v; jax.vjp gives uᵀJ."""

    def loss(y):
        p = nlls.least_squares(exponential, START, (X, y), **TIGHT).params
        return p[0] ** 2 + jnp.sin(p[1])

    reference = central_differences(loss, Y, 1e-5)
    assert relative_error(jax.grad(loss)(Y), reference) <= 1e-6
    assert relative_error(jax.jit(jax.grad(loss))(Y), reference) <= 1e-6

    def params(y):
        return nlls.least_squares(exponential, START, (X, y), **TIGHT).params

    jac = jax.jacfwd(params)(Y)
    direction = jnp.cos(3.0 * X)
    np.testing.assert_allclose(jax.jvp(params, (Y,), (direction,))[1], jac @ direction, rtol=1e-12)
    _, pullback = jax.vjp(params, Y)
    np.testing.assert_allclose(pullback(jnp.array([1.0, -2.0]))[0], jac.T @ jnp.array([1.0, -2.0]))


def test_cost_and_residual_derivatives():
    """The cost and the residual carry derivatives too: dC/dy = −r at a minimum (∂r/∂y = −I and
    Jᵀr = 0), and the residual's Jacobian matches finite differences."""

    def cost(y):
        return nlls.least_squares(exponential, START, (X, y), **TIGHT).cost

    def residual(y):
        return nlls.least_squares(exponential, START, (X, y), **TIGHT).residual

    sol = nlls.least_squares(exponential, START, (X, Y), **TIGHT)
    np.testing.assert_allclose(jax.grad(cost)(Y), -sol.residual, atol=1e-12)
    reference = central_differences(residual, Y, 1e-5)
    assert relative_error(jax.jacrev(residual)(Y), reference) <= 1e-6


def test_derivative_in_weights():
    weights = 1.0 + 0.5 * jnp.cos(X)

    def params(w):
        return nlls.least_squares(weighted, START, (X, Y, w), **TIGHT).params

    reference = central_differences(params, weights, 1e-5)
    assert relative_error(jax.jacrev(params)(weights), reference) <= 1e-6
    assert relative_error(jax.jacfwd(params)(weights), reference) <= 1e-6


def ridge(p, x, y, weight):
    """A polynomial fit with a ridge penalty √weight·p."""
    fit = jnp.polyval(p, x) - y
    return jnp.concatenate([fit, jnp.sqrt(weight) * p])


def test_derivative_in_a_hyperparameter():
    """A validation loss as a function of a ridge weight passed in args: grad equals the finite
    differences of re-solved fits."""
    x_val = jnp.linspace(0.05, 1.95, 17)
    y_val = 2.0 * jnp.exp(-1.3 * x_val)

    def validation(weight):
        p = nlls.least_squares(ridge, jnp.zeros(4), (X, Y, weight), **TIGHT).params
        return jnp.mean((jnp.polyval(p, x_val) - y_val) ** 2)

    weight = jnp.asarray(0.3)
    reference = central_differences(validation, weight, 1e-5)
    assert relative_error(jax.grad(validation)(weight), reference) <= 1e-6


def test_linear_least_squares_analytic_derivatives():
    """r = Aθ − y: dθ/dy = (AᵀA)⁻¹Aᵀ, and along a change Ȧ of the matrix
    θ̇ = (AᵀA)⁻¹(Ȧᵀ(y − Aθ) − AᵀȦθ)."""
    a = jax.random.normal(jax.random.key(0), (12, 3))
    y = jax.random.normal(jax.random.key(1), (12,))

    def solve(a, y):
        return nlls.least_squares(linear, jnp.zeros(3), (a, y), **TIGHT).params

    pseudo_inverse = np.linalg.solve(a.T @ a, a.T)
    np.testing.assert_allclose(jax.jacrev(solve, argnums=1)(a, y), pseudo_inverse, atol=1e-12)
    theta = pseudo_inverse @ y
    direction = jax.random.normal(jax.random.key(2), (12, 3))
    expected = np.linalg.solve(a.T @ a, direction.T @ (y - a @ theta) - a.T @ (direction @ theta))
    tangent = jax.jvp(lambda a: solve(a, y), (a,), (direction,))[1]
    np.testing.assert_allclose(tangent, expected, atol=1e-12)


def test_min_norm_path_gives_the_minimum_norm_derivative():
    """m < n: the solution θ₀ + A⁺(y − Aθ₀) of a linear problem has the derivative
    A⁺ = Aᵀ(AAᵀ)⁻¹ in y from any start, and the minimum-norm path reports exactly that; finite
    differences of re-solved fits agree."""
    a = jax.random.normal(jax.random.key(3), (3, 6))
    y = jnp.array([0.5, -1.0, 2.0])
    start = jnp.linspace(-1.0, 1.0, 6)

    def solve(y):
        return nlls.least_squares(linear, start, (a, y), **TIGHT).params

    assert nlls.least_squares(linear, start, (a, y)).stats.linear == "min_norm"
    minimum_norm = a.T @ np.linalg.inv(a @ a.T)
    np.testing.assert_allclose(jax.jacrev(solve)(y), minimum_norm, atol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(solve)(y), minimum_norm, atol=1e-12)
    assert relative_error(minimum_norm, central_differences(solve, y, 1e-5)) <= 1e-6


def test_vmap_of_grad_and_grad_of_vmap():
    ys = jnp.stack([Y, 1.1 * Y, Y + 0.1])

    def loss(y):
        p = nlls.least_squares(exponential, START, (X, y), **TIGHT).params
        return p[0] * p[1]

    one_by_one = np.stack([jax.grad(loss)(y) for y in ys])
    np.testing.assert_allclose(jax.vmap(jax.grad(loss))(ys), one_by_one, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        jax.grad(lambda ys: jnp.sum(jax.vmap(loss)(ys)))(ys), one_by_one, rtol=1e-10, atol=1e-13
    )


def test_float32_derivative():
    """In float32 the fit is accurate to about eps₃₂·cond, and so is its derivative: compared
    with the float64 derivative to 100·eps₃₂·κ, κ the condition number of the scaled J."""

    def params(y, dtype):
        sol = nlls.least_squares(exponential, START.astype(dtype), (X.astype(dtype), y))
        return sol.params

    reference = jax.jacrev(lambda y: params(y, jnp.float64))(Y)
    single = jax.jacrev(lambda y: params(y, jnp.float32))(Y.astype(jnp.float32))
    assert single.dtype == jnp.float32
    sol = nlls.least_squares(exponential, START, (X, Y))
    jac = jax.jacfwd(exponential)(sol.params, X, Y)
    singular = np.linalg.svd(jac / np.linalg.norm(jac, axis=0), compute_uv=False)
    tolerance = 100 * np.finfo(np.float32).eps * singular[0] / singular[-1]
    assert relative_error(single, reference) <= tolerance


def test_second_derivative():
    """jax.hessian of a loss through the solve (the tangent rule is itself differentiated, the
    inner solve again by the implicit function theorem) equals central differences of jax.grad."""

    def loss(scale):
        p = nlls.least_squares(exponential, START, (X, scale * Y), **TIGHT).params
        return p[0] ** 2 * p[1]

    scale = jnp.asarray(1.1)
    reference = central_differences(jax.grad(loss), scale, 1e-4)
    assert relative_error(jax.hessian(loss)(scale), reference) <= 1e-6


def test_derivative_with_respect_to_params0_is_zero():
    grad = jax.grad(lambda p: nlls.least_squares(exponential, p, (X, Y)).params.sum())(START)
    np.testing.assert_array_equal(grad, np.zeros(2))


def test_covariance_derivative():
    def covariance(y):
        return nlls.least_squares(exponential, START, (X, y), covariance=True, **TIGHT).covariance

    reference = central_differences(covariance, Y, 1e-5)
    assert relative_error(jax.jacfwd(covariance)(Y), reference) <= 1e-6


def test_not_converged_gives_the_linearised_derivative():
    """Stopped after two steps: the derivative is −H⁻¹(∂F/∂y) at the point reached, with H the
    Hessian of the cost there (computed here by jax.hessian), and success says it did not
    converge."""

    def solve(y):
        return nlls.least_squares(exponential, START, (X, y), max_steps=2)

    sol = solve(Y)
    assert not bool(sol.success)

    def cost(p, y):
        return 0.5 * jnp.sum(exponential(p, X, y) ** 2)

    hessian = jax.hessian(cost)(sol.params, Y)
    mixed = jax.jacfwd(jax.grad(cost), argnums=1)(sol.params, Y)
    expected = -np.linalg.solve(hessian, mixed)
    np.testing.assert_allclose(jax.jacrev(lambda y: solve(y).params)(Y), expected, rtol=1e-10)


def test_singular_hessian_gives_the_minimum_norm_derivative():
    """A parameter the residual ignores: H is singular; the derivative is finite, zero for that
    parameter and right for the others."""

    def residual(p, x, y):
        return p[0] * jnp.exp(-p[1] * x) - y + 0.0 * p[2]

    def solve(y):
        return nlls.least_squares(residual, jnp.array([1.0, 1.0, 0.5]), (X, y), **TIGHT).params

    jac = jax.jacrev(solve)(Y)
    assert np.all(np.isfinite(np.asarray(jac)))
    np.testing.assert_array_equal(jac[2], np.zeros(X.size))
    reference = jax.jacrev(
        lambda y: nlls.least_squares(exponential, START, (X, y), **TIGHT).params
    )(Y)
    np.testing.assert_allclose(jac[:2], reference, rtol=1e-8, atol=1e-12)


@jax.custom_jvp
def _curvature_free(p):
    return jnp.zeros_like(p)


@_curvature_free.defjvp
def _curvature_free_jvp(primals, tangents):
    (p,), (t,) = primals, tangents
    return _curvature_free(p), _nan_slope(p) * t


@jax.custom_jvp
def _nan_slope(p):
    return jnp.zeros_like(p)


@_nan_slope.defjvp
def _nan_slope_jvp(primals, tangents):
    (p,), (t,) = primals, tangents
    return _nan_slope(p), jnp.nan * t


def curvature_free_residual(p, y):
    return p - y + _curvature_free(p)


@pytest.mark.parametrize("linear", ["normal", "krylov"])
def test_nonfinite_hessian_is_an_error_not_nan(linear):
    """A residual with finite values and Jacobian but non-finite second derivatives at the
    solution: the derivative raises instead of returning NaN, dense or matrix-free."""
    y = jnp.array([1.0, 2.0])
    sol = nlls.least_squares(curvature_free_residual, jnp.zeros(2), (y,), linear=linear)
    assert bool(sol.success)
    with pytest.raises(Exception, match="Hessian of the cost is not finite"):
        jax.jacrev(
            lambda y: (
                nlls.least_squares(
                    curvature_free_residual, jnp.zeros(2), (y,), linear=linear
                ).params
            )
        )(y)


def test_first_order_baseline_derivative():
    """L-BFGS (no linear path: the matrix-free tangent solve) converged on the exponential fit
    has the derivative of least_squares's solution."""

    def lbfgs(y):
        return nlls.baselines.lbfgs(exponential, START, (X, y), gtol=1e-12, max_steps=500).params

    sol = nlls.baselines.lbfgs(exponential, START, (X, Y), gtol=1e-12, max_steps=500)
    assert bool(sol.success) and sol.stats.linear == "none"
    reference = jax.jacrev(
        lambda y: nlls.least_squares(exponential, START, (X, y), **TIGHT).params
    )(Y)
    assert relative_error(jax.jacrev(lbfgs)(Y), reference) <= 1e-6


def test_nonfinite_start_under_a_derivative():
    """NaN in the data: without jit the derivative raises the plain call's ValueError; under jit
    the solve reports NONFINITE_START and the derivative raises at run time instead of NaN."""
    bad = Y.at[3].set(jnp.nan)

    def total(y):
        return nlls.least_squares(exponential, START, (X, y)).params.sum()

    with pytest.raises(ValueError, match="not finite at params0"):
        jax.grad(total)(bad)
    with pytest.raises(Exception, match="Hessian of the cost is not finite"):
        jax.block_until_ready(jax.jit(jax.grad(total))(bad))


def test_callbacks_cannot_be_differentiated():
    with pytest.raises(ValueError, match="nor under a derivative"):
        jax.grad(
            lambda y: (
                nlls.least_squares(exponential, START, (X, y), callbacks=[nlls.History()]).cost
            )
        )(Y)


def test_fit_and_curve_fit_derivatives():
    """fit (wrt y and a frozen leaf of the model) and curve_fit (wrt ydata and sigma) against
    least_squares's derivative and finite differences."""

    def least_squares(y):
        return nlls.least_squares(exponential, START, (X, y), **TIGHT).params

    reference = jax.jacrev(least_squares)(Y)

    def fitted(y):
        return nlls.fit((decay_model, START), X, y, history=False, **TIGHT).model[1]

    np.testing.assert_allclose(jax.jacrev(fitted)(Y), reference, rtol=1e-9, atol=1e-12)

    np.testing.assert_allclose(
        jax.jacrev(lambda y: nlls.curve_fit(decay, X, y, p0=[1.0, 1.0])[0])(Y),
        reference,
        rtol=1e-9,
        atol=1e-12,
    )
    sigma = 0.1 + 0.05 * X

    def with_sigma(s):
        return nlls.curve_fit(decay, X, Y, p0=[1.0, 1.0], sigma=s)[0]

    assert (
        relative_error(jax.jacrev(with_sigma)(sigma), central_differences(with_sigma, sigma, 1e-6))
        <= 1e-6
    )

    def frozen_rate(rate):
        """A model whose decay rate is frozen (not trainable): fit the amplitude only."""
        model = (decay_model_named, {"a": 1.0, "rate": rate})
        trainable = {"a": True, "rate": False}
        return nlls.fit(model, X, Y, trainable=trainable, history=False, **TIGHT).model[1]["a"]

    rate = jnp.asarray(1.2)
    reference = central_differences(frozen_rate, rate, 1e-6)
    assert relative_error(jax.grad(frozen_rate)(rate), reference) <= 1e-6


def test_fit_with_history_under_a_derivative_says_what_to_do():
    with pytest.raises(ValueError, match="history=False"):
        jax.grad(lambda y: nlls.fit((decay_model, START), X, y).solution.cost)(Y)


def _outlier_decay():
    rng = np.random.default_rng(0)
    x = jnp.linspace(0.0, 3.0, 60)
    y = 2.5 * jnp.exp(-1.3 * x) + 0.3 + 0.01 * jnp.asarray(rng.standard_normal(60))
    return x, y.at[::10].add(2.0), jnp.asarray(rng.standard_normal(60))


def _robust_rho(name):
    return {
        "linear": lambda z: z,
        "cauchy": jnp.log1p,
        "huber": lambda z: jnp.where(z <= 1.0, z, 2.0 * jnp.sqrt(z) - 1.0),
    }[name]


@pytest.mark.parametrize(
    "options",
    [
        dict(bounds=([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2])),
        dict(loss="cauchy", f_scale=0.1),
        dict(bounds=([-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.2]), loss="huber", f_scale=0.1),
    ],
)
def test_derivative_with_bounds_and_robust_losses(options):
    """An active bound holds its parameter (θ̇ = 0); a robust loss's optimality condition is the
    gradient of the robust cost. Against the implicit function theorem written out with
    ``jax.hessian`` of the cost ½C²Σρ((r/C)²) on the free parameters, and central differences of
    re-solved fits (to what the solves' accuracy allows at h = 1e-4)."""
    x, y, direction = _outlier_decay()

    def residual(p, x, y):
        return p[0] * jnp.exp(-p[1] * x) + p[2] - y

    def solution(y):
        return nlls.least_squares(
            residual, jnp.array([1.0, 0.5, 0.0]), (x, y), ftol=1e-14, xtol=1e-14, gtol=1e-14,
            **options,
        )  # fmt: skip

    _, tangent = jax.jvp(lambda y: solution(y).params, (y,), (direction,))
    sol = solution(y)
    scale, rho = options.get("f_scale", 1.0), _robust_rho(options.get("loss", "linear"))

    def cost(p, y):
        return 0.5 * scale**2 * jnp.sum(rho((residual(p, x, y) / scale) ** 2))

    free = np.ones(3, bool)
    if "bounds" in options:
        free = np.asarray(sol.active_bounds) == 0
        assert not free.all() and np.all(np.asarray(tangent)[~free] == 0)
    hessian = jax.hessian(cost)(sol.params, y)[np.ix_(free, free)]
    mixed = jax.jacfwd(jax.grad(cost), argnums=1)(sol.params, y)[free] @ direction
    np.testing.assert_allclose(
        np.asarray(tangent)[free], -np.linalg.solve(hessian, mixed), rtol=1e-7
    )
    step = 1e-4
    difference = solution(y + step * direction).params - solution(y - step * direction).params
    np.testing.assert_allclose(tangent, difference / (2 * step), rtol=1e-4, atol=1e-12)
