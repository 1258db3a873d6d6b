"""What a ``Solution`` shows: the status by name, the values when printed, the mean squared error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls


def rosenbrock(p):
    return jnp.array([1.0 - p[0], 10.0 * (p[1] - p[0] ** 2)])


def exponential(p, x, y):
    return p["a"] * jnp.exp(-p["k"] * x) - y


X = jnp.linspace(0.0, 1.0, 20)
Y = 2.0 * jnp.exp(-1.5 * X) + 0.01 * jnp.sin(17.0 * X)  # not exactly the model: a non-zero cost


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_status_is_a_status_and_the_solution_prints_its_values(dtype):
    sol = nlls.least_squares(
        exponential,
        {"a": jnp.asarray(1.0, dtype), "k": jnp.asarray(1.0, dtype)},
        args=(X.astype(dtype), Y.astype(dtype)),
    )
    assert isinstance(sol.status, nlls.Status) and sol.status.converged
    assert sol.status is nlls.Status(int(sol.status_code))
    text = str(sol)
    assert repr(sol) == text
    assert text.startswith(f"Solution: converged ({sol.status.name}: {sol.status.message})")
    assert f"'a': {float(sol.params['a']):.7g}" in text
    assert f"cost:     {float(sol.cost):.7g}" in text
    assert f"nfev={int(sol.stats.nfev)}" in text and f"{int(sol.stats.steps)} steps" in text
    assert "method LevenbergMarquardt" in text and "linear normal" in text
    assert "f32[" not in text and "Array(" not in text


def test_mse_and_rmse_are_the_mean_square_of_the_residuals():
    sol = nlls.least_squares(exponential, {"a": 1.0, "k": 1.0}, args=(X, Y))
    residual = np.asarray(exponential(sol.params, X, Y))  # evaluated anew, by hand
    np.testing.assert_allclose(float(sol.mse), np.mean(residual**2), rtol=1e-10)
    np.testing.assert_allclose(float(sol.rmse), np.sqrt(np.mean(residual**2)), rtol=1e-10)
    assert f"mse:      {float(sol.mse):.7g}" in str(sol)


def test_fit_result_mse_is_the_training_error_of_the_model():
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = jnp.concatenate([jnp.sin(2.0 * x), jnp.cos(x)], axis=1)  # two outputs per sample
    model = eqx.nn.MLP(1, 2, width_size=4, depth=1, key=jax.random.key(0))
    result = nlls.fit(model, x, y, max_steps=5)
    error = np.asarray(jax.vmap(result.model)(x) - y)
    np.testing.assert_allclose(float(result.mse), np.mean(error**2), rtol=1e-8)
    np.testing.assert_allclose(float(result.rmse), np.sqrt(np.mean(error**2)), rtol=1e-8)
    text = str(result)
    assert "MLP of 18 parameters in 4 arrays" in text  # a model is summarised, not dumped
    assert "MAX_STEPS" in text and "history of" in text


def test_under_vmap_status_stays_an_array_and_the_batch_is_summarised():
    ys = Y + 0.01 * jnp.arange(4.0)[:, None]
    sols = jax.vmap(lambda y: nlls.least_squares(exponential, {"a": 1.0, "k": 1.0}, args=(X, y)))(
        ys
    )
    assert sols.status.shape == (4,)
    assert all(nlls.Status(int(c)).converged for c in sols.status)
    np.testing.assert_allclose(
        np.asarray(sols.mse), np.mean(np.asarray(sols.residual) ** 2, axis=1), rtol=1e-10
    )
    text = str(sols)
    assert text.startswith("Solution of 4 solves (4,): 4 converged")
    assert "cost:     min" in text


def test_under_jit_status_is_traced_and_printing_falls_back_to_the_structure():
    seen = {}

    @jax.jit
    def solve(y):
        sol = nlls.least_squares(exponential, {"a": 1.0, "k": 1.0}, args=(X, y))
        seen["status"], seen["text"] = sol.status, str(sol)
        return sol

    sol = solve(Y)
    assert isinstance(seen["status"], jax.core.Tracer)
    assert seen["text"].startswith("Solution(") and "status_code=i32[]" in seen["text"]
    assert isinstance(sol.status, nlls.Status) and sol.status.converged  # concrete outside


def test_replace_changes_fields_and_refuses_unknown_ones():
    sol = nlls.least_squares(rosenbrock, jnp.array([-1.2, 1.0]))
    other = sol.replace(status=jnp.asarray(int(nlls.Status.CALLBACK), jnp.int32))
    assert other.status is nlls.Status.CALLBACK and other.cost is sol.cost
    with pytest.raises(TypeError, match="no field"):
        sol.replace(state=1)
