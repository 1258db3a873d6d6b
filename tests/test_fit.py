"""``nlls.fit``: models fitted to data, per-sample Jacobians, weights, validation, frozen leaves."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls.fitting import _per_sample_jacobian_fwd, _per_sample_jacobian_rev, _residual


def _mlp(width=8, depth=1, dtype=jnp.float64, in_size=1, out_size=1, seed=0):
    model = eqx.nn.MLP(
        in_size,
        out_size,
        width_size=width,
        depth=depth,
        activation=jnp.tanh,
        key=jax.random.key(seed),
    )
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, model
    )


def _mse(model, x, y):
    return float(jnp.mean((jax.vmap(model)(x) - y) ** 2))


def test_small_mlp_reaches_tiny_mse_on_smooth_data():
    x = jnp.linspace(-1.0, 1.0, 60)[:, None]
    y = jnp.sin(2.0 * x)
    result = nlls.fit(_mlp(), x, y, max_steps=300)
    assert _mse(result.model, x, y) < 1e-6
    assert result.solution.stats.jac == "user"  # the per-sample Jacobian
    assert result.solution.stats.linear == "normal"  # 25 parameters, 60 residuals
    assert len(result.history) >= 2
    assert result.history.as_dict()["cost"][-1] == pytest.approx(float(result.solution.cost))


def test_wide_mlp_takes_the_min_norm_path_and_fits():
    x = jnp.linspace(-1.0, 1.0, 40)[:, None]
    y = jnp.sin(3.0 * x)
    result = nlls.fit(_mlp(width=16, depth=2), x, y, max_steps=200, history=False)
    assert result.history is None
    assert result.solution.stats.linear == "min_norm"  # 321 parameters, 40 residuals
    assert _mse(result.model, x, y) < 1e-8


@pytest.mark.parametrize("outputs", [1, 3])
def test_per_sample_jacobian_equals_the_jacobian_of_the_batched_residual(outputs):
    """An independent method: ``jax.jacfwd`` of the whole batched residual, flattened."""
    model = _mlp(width=5, in_size=2, out_size=outputs)
    params, frozen = eqx.partition(model, eqx.is_inexact_array)
    x = jax.random.normal(jax.random.key(1), (7, 2))
    y = jax.random.normal(jax.random.key(2), (7, outputs))
    weights = jax.random.uniform(jax.random.key(3), (7, outputs))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    expected = jax.jacfwd(lambda f: _residual(unravel(f), frozen, x, y, weights))(flat)
    for build in (_per_sample_jacobian_rev, _per_sample_jacobian_fwd):
        got = build(params, frozen, x, y, weights)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_weights_give_the_weighted_least_squares_solution():
    """A straight line: the fit equals numpy's weighted linear least squares, and zero weights on
    two outliers recover the line exactly."""
    x = jnp.linspace(0.0, 1.0, 12)
    y = 0.5 + 2.0 * x + 0.01 * jnp.cos(7.0 * x)
    y = y.at[3].add(5.0).at[8].add(-4.0)
    weights = jnp.linspace(1.0, 3.0, 12)
    line = lambda p, xi: p["b"] + p["a"] * xi  # noqa: E731
    tight = dict(ftol=1e-15, xtol=1e-15, gtol=1e-13)
    result = nlls.fit((line, {"a": 0.0, "b": 0.0}), x, y, weights=weights, **tight)
    design = np.stack([np.asarray(x), np.ones(12)], axis=1) * np.asarray(weights)[:, None]
    expected = np.linalg.lstsq(design, np.asarray(y * weights), rcond=None)[0]
    fn, params = result.model
    assert fn is line
    # A linear problem: the direct solver's accuracy (steps at the rounding level are judged by
    # the gradient, nlls.solvers.base).
    np.testing.assert_allclose([params["a"], params["b"]], expected, rtol=1e-12)
    unweighted = nlls.fit((line, {"a": 0.0, "b": 0.0}), x, y).model[1]
    assert abs(float(unweighted["a"]) - float(params["a"])) > 1e-3  # the weights mattered
    clean = 0.5 + 2.0 * x
    masked = nlls.fit(
        (line, {"a": 0.0, "b": 0.0}),
        x,
        clean.at[3].add(5.0).at[8].add(-4.0),
        weights=jnp.ones(12).at[3].set(0.0).at[8].set(0.0),
        **tight,
    ).model[1]
    np.testing.assert_allclose([masked["a"], masked["b"]], [2.0, 0.5], rtol=1e-12)


def test_validation_mse_is_recorded_every_call():
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = jnp.sin(2.0 * x)
    x_val = jnp.linspace(-0.95, 0.95, 11)[:, None]
    y_val = jnp.sin(2.0 * x_val)
    result = nlls.fit(_mlp(), x, y, val=(x_val, y_val), max_steps=40, callback_every=5)
    data = result.history.as_dict()
    assert np.all(np.isfinite(data["val_mse"]))
    assert len(data["val_mse"]) == len(result.history) >= 3
    assert data["val_mse"][-1] == pytest.approx(_mse(result.model, x_val, y_val), rel=1e-10)
    assert data["val_mse"][-1] < 1e-2 * data["val_mse"][0]


class _Shifted(eqx.Module):
    """A line plus a fixed offset (not trained) and an integer field (never trained)."""

    slope: jax.Array
    offset: jax.Array
    power: jax.Array

    def __call__(self, x):
        return self.slope * x**self.power + self.offset


def test_non_trainable_leaves_are_untouched_and_used():
    x = jnp.linspace(0.0, 1.0, 10)
    y = 3.0 * x + 1.0
    model = _Shifted(slope=jnp.array(0.0), offset=jnp.array(1.0), power=jnp.array(1))
    trainable = _Shifted(slope=True, offset=False, power=False)
    result = nlls.fit(model, x, y, trainable=trainable, ftol=1e-15, xtol=1e-15, gtol=1e-13)
    assert float(result.model.offset) == 1.0
    assert int(result.model.power) == 1 and result.model.power.dtype == model.power.dtype
    assert float(result.model.slope) == pytest.approx(3.0, rel=1e-12)
    assert jax.tree_util.tree_structure(result.solution.params) == jax.tree_util.tree_structure(
        eqx.partition(model, trainable)[0]
    )


def test_float32_model_fits_in_float32():
    x = jnp.linspace(-1.0, 1.0, 40, dtype=jnp.float32)[:, None]
    y = jnp.sin(2.0 * x)
    result = nlls.fit(_mlp(dtype=jnp.float32), x, y, max_steps=100)
    assert result.solution.cost.dtype == jnp.float32
    assert _mse(result.model, x, y) < 1e-5


def test_float64_data_is_cast_to_a_float32_model():
    x = np.linspace(-1.0, 1.0, 20)[:, None]
    result = nlls.fit(_mlp(dtype=jnp.float32), x, np.sin(x), max_steps=5)
    assert jax.tree_util.tree_leaves(result.model)[0].dtype == jnp.float32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y, w: (x[:-1], y, w), "x has 29 samples but y has 30"),
        (lambda x, y, w: (x.at[4, 0].set(jnp.nan), y, w), "x holds 1 NaN"),
        (lambda x, y, w: (x, y.at[2:4].set(jnp.inf), w), "y holds 2 NaN or infinite values"),
        (
            lambda x, y, w: (x, y[:, 0], w),
            r"returns shape \(1,\) for one sample but y\[0\] has shape \(\)",
        ),
        (lambda x, y, w: (x, y, w.at[0].set(-1.0)), "weights must be non-negative"),
        (lambda x, y, w: (x, y, w.at[0].set(jnp.nan)), "weights holds 1 NaN"),
        (lambda x, y, w: (x, y, jnp.ones(7)), "do not broadcast"),
    ],
)
def test_bad_data_is_refused_before_training(change, message):
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = jnp.sin(x)
    w = jnp.ones((30, 1))
    x, y, w = change(x, y, w)
    with pytest.raises(ValueError, match=message):
        nlls.fit(_mlp(), x, y, weights=w)


def test_bad_validation_data_and_models_are_refused():
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = jnp.sin(x)
    with pytest.raises(ValueError, match="val x has 3 samples but val y has 4"):
        nlls.fit(_mlp(), x, y, val=(x[:3], y[:4]))
    with pytest.raises(TypeError, match="val must be a pair"):
        nlls.fit(_mlp(), x, y, val=x)
    with pytest.raises(ValueError, match="no trainable leaves"):
        nlls.fit(_mlp(), x, y, trainable=lambda leaf: False)
    mixed = {"a": jnp.ones((), jnp.float32), "b": jnp.ones((), jnp.float64)}
    with pytest.raises(ValueError, match="trainable leaves .*mixes dtypes"):
        nlls.fit((lambda p, xi: p["a"] * xi + p["b"], mixed), x, y)
    with pytest.raises(TypeError, match="equinox Module or a pair"):
        nlls.fit(lambda xi: xi, x, y)
    with pytest.raises(ValueError, match="calling the model on one sample"):
        nlls.fit((lambda p, xi: p["a"] @ xi, {"a": jnp.ones((3, 3))}), x, y)


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_first_order_methods_train_the_same_residual(method):
    """The baselines through ``fit``: same residual (their cost is ½‖r‖² of the fitted model),
    a History, and the model returned in the kind it was given."""
    x = jnp.linspace(-1.0, 1.0, 30)[:, None]
    y = jnp.sin(2.0 * x)
    options = {"learning_rate": 1e-2} if method == "adam" else {}
    result = nlls.fit(_mlp(), x, y, method=method, max_steps=200, callback_every=50, **options)
    assert isinstance(result.model, eqx.nn.MLP)
    assert result.solution.stats.linear == "none"
    data = result.history.as_dict()
    assert list(data["step"]) == [0, 50, 100, 150, 200]
    assert data["cost"][-1] < 0.1 * data["cost"][0]
    cost = 0.5 * float(jnp.sum((jax.vmap(result.model)(x) - y) ** 2))
    assert float(result.solution.cost) == pytest.approx(cost, rel=1e-10)


def test_callbacks_see_the_model_early_stopping_metrics_and_checkpoint(tmp_path):
    """``EarlyStopping(metric_of_model)`` and ``Metrics`` are given the model (as ``fit``
    returns it), the History records their values, and the best model is restored."""
    x = jnp.linspace(-1.0, 1.0, 40)[:, None]
    y = jnp.sin(2.0 * x)
    x_val = jnp.linspace(-0.95, 0.95, 15)[:, None]
    y_val = jnp.sin(2.0 * x_val)
    seen = []

    def val_mse(model):
        seen.append(type(model))
        return _mse(model, x_val, y_val)

    stop = nlls.EarlyStopping(val_mse, patience=3)
    metrics = nlls.Metrics({"train_mse": lambda model: _mse(model, x, y)})
    models = []
    result = nlls.fit(
        _mlp(), x, y, max_steps=60, callbacks=[stop, metrics, lambda info: models.append(info)]
    )
    assert set(seen) == {eqx.nn.MLP}
    assert all(isinstance(info.model, eqx.nn.MLP) for info in models)
    data = result.history.as_dict()
    # The recorded values are those of the model at each row (an independent evaluation).
    last = models[-1]
    assert data["train_mse"][-1] == pytest.approx(_mse(last.model, x, y), rel=1e-12)
    np.testing.assert_allclose(np.nanmin(data["early_stopping_metric"]), stop.best, rtol=1e-12)
    # Whatever ended the fit, the model returned is the best one seen.
    assert _mse(result.model, x_val, y_val) == pytest.approx(stop.best, rel=1e-10)
    assert _mse(stop.best_model, x_val, y_val) == pytest.approx(stop.best, rel=1e-10)

    # A plain model: the callbacks see (fn, params).
    pairs = []
    line = (lambda p, xi: p[0] * xi + p[1], jnp.zeros(2))
    nlls.fit(line, x, 3.0 * x - 1.0, callbacks=[lambda info: pairs.append(info.model)])
    fn, params = pairs[-1]
    assert fn is line[0]
    np.testing.assert_allclose(np.asarray(params), [3.0, -1.0], atol=1e-10)

    # Checkpoint on a model: resume continues to the same model, bit for bit.
    path = tmp_path / "fit.ckpt"
    whole = nlls.fit(_mlp(), x, y, max_steps=30, callbacks=[nlls.Checkpoint(path, every=5)])
    short = nlls.fit(_mlp(), x, y, max_steps=12, callbacks=[nlls.Checkpoint(path, every=5)])
    again = nlls.fit(_mlp(), x, y, max_steps=30, resume=path)
    assert int(short.solution.stats.steps) == 12
    for left, right in zip(
        jax.tree_util.tree_leaves(whole.model), jax.tree_util.tree_leaves(again.model), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))
