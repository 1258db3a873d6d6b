"""Robust losses (``nlls.losses``): against ``scipy.optimize.least_squares(method="trf")`` on data with
gross outliers, for each loss, each method and each linear path; the loss functions against automatic
differentiation; the linear loss as the default; float32; monotone LM; the front ends; bad options."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit as scipy_curve_fit
from scipy.optimize import least_squares as scipy_least_squares

import nlls
from nlls.losses import LOSS_NAMES, LOSSES

ROBUST = ("soft_l1", "huber", "cauchy", "arctan")
F_SCALE = 0.1
START = np.array([1.0, 1.0, 0.0])
TIGHT = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 0.0}


def _data():
    """A decay ``3 e^{−1.3x} + 0.5`` with noise 0.02 and 6 of 60 points (10%) moved by 1 to 3."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 2.0, 60)
    y = 3.0 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(60)
    outliers = rng.choice(60, 6, replace=False)
    y[outliers] += rng.choice([-1.0, 1.0], 6) * rng.uniform(1.0, 3.0, 6)
    return x, y


X, Y = _data()
ARGS = (jnp.asarray(X), jnp.asarray(Y))


def residual(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def geman_mcclure(z):
    """A callable loss, ``ρ = z/(1 + z)`` (bounded), in the ``(3, m)`` layout."""
    t = 1.0 + z
    return jnp.stack([z / t, 1.0 / t**2, -2.0 / t**3])


def geman_mcclure_numpy(z):
    t = 1.0 + z
    return np.stack([z / t, 1.0 / t**2, -2.0 / t**3])


LOSS_CASES = (*ROBUST, geman_mcclure)


def _scipy_loss(loss):
    return geman_mcclure_numpy if loss is geman_mcclure else loss


@functools.cache
def reference(loss):
    """scipy's trf solution, to its tightest tolerances."""
    result = scipy_least_squares(
        lambda p: np.asarray(residual(p, X, Y)),
        START,
        method="trf",
        loss=_scipy_loss(loss),
        f_scale=F_SCALE,
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    assert result.success
    return result


def robust_cost(params, loss, f_scale=F_SCALE):
    """``½ Σ C² ρ((r/C)²)`` in NumPy, independently of the library."""
    r = np.asarray(residual(np.asarray(params), X, Y))
    z = (r / f_scale) ** 2
    rho = geman_mcclure_numpy(z) if loss is geman_mcclure else np.asarray(LOSSES[loss](z))
    return 0.5 * f_scale**2 * np.sum(rho[0])


def assert_matches_scipy(sol, loss):
    ref = reference(loss)
    cost = float(sol.cost)
    np.testing.assert_allclose(cost, robust_cost(sol.params, loss), rtol=1e-12)
    assert cost <= ref.cost * (1 + 1e-8), (cost, ref.cost)
    # Both stop where the cost is flat to rounding: within ~√eps of the minimum (measured: 1e-9).
    np.testing.assert_allclose(np.asarray(sol.params), ref.x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", LOSS_CASES, ids=lambda loss: getattr(loss, "__name__", loss))
def test_each_loss_matches_scipy(loss):
    sol = nlls.least_squares(
        residual, jnp.asarray(START), ARGS, loss=loss, f_scale=F_SCALE, **TIGHT
    )
    assert bool(sol.success), sol.message
    assert_matches_scipy(sol, loss)
    assert sol.stats.loss.startswith(getattr(loss, "__name__", loss))
    # The residual and plain cost are those of r itself; the gradient is the robust cost's.
    r = np.asarray(residual(np.asarray(sol.params), X, Y))
    np.testing.assert_allclose(np.asarray(sol.residual), r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(float(sol.plain_cost), 0.5 * r @ r, rtol=1e-12)
    assert float(sol.plain_cost) > float(sol.cost)  # the outliers weigh less
    gradient = jax.grad(lambda p: _robust_cost_jax(p, loss))(sol.params)
    np.testing.assert_allclose(np.asarray(sol.grad), np.asarray(gradient), atol=1e-10)


def _robust_cost_jax(p, loss):
    r = residual(p, *ARGS)
    rho = (loss if callable(loss) else LOSSES[loss])((r / F_SCALE) ** 2)
    return 0.5 * F_SCALE**2 * jnp.sum(rho[0])


# Every method on every linear path, each combination with a loss (all four named ones and the
# callable appear). Gauss–Newton has no damping: where most residuals are outliers the corrected
# model of a loss with ρ' + 2zρ'' ≤ 0 beyond C has almost no curvature, so it starts from the
# plain least-squares fit.
COMBINATIONS = [
    ("lm", "normal", "cauchy"),
    ("lm", "min_norm", "huber"),
    ("lm", "krylov", "arctan"),
    ("gn", "normal", "huber"),
    ("gn", "min_norm", "soft_l1"),
    ("gn", "krylov", "cauchy"),
    ("dogleg", "normal", "arctan"),
    ("dogleg", "min_norm", geman_mcclure),
    ("dogleg", "krylov", "huber"),
    ("trust_region", "normal", "soft_l1"),
    ("trust_region", "min_norm", "cauchy"),
    ("trust_region", "krylov", geman_mcclure),
]


@pytest.mark.parametrize(
    ("method", "linear", "loss"),
    COMBINATIONS,
    ids=[f"{m}-{p}-{getattr(loss, '__name__', loss)}" for m, p, loss in COMBINATIONS],
)
def test_every_method_and_path(method, linear, loss):
    start = jnp.asarray(START)
    if method == "gn":
        start = nlls.least_squares(residual, start, ARGS).params
    sol = nlls.least_squares(
        residual, start, ARGS, method=method, linear=linear, loss=loss, f_scale=F_SCALE, **TIGHT
    )
    assert sol.stats.linear == linear
    assert bool(sol.success), sol.message
    assert_matches_scipy(sol, loss)


def test_geodesic_lm_with_a_loss():
    sol = nlls.least_squares(
        residual,
        jnp.asarray(START),
        ARGS,
        method=nlls.LevenbergMarquardt(geodesic=True),
        loss="soft_l1",
        f_scale=F_SCALE,
        **TIGHT,
    )
    assert bool(sol.success), sol.message
    assert_matches_scipy(sol, "soft_l1")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_rho_and_its_derivatives_match_autodiff(name):
    rho = LOSSES[name]
    # Both sides of Huber's switch at z = 1, and large z.
    z = jnp.array([0.0, 1e-3, 0.3, 0.99, 1.01, 2.5, 40.0, 1e4])
    values = rho(z)
    assert values.shape == (3, z.size)
    np.testing.assert_allclose(float(values[0, 0]), 0.0, atol=0)
    np.testing.assert_allclose(float(values[1, 0]), 1.0, rtol=1e-15)
    first = jax.vmap(jax.grad(lambda t: rho(t[None])[0, 0]))(z)
    second = jax.vmap(jax.grad(jax.grad(lambda t: rho(t[None])[0, 0])))(z)
    np.testing.assert_allclose(np.asarray(values[1]), np.asarray(first), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(values[2]), np.asarray(second), rtol=1e-12, atol=1e-15)


def test_linear_loss_is_the_default():
    default = nlls.least_squares(residual, jnp.asarray(START), ARGS)
    for f_scale in (1.0, 3.0):  # the linear loss's cost does not depend on the scale
        linear = nlls.least_squares(
            residual, jnp.asarray(START), ARGS, loss="linear", f_scale=f_scale
        )
        assert np.array_equal(np.asarray(linear.params), np.asarray(default.params))
        assert float(linear.cost) == float(default.cost)
        assert int(linear.stats.nfev) == int(default.stats.nfev)
    assert default.stats.loss == "linear"
    assert float(default.plain_cost) == float(default.cost)


def test_float32_converges():
    args = tuple(jnp.asarray(a, jnp.float32) for a in (X, Y))
    for loss in ROBUST:
        sol = nlls.least_squares(
            residual, jnp.asarray(START, jnp.float32), args, loss=loss, f_scale=F_SCALE
        )
        assert sol.params.dtype == jnp.float32 and sol.cost.dtype == jnp.float32
        assert bool(sol.success), sol.message
        ref = reference(loss)
        # float32 resolves the minimum of a cost flat to rounding within about √eps32 ≈ 3e-4
        # (relative; measured 4e-6 to 6e-5), and its cost to a few hundred eps32 (measured 5e-7).
        np.testing.assert_allclose(np.asarray(sol.params), ref.x, rtol=1e-3)
        assert robust_cost(sol.params, loss) <= ref.cost * (1 + 1e-5)


def test_lm_robust_cost_decreases_monotonically():
    history = nlls.History()
    sol = nlls.least_squares(
        residual,
        jnp.asarray(START),
        ARGS,
        loss="cauchy",
        f_scale=F_SCALE,
        callbacks=[history],
        **TIGHT,
    )
    cost = history.as_dict()["cost"]
    assert len(cost) > 5
    # Non-increasing up to the cost's rounding: a step predicted to gain less than that is judged
    # on the gradient and may leave the cost a rounding error higher (nlls.solvers.base).
    rounding = 256 * np.finfo(np.float64).eps * cost[:-1]
    assert np.all(np.diff(cost) <= rounding), cost
    assert np.sum(np.diff(cost) < -rounding) >= 5  # and it did decrease, step after step
    assert cost[-1] == pytest.approx(float(sol.cost), rel=1e-15)
    assert cost[0] == pytest.approx(robust_cost(START, "cauchy"), rel=1e-12)


def test_covariance_on_the_matrix_free_path():
    """The covariance from J̃ formed after matrix-free steps is the dense path's."""
    dense, free = (
        nlls.least_squares(
            residual,
            jnp.asarray(START),
            ARGS,
            loss="huber",
            f_scale=F_SCALE,
            linear=linear,
            covariance=True,
            **TIGHT,
        )
        for linear in ("normal", "krylov")
    )
    assert free.stats.linear == "krylov"
    np.testing.assert_allclose(np.asarray(free.covariance), np.asarray(dense.covariance), rtol=1e-6)


def test_curve_fit_passes_the_loss_as_scipy_does():
    def f(x, a, k, c):
        return a * jnp.exp(-k * x) + c

    sigma = np.full(X.size, 0.02)
    popt, pcov, sol = nlls.curve_fit(
        f, X, Y, p0=START, sigma=sigma, loss="huber", f_scale=2.0, full_output=True
    )
    ref_popt, ref_pcov = scipy_curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c,
        X,
        Y,
        p0=START,
        sigma=sigma,
        method="trf",
        loss="huber",
        f_scale=2.0,
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(np.asarray(popt), ref_popt, rtol=1e-6)
    # scipy's pcov: the SVD of the corrected Jacobian and the robust cost (measured: 3e-8).
    np.testing.assert_allclose(np.asarray(pcov), ref_pcov, rtol=1e-6)
    chi_square = float(np.sum(((np.asarray(f(X, *popt)) - Y) / sigma) ** 2))
    report = nlls.fit_report(sol)
    assert "# loss             = huber (f_scale=2)" in report
    assert f"robust cost        = {float(sol.cost):.8g}" in report
    assert f"chi-square         = {chi_square:.8g}" in report
    assert float(sol.cost) < chi_square / 2


def test_fit_passes_the_loss():
    def model(p, x):
        return p["a"] * jnp.exp(-p["k"] * x) + p["c"]

    params = {"a": 1.0, "k": 1.0, "c": 0.0}
    result = nlls.fit((model, params), X, Y, loss="arctan", f_scale=F_SCALE, **TIGHT)
    assert result.solution.stats.loss == "arctan (f_scale=0.1)"
    fitted = np.array([float(result.model[1][key]) for key in ("a", "k", "c")])
    np.testing.assert_allclose(fitted, reference("arctan").x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"loss": "l1"}, "loss must be one of"),
        ({"loss": 3}, "loss must be one of"),
        ({"loss": "huber", "f_scale": 0.0}, "f_scale must be finite and positive"),
        ({"loss": "huber", "f_scale": -1.0}, "f_scale must be finite and positive"),
        ({"loss": "huber", "f_scale": np.nan}, "f_scale must be finite and positive"),
        ({"loss": "cauchy", "f_scale": np.inf}, "f_scale must be finite and positive"),
        ({"loss": "cauchy", "f_scale": "big"}, "f_scale must be a positive number"),
        ({"loss": "linear", "f_scale": 0.0}, "f_scale must be finite and positive"),
        ({"loss": lambda z: z}, r"must return the floating \(3, m\) = \(3, 60\)"),
        ({"loss": lambda z: jnp.stack([z, z])}, r"\(3, m\)"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        nlls.least_squares(residual, jnp.asarray(START), ARGS, **options)


def test_first_order_and_minibatch_refuse_a_loss():
    def model(p, x):
        return p["a"] * jnp.exp(-p["k"] * x) + p["c"]

    params = {"a": 1.0, "k": 1.0, "c": 0.0}
    with pytest.raises(ValueError, match="needs a least-squares method"):
        nlls.fit((model, params), X, Y, method="adam", loss="huber")
    with pytest.raises(ValueError, match="needs a least-squares method"):
        nlls.fit((model, params), X, Y, batch_size=10, loss="huber")
    with pytest.raises(ValueError, match="f_scale"):
        nlls.fit((model, params), X, Y, loss="huber", f_scale=-2.0)
