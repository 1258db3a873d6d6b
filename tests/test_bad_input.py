"""Bad input gets a clear error or a safe, reported outcome."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls


def line(p, x, y):
    return p[0] * x + p[1] - y


X = jnp.linspace(0.0, 1.0, 10)
Y = 2.0 * X + 1.0


def test_non_finite_start_raises():
    with pytest.raises(ValueError, match="not finite"):
        nlls.least_squares(line, jnp.array([jnp.nan, 1.0]), args=(X, Y))
    with pytest.raises(ValueError, match="not finite"):
        nlls.least_squares(
            lambda p, x, y: line(p["a"], x, y), {"a": jnp.array([1.0, jnp.inf])}, args=(X, Y)
        )


def test_residual_non_finite_at_the_start_raises():
    bad_y = Y.at[3].set(jnp.nan)
    with pytest.raises(ValueError, match="not finite at params0"):
        nlls.least_squares(line, jnp.array([0.0, 0.0]), args=(X, bad_y))


def test_non_finite_start_under_jit_is_reported_not_raised():
    bad_y = Y.at[3].set(jnp.nan)
    sol = jax.jit(lambda y: nlls.least_squares(line, jnp.array([0.0, 0.0]), args=(X, y)))(bad_y)
    assert nlls.Status(int(sol.status)) is nlls.Status.NONFINITE_START
    assert not bool(sol.success)
    np.testing.assert_array_equal(np.asarray(sol.params), [0.0, 0.0])


# LM bounds its first step by initial_radius·‖Dθ₀‖, which keeps it out of the NaN region: a wide
# bound lets it take the Gauss–Newton step there.
@pytest.mark.parametrize("method", [nlls.LevenbergMarquardt(initial_radius=100.0), "gn", "dogleg"])
def test_non_finite_trial_point_is_a_rejected_step(method):
    """sqrt(θ) − 0.1 from θ = 1: the Gauss–Newton step lands at θ = −0.8 where sqrt is NaN."""
    sol = nlls.least_squares(lambda p: jnp.sqrt(p) - 0.1, jnp.array([1.0]), method=method)
    assert int(sol.stats.rejected) >= 1
    assert bool(sol.success), sol.message
    assert bool(jnp.all(jnp.isfinite(sol.params)))
    np.testing.assert_allclose(np.asarray(sol.params), [0.01], rtol=1e-6)


def test_residual_dtype_mismatch_is_named():
    with pytest.raises(ValueError, match="float32.*float64"):
        nlls.least_squares(lambda p: (p - 1.0).astype(jnp.float32), jnp.zeros(3))


def test_integer_residual_is_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        nlls.least_squares(lambda p: jnp.round(p).astype(jnp.int32), jnp.zeros(3))


def test_integer_or_mixed_parameters_are_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        nlls.least_squares(line, jnp.array([1, 2]), args=(X, Y))
    with pytest.raises(ValueError, match="mixes dtypes"):
        nlls.least_squares(
            lambda p: p["a"] - p["b"],
            {"a": jnp.zeros(2, jnp.float32), "b": jnp.zeros(2, jnp.float64)},
        )


def test_user_jacobian_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"\(m, n\) = \(10, 2\).*\(2, 10\)"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), jac=lambda p, x, y: jnp.zeros((2, 10)))


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="method"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), method="newton")
    with pytest.raises(ValueError, match="linear"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), linear="qr")
    with pytest.raises(ValueError, match="jac"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), jac="central")
    with pytest.raises(ValueError, match="initial_damping"):
        nlls.LevenbergMarquardt(initial_damping=-1.0)


def test_residual_that_fails_to_trace_is_reported():
    with pytest.raises(ValueError, match="residual"):
        nlls.least_squares(lambda p, x: p @ x, jnp.zeros(3), args=(jnp.zeros(4),))


@pytest.mark.parametrize(
    "method", ["lm", "dogleg", nlls.LevenbergMarquardt(damping="trust_region")]
)
@pytest.mark.parametrize("start", [0.0, 1.0])
def test_a_start_walled_in_by_non_finite_residuals_is_reported(method, start):
    """Finite only at the start itself: the solve stops there and says why, not 'converged'."""

    def residual(p):
        return jnp.where(jnp.all(p == start), 1.0, jnp.nan) * (p - 2.0)

    sol = nlls.least_squares(residual, jnp.full(2, start), method=method)
    assert nlls.Status(int(sol.status)) is nlls.Status.NONFINITE_TRIALS
    assert not bool(sol.success)
    np.testing.assert_array_equal(np.asarray(sol.params), [start, start])
    assert int(sol.stats.steps) == 0 and int(sol.stats.rejected) > 0


# ----------------------------------------------------------------------------------------------
# Errors that name the fix: front-end options, method names, arguments.

import equinox as eqx  # noqa: E402

import nlls.ode  # noqa: E402
from nlls import baselines  # noqa: E402

MLP = eqx.nn.MLP(1, 1, 4, 1, key=jax.random.key(0))
XS = jnp.linspace(-1.0, 1.0, 12)[:, None]
YS = jnp.sin(XS)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"learning_rate": 1e-3}, r"learning_rate .*first-order methods \(method='adam' or 'sgd'"),
        ({"method": "Adam"}, r"unknown method 'Adam' \(did you mean 'adam'\?\).*'lbfgs'.*optax"),
        ({"method": "LM"}, r"did you mean 'lm'\?.*'trust_region'"),
        ({"method": "levenberg_marquardt"}, r"did you mean 'lm'\?"),
        ({"method": "adam", "ftol": 1e-3}, r"ftol is an option of the least-squares methods"),
        ({"method": "adam", "covariance": True}, r"covariance .*'adam' does not take it"),
        ({"method": "lbfgs", "learning_rate": 0.1}, r"line search"),
        ({"maxiter": 10}, r"the budget is max_steps"),
        ({"max_step": 10}, r"did you mean max_steps\? The options are"),
        ({"max_steps": 1e3}, r"max_steps must be a non-negative int"),
        ({"ftol": -1.0}, r"ftol must be non-negative"),
        ({"gtol": "small"}, r"gtol must be a number"),
        ({"callbacks": 3}, r"callbacks must be a list of callables"),
    ],
)
def test_fit_options_errors_name_the_fix(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        nlls.fit(MLP, XS, YS, **options)


def test_fit_data_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"y\[:, None\] for one output per sample"):
        nlls.fit(MLP, XS, YS[:, 0])
    with pytest.raises(ValueError, match=r"x is a list of scalars.*jnp.asarray\(x\)"):
        nlls.fit(MLP, [0.0, 1.0], [[0.0], [1.0]])


def test_args_given_bare_names_the_tuple():
    """``args=x`` unpacks x's rows as arguments; the error says to write ``args=(x,)``."""
    single = lambda p, x: p[0] * x + p[1]  # noqa: E731
    fix = r"args must be a tuple.*array of shape \(10,\).*args=\(x,\)"
    with pytest.raises(TypeError, match=fix):
        nlls.least_squares(single, jnp.zeros(2), args=X)
    with pytest.raises(TypeError, match=fix):
        baselines.adam(single, jnp.zeros(2), args=X)
    # A list is as good as a tuple: the same solve.
    listed = nlls.least_squares(line, jnp.zeros(2), args=[X, Y])
    tupled = nlls.least_squares(line, jnp.zeros(2), args=(X, Y))
    np.testing.assert_array_equal(np.asarray(listed.params), np.asarray(tupled.params))
    np.testing.assert_allclose(np.asarray(listed.params), [2.0, 1.0], rtol=1e-8)


