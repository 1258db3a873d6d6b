"""Minibatch training (``nlls.solvers.minibatch``, ``nlls._minibatch``, ``nlls.fit(..., batch_size=B)``): stochastic LM reaches
known solutions, the batches cover the data, runs are reproducible, the History is per epoch, and
bad input is refused."""

from __future__ import annotations

import doctest
import inspect

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls import _minibatch, baselines
from nlls.problem import FlatProblem, Samples
from nlls.solvers import minibatch

DTYPES = [jnp.float64, jnp.float32]


def _linear_data(dtype, samples=256, features=3, seed=0):
    """A random design and exact targets ``y = X θ*``: every batch has the same least-squares
    solution, θ*."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features))
    theta = rng.standard_normal(features)
    return jnp.asarray(x, dtype), jnp.asarray(x @ theta, dtype)


def _dot(p, xi):
    return xi @ p


def _mlp(dtype, width=16, depth=2, seed=0):
    model = eqx.nn.MLP(1, 1, width, depth, activation=jnp.tanh, key=jax.random.key(seed))
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, model
    )


def _curve(dtype, samples, seed):
    x = jax.random.uniform(jax.random.key(seed), (samples, 1), minval=-1.0, maxval=1.0)
    return x.astype(dtype), jnp.sin(3.0 * x).astype(dtype)


def _mse(model, x, y):
    return float(jnp.mean((jax.vmap(model)(x) - y) ** 2))


def _same_leaves(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


# ----------------------------------------------------------------------------------------------
# Convergence
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize(
    ("features", "batch_size", "path"), [(3, 16, "normal"), (40, 16, "min_norm")]
)
def test_linear_model_with_exact_data_reaches_the_least_squares_solution(
    dtype, features, batch_size, path
):
    """Exact data: θ* solves every batch, so minibatch LM must reach numpy's lstsq solution, on
    the QR normal path (3 parameters, 16 residuals per batch) and on the m×m minimum-norm path
    (40 parameters, 16 residuals per batch: each batch alone is underdetermined)."""
    x, y = _linear_data(dtype, features=features)
    expected = np.linalg.lstsq(np.asarray(x, np.float64), np.asarray(y, np.float64), rcond=None)[0]
    result = nlls.fit(
        (_dot, jnp.zeros(features, dtype)), x, y, batch_size=batch_size, epochs=40, history=False
    )
    _, params = result.model
    assert result.solution.stats.linear == path
    assert params.dtype == dtype
    tolerance = 1e-9 if dtype == jnp.float64 else 2e-4
    np.testing.assert_allclose(np.asarray(params), expected, rtol=0, atol=tolerance)
    # The Solution is evaluated on the whole set: its cost is ½‖Xθ − y‖² at the final θ.
    # (Near zero, float32 rounding of the residuals dominates: compare on the scale of ½‖y‖².)
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    full = 0.5 * np.sum((x64 @ np.asarray(params, np.float64) - y64) ** 2)
    scale = 0.5 * np.sum(y64**2) * (1e-15 if dtype == jnp.float64 else 1e-9)
    assert float(result.solution.cost) == pytest.approx(full, rel=1e-3, abs=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_minibatch_lm_beats_full_batch_lm_at_equal_passes_over_the_data(dtype):
    """An MLP (49 parameters) on 1000 points of sin(3x): three epochs of minibatch LM (B = 20,
    150 steps on the 20×20 minimum-norm system) reach a validation MSE below 1e-3 (about 1e-6 for
    seeds 0–3), while full-batch LM with the same three passes of Jacobians over the data (three
    accepted steps) is still above it (0.028). This is what the minibatch method is for: more
    progress per pass over the data."""
    x, y = _curve(dtype, 1000, seed=1)
    x_val, y_val = _curve(dtype, 200, seed=2)
    model = _mlp(dtype, width=16, depth=1)
    mini = nlls.fit(model, x, y, batch_size=20, epochs=3, val=(x_val, y_val))
    full = nlls.fit(model, x, y, max_steps=3, history=False)
    mini_mse, full_mse = _mse(mini.model, x_val, y_val), _mse(full.model, x_val, y_val)
    assert mini.solution.stats.linear == "min_norm"
    assert mini_mse < 1e-3 < full_mse
    rel = 1e-9 if dtype == jnp.float64 else 1e-3  # two float32 sums of small squares
    assert mini.history.as_dict()["val_mse"][-1] == pytest.approx(mini_mse, rel=rel)


@pytest.mark.parametrize("gradient_threshold", [1e-8, 1e3])
def test_one_lm_iteration_follows_the_documented_rule(gradient_threshold):
    """One iteration against the module docstring, computed with numpy on the same batch:
    λ = μ₀‖g‖, δ = −(JᵀJ + λI)⁻¹g; a linear residual makes ρ = 1, so the step is accepted
    (μ ← max(μ_min, μ₀/γ)) unless the gradient test ‖g‖/m_𝓑 ≥ η₂/μ fails (η₂ = 1e3): then θ stays
    and μ ← γμ₀."""
    rng = np.random.default_rng(2)
    x, y, start = rng.standard_normal((12, 3)), rng.standard_normal(12), rng.standard_normal(3)
    data = (jnp.asarray(x), jnp.asarray(y))
    key = jax.random.key(7)
    samples = Samples(data, key, count=12, batch=4, per_sample=1)
    problem = FlatProblem(lambda p, a, b: a @ p - b, (), lambda p: p, "fwd", samples=samples)
    method = minibatch.StochasticLM(
        accept_threshold=0.1,
        gradient_threshold=gradient_threshold,
        damping_coefficient=2.0,
        min_damping_coefficient=0.5,
        damping_growth=3.0,
    )
    tol = nlls.plan.NO_TOLERANCES
    state = nlls.loop.init(method, problem, "normal", jnp.asarray(start), tol)
    after = nlls.loop.run(method, problem, "normal", tol, state, 1)

    indices = np.asarray(minibatch.next_batch(minibatch.first_batches(key, 12), 4)[1])
    jac, residual = x[indices], x[indices] @ start - y[indices]
    grad = jac.T @ residual
    damping = 2.0 * np.linalg.norm(grad)
    step = -np.linalg.solve(jac.T @ jac + damping * np.eye(3), grad)
    inner = after.method_state
    assert float(inner.damping) == pytest.approx(damping, rel=1e-12)
    assert int(after.iterations) == 1 and int(after.nfev) == 2 and int(after.njev) == 1
    np.testing.assert_allclose(inner.point.grad, 3.0 * grad, rtol=1e-12)  # (m/m_𝓑)·g
    if gradient_threshold < 1:
        assert bool(after.accepted) and int(after.steps) == 1
        np.testing.assert_allclose(inner.point.params, start + step, rtol=1e-12, atol=1e-14)
        assert float(inner.coefficient) == pytest.approx(max(0.5, 2.0 / 3.0))
    else:
        assert not bool(after.accepted) and int(after.rejected) == 1
        np.testing.assert_array_equal(inner.point.params, start)
        assert float(inner.coefficient) == pytest.approx(6.0)


# ----------------------------------------------------------------------------------------------
# Batches and reproducibility
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("samples", "batch_size"), [(12, 4), (10, 3), (7, 7)])
def test_each_epoch_uses_each_sample_at_most_once_and_reshuffles(samples, batch_size):
    """Per epoch: ⌊N/B⌋ batches of distinct indices; all N samples when B divides N, else
    N − (N mod B) of them; a new permutation every epoch (N = 7, B = 7: one batch per epoch)."""
    per_epoch = samples // batch_size
    take = jax.jit(minibatch.next_batch, static_argnums=1)
    batches = minibatch.first_batches(jax.random.key(3), samples)
    epochs = []
    for _ in range(6):
        indices = []
        for _ in range(per_epoch):
            batches, batch = take(batches, batch_size)
            indices.extend(np.asarray(batch).tolist())
        epochs.append(indices)
        assert int(batches.position) == per_epoch
    assert int(batches.epoch) == 5
    for indices in epochs:
        assert len(indices) == len(set(indices)) == per_epoch * batch_size
        assert set(indices) <= set(range(samples))
        if samples % batch_size == 0:
            assert sorted(indices) == list(range(samples))
    orders = {tuple(indices) for indices in epochs}
    assert len(orders) > 1  # reshuffled (6 draws of a permutation of 7+ items)
    if samples % batch_size:  # the dropped samples change from epoch to epoch
        assert len({frozenset(range(samples)) - frozenset(i) for i in epochs}) > 1


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_same_seed_gives_the_same_run_bit_for_bit_and_another_seed_another(dtype):
    x, y = _curve(dtype, 200, seed=4)
    model = _mlp(dtype, width=8, depth=1)
    run = lambda **kw: nlls.fit(model, x, y, batch_size=20, epochs=2, **kw)  # noqa: E731
    plain = run(seed=5, history=False)  # one compiled program
    segmented = run(seed=5, callback_every=1)  # the driver, one segment per epoch
    other = run(seed=6, history=False)
    assert _same_leaves(plain.model, segmented.model)
    assert int(plain.solution.stats.steps) == int(segmented.solution.stats.steps)
    assert not _same_leaves(plain.model, other.model)


# ----------------------------------------------------------------------------------------------
# What is reported
# ----------------------------------------------------------------------------------------------


def test_history_has_one_row_per_epoch():
    x, y = _curve(jnp.float64, 200, seed=5)
    x_val, y_val = _curve(jnp.float64, 50, seed=6)
    result = nlls.fit(_mlp(jnp.float64, width=8, depth=1), x, y, batch_size=20, epochs=4,
                      val=(x_val, y_val))  # fmt: skip
    data = result.history.as_dict()
    np.testing.assert_array_equal(data["epoch"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(data["iteration"], [0, 10, 20, 30, 40])
    assert np.all(np.isfinite(data["val_mse"]))
    assert data["val_mse"][-1] < data["val_mse"][0]
    every_two = nlls.fit(_mlp(jnp.float64, width=8, depth=1), x, y, batch_size=20, epochs=4,
                         callback_every=2)  # fmt: skip
    np.testing.assert_array_equal(every_two.history.as_dict()["epoch"], [0, 2, 4])


def test_history_cost_is_the_epoch_mean_of_batch_costs_scaled_to_the_full_set():
    """With a learning rate so small that the parameters never change and B dividing N, the
    batches of an epoch partition the data, so their mean cost times N/B is exactly the full cost
    ½‖r‖²; the first row is the full cost at the start, the Solution's is at the end."""
    x, y = _curve(jnp.float64, 200, seed=7)
    model = _mlp(jnp.float64, width=8, depth=1)
    result = nlls.fit(model, x, y, method="sgd", learning_rate=1e-300, batch_size=20, epochs=2)
    params, frozen = eqx.partition(model, eqx.is_inexact_array)

    def cost(p):
        return 0.5 * jnp.sum((jax.vmap(eqx.combine(p, frozen))(x) - y) ** 2)

    full = float(cost(params))
    assert _same_leaves(result.model, model)
    np.testing.assert_allclose(result.history.as_dict()["cost"], full, rtol=1e-12)
    assert float(result.solution.cost) == pytest.approx(full, rel=1e-12)
    # ... and its gradient is the full Jᵀr, not a batch estimate.
    expected = jax.flatten_util.ravel_pytree(jax.grad(cost)(params))[0]
    np.testing.assert_allclose(result.solution.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("features", "outputs", "batch_size", "path"),
    [(5, 3, 4, "min_norm"), (5, 3, 12, "normal")],
)
def test_the_step_path_follows_the_batch_not_the_data(features, outputs, batch_size, path):
    """The m×m system when B·k < n. A linear map R⁵ → R³ has n = 18 parameters: B = 4 gives 12
    batch residuals (min-norm), B = 12 gives 36 (normal), although all 60 samples give 180."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((60, features)))
    w = jnp.asarray(rng.standard_normal((features, outputs)))
    y = x @ w
    result = nlls.fit(
        (lambda p, xi: xi @ p, jnp.zeros((features, outputs))),
        x,
        y,
        batch_size=batch_size,
        epochs=2,
        history=False,
    )
    assert result.solution.stats.linear == path
    assert result.solution.stats.jac == "user"  # the per-sample Jacobian of the batch


def test_budget_counts_batches():
    x, y = _linear_data(jnp.float64)  # 256 samples
    fit = lambda **kw: nlls.fit((_dot, jnp.zeros(3)), x, y, batch_size=16, history=False, **kw)  # noqa: E731
    stats = lambda r: int(r.solution.stats.steps) + int(r.solution.stats.rejected)  # noqa: E731
    assert stats(fit()) == 10 * 16  # ten epochs of sixteen batches by default
    assert stats(fit(epochs=3)) == 48
    assert stats(fit(epochs=3, max_steps=5)) == 5
    assert stats(fit(max_steps=13)) == 13
    assert fit(max_steps=13).solution.message.startswith("max_steps")
    assert fit(max_steps=13).solution.status is nlls.Status.MAX_STEPS
    # A budget in epochs ends with a status that says so, whether callbacks run or not.
    assert fit(epochs=3).solution.status is nlls.Status.MAX_EPOCHS
    assert fit(epochs=3, max_steps=48).solution.message.startswith("epochs")
    assert fit(epochs=3, max_steps=5).solution.status is nlls.Status.MAX_STEPS
    ended = []
    watched = nlls.fit(
        (_dot, jnp.zeros(3)),
        x,
        y,
        batch_size=16,
        epochs=2,
        callbacks=[type("End", (), {"__call__": lambda s, i: None, "on_end": ended.append})()],
    )
    assert watched.solution.status is nlls.Status.MAX_EPOCHS
    assert ended[0].status is nlls.Status.MAX_EPOCHS
    assert not bool(watched.solution.success)


def test_callbacks_time_limit_and_early_stopping_run_through_the_driver():
    x, y = _curve(jnp.float64, 200, seed=8)
    model = _mlp(jnp.float64, width=8, depth=1)
    stopped = nlls.fit(model, x, y, batch_size=20, epochs=5, callbacks=[lambda info: True])
    assert nlls.Status(int(stopped.solution.status)) == nlls.Status.CALLBACK
    assert stopped.history.as_dict()["epoch"][-1] == 1
    timed = nlls.fit(model, x, y, batch_size=20, epochs=5, max_time=0.0)
    assert nlls.Status(int(timed.solution.status)) == nlls.Status.TIME_LIMIT
    assert _same_leaves(timed.model, model)
    early = nlls.EarlyStopping(lambda p: 1.0, patience=2)  # never improves after the start
    result = nlls.fit(model, x, y, batch_size=20, epochs=5, callbacks=[early])
    assert nlls.Status(int(result.solution.status)) == nlls.Status.CALLBACK
    assert _same_leaves(result.model, model)  # the best parameters: the start


# ----------------------------------------------------------------------------------------------
# Minibatch Adam and SGD
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize(
    ("method", "options"),
    [("adam", {"learning_rate": 1e-2}), ("sgd", {"learning_rate": 0.1, "momentum": 0.9})],
)
def test_minibatch_first_order_methods_run_through_the_same_interface(dtype, method, options):
    x, y = _curve(dtype, 200, seed=9)
    x_val, y_val = _curve(dtype, 50, seed=10)
    model = _mlp(dtype, width=8, depth=1)
    result = nlls.fit(model, x, y, method=method, batch_size=20, epochs=40, val=(x_val, y_val),
                      **options)  # fmt: skip
    data = result.history.as_dict()
    assert len(data["epoch"]) == 41
    assert int(result.solution.stats.steps) == 40 * 10  # one update per batch
    assert result.solution.stats.linear == "none"
    assert data["val_mse"][-1] < 0.05 * data["val_mse"][0]
    np.testing.assert_allclose(data["damping"], options["learning_rate"], rtol=1e-6)


def test_first_order_defaults_are_those_of_the_baselines():
    for method, defaults in _minibatch.FIRST_ORDER_OPTIONS.items():
        signature = inspect.signature(getattr(baselines, method)).parameters
        for name, value in defaults.items():
            assert signature[name].default == value, (method, name)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"batch_size": -3}, "batch_size must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"batch_size": True}, "batch_size must be a positive int"),
        ({"batch_size": 65}, "larger than the 64 samples"),
        ({"batch_size": 8, "method": "lbfgs"}, "L-BFGS"),
        ({"batch_size": 8, "method": "gn"}, "method must be one of"),
        ({"batch_size": 8, "method": nlls.LevenbergMarquardt()}, "method must be one of"),
        ({"batch_size": 8, "epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": 8, "max_steps": -1}, "max_steps must be a non-negative int"),
        ({"batch_size": 8, "seed": 1.5}, "seed must be an int"),
        ({"batch_size": 8, "ftol": 1e-8}, "ftol, xtol and gtol do not apply"),
        ({"batch_size": 8, "accept_threshold": 1.0}, "accept_threshold must be in"),
        ({"batch_size": 8, "damping_growth": 1.0}, "damping_growth must be above 1"),
        ({"batch_size": 8, "damping_coefficient": 0.1}, "must not exceed"),
        ({"batch_size": 8, "method": "adam", "momentum": 0.9}, "unknown option"),
        ({"batch_size": 8, "method": "adam", "linear": "normal"}, "options of the LM step"),
        ({"batch_size": 8, "callbacks": [nlls.Checkpoint("x.ckpt")]}, "Checkpoint"),
        ({"epochs": 3}, "give batch_size"),
        ({"seed": 3}, "give batch_size"),
    ],
)
def test_bad_input_is_refused_before_training(options, message):
    x, y = _linear_data(jnp.float64, samples=64)
    with pytest.raises(ValueError, match=message):
        nlls.fit((_dot, jnp.zeros(3)), x, y, **options)


def test_non_finite_start_and_data_are_refused():
    x, y = _linear_data(jnp.float64)
    with pytest.raises(ValueError, match="not finite"):
        nlls.fit((_dot, jnp.array([jnp.nan, 0.0, 0.0])), x, y, batch_size=16)
    with pytest.raises(ValueError, match="NaN or infinite"):
        nlls.fit((_dot, jnp.zeros(3)), x, y.at[3].set(jnp.inf), batch_size=16)
    with pytest.raises(ValueError, match="differ in length"):
        _minibatch.train("lm", lambda p, a, b: a @ p - b, jnp.zeros(3), (), (x, y[:10]),
                            batch_size=8)  # fmt: skip


@pytest.mark.parametrize("module", [_minibatch, minibatch])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