def test_least_squares_names_the_baselines_and_the_spelling():
    with pytest.raises(ValueError, match=r"first-order baseline.*nlls.baselines.adam"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), method="adam")
    with pytest.raises(ValueError, match=r"unknown method 'GN' \(did you mean 'gn'\?\)"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), method="GN")
    with pytest.raises(ValueError, match=r"max_steps must be a non-negative int"):
        nlls.least_squares(line, jnp.zeros(2), args=(X, Y), max_steps=-1)


def test_residual_of_python_numbers_names_jax_arrays():
    with pytest.raises(ValueError, match=r"must return JAX arrays.*got a float"):
        nlls.least_squares(lambda p: 1.0, jnp.zeros(2))


def test_ode_fit_errors_name_the_fix():
    ts = jnp.linspace(0.0, 1.0, 6)
    ys = jnp.exp(-2.0 * ts)[:, None]
    decay = (lambda p, t, u: -p["k"] * u, {"k": jnp.array(1.0)})
    with pytest.raises(ValueError, match=r"unknown option segment .*did you mean segments\?"):
        nlls.ode.fit(decay, ts, ys, segment=2)
    with pytest.raises(ValueError, match=r"learning_rate .*first-order methods"):
        nlls.ode.fit(decay, ts, ys, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"did you mean 'sgd'\?"):
        nlls.ode.fit(decay, ts, ys, method="SGD")
    with pytest.raises(ValueError, match=r"rtol must be positive"):
        nlls.ode.fit(decay, ts, ys, rtol=-1.0)
