"""First-order baselines (``nlls.baselines``): the optimisers reach known minima, report in
least-squares units, and run under the same callbacks and host driver as ``least_squares``."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nlls
from nlls import baselines

DTYPES = [jnp.float64, jnp.float32]


def linear(p, a, b):
    return a @ p - b


def linear_problem(dtype, m=30, n=3):
    """A well-conditioned random problem with a non-zero residual at its minimum."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, n))
    b = a @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(m)
    return jnp.asarray(a, dtype), jnp.asarray(b, dtype)


def rosenbrock(p):
    return jnp.array([1.0 - p[0], 10.0 * (p[1] - p[0] ** 2)], dtype=p.dtype)


def network_residual(p, x, y):
    return jnp.tanh(x[:, None] * p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y


def network_problem(dtype=jnp.float64, width=6, points=40):
    """A small tanh network fitted to sin(3x): many updates, no early convergence."""
    x = jnp.linspace(-1.0, 1.0, points, dtype=dtype)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    p0 = {
        "w1": jax.random.normal(k1, (width,), dtype),
        "b1": jnp.zeros(width, dtype),
        "w2": 0.3 * jax.random.normal(k2, (width,), dtype),
        "b2": jnp.zeros((), dtype),
    }
    return p0, (x, jnp.sin(3.0 * x))


# One configuration per optimiser, used wherever the optimiser itself does not matter.
RUNS = {
    "adam": (baselines.adam, {"learning_rate": 0.02}),
    "sgd": (baselines.sgd, {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    "lbfgs": (baselines.lbfgs, {"gtol": 0.0}),
}


def assert_trees_identical(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for left, right in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


def cost_and_grad_norm(residual, params, args):
    """½‖r‖² and ‖Jᵀr‖∞ computed independently of the library."""
    value, grad_norm = _reference(residual)(params, args)
    return float(value), float(grad_norm)


@functools.cache
def _reference(residual):
    def cost(params, args):
        return 0.5 * sum(jnp.sum(r**2) for r in jax.tree_util.tree_leaves(residual(params, *args)))

    def value_and_grad_norm(params, args):
        value, grad = jax.value_and_grad(cost)(params, args)
        return value, jnp.max(jnp.abs(ravel_pytree(grad)[0]))

    return jax.jit(value_and_grad_norm)


class Recorder:
    def __init__(self, stop_at_step=None, interrupt_at_step=None):
        self.infos, self.started, self.ended = [], None, None
        self.stop_at_step, self.interrupt_at_step = stop_at_step, interrupt_at_step

    def on_start(self, info):
        self.started = info

    def __call__(self, info):
        self.infos.append(info)
        if self.interrupt_at_step is not None and info.step >= self.interrupt_at_step:
            raise KeyboardInterrupt
        return self.stop_at_step is not None and info.step >= self.stop_at_step

    def on_end(self, info):
        self.ended = info


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_reaches_the_linear_least_squares_minimum(dtype):
    a, b = linear_problem(dtype)
    exact, *_ = np.linalg.lstsq(np.asarray(a, np.float64), np.asarray(b, np.float64))
    exact_cost = 0.5 * np.sum((np.asarray(a, np.float64) @ exact - np.asarray(b, np.float64)) ** 2)
    sol = baselines.adam(linear, jnp.zeros(3, dtype), (a, b), learning_rate=0.05, max_steps=1000)
    assert sol.params.dtype == dtype and sol.cost.dtype == dtype
    assert nlls.Status(int(sol.status)) is nlls.Status.MAX_STEPS and not bool(sol.success)
    # Full-batch Adam with a constant learning rate does not stall short of the minimum of this
    # well-conditioned quadratic (cond(A) ≈ 1.5; its steps shrink with the gradient): after 1000
    # steps at 0.05 it is at x* to rounding (measured: 2e-15 in float64, 2e-7 in float32, where
    # x* itself is known only to a few ulps times cond(A)²). The tolerances leave a wide margin.
    tol = 1e-10 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(np.asarray(sol.params), exact, atol=tol)
    assert float(sol.cost) == pytest.approx(exact_cost, rel=tol)
    # Reported in least-squares units: cost ½‖r‖², grad Jᵀr, residual r at the final params.
    cost, _ = cost_and_grad_norm(linear, sol.params, (a, b))
    assert float(sol.cost) == pytest.approx(cost, rel=tol)
    residual = a @ sol.params - b
    np.testing.assert_allclose(np.asarray(sol.residual), np.asarray(residual), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(sol.grad), np.asarray(a.T @ residual), atol=tol)
    assert int(sol.stats.steps) == 1000
    assert int(sol.stats.nfev) == int(sol.stats.njev) == 1001
    assert int(sol.stats.rejected) == 0
    assert (sol.stats.linear, sol.stats.jac) == ("none", "rev")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lbfgs_solves_rosenbrock(dtype):
    sol = baselines.lbfgs(rosenbrock, jnp.array([-1.2, 1.0], dtype), max_steps=200)
    np.testing.assert_allclose(np.asarray(sol.params), [1.0, 1.0], atol=1e-6)
    assert sol.params.dtype == dtype
    if dtype == jnp.float64:
        assert nlls.Status(int(sol.status)) is nlls.Status.GTOL and bool(sol.success)
        assert float(jnp.max(jnp.abs(sol.grad))) <= 1e-8
    # Each update is one line search of one or more evaluations, all counted.
    assert int(sol.stats.nfev) > int(sol.stats.steps) + 1
    assert int(sol.stats.njev) == int(sol.stats.nfev)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_decreases_the_cost(dtype):
    """Gradient descent on a convex quadratic with a step below 1/L decreases the cost at every
    step (L = 2·λmax(AᵀA)/m ≈ 2.8 for the mean-squared loss; the step is 0.1)."""
    a, b = linear_problem(dtype)
    history = nlls.History()
    plain = baselines.sgd(
        linear, jnp.zeros(3, dtype), (a, b), learning_rate=0.1, max_steps=50, callbacks=[history]
    )
    assert plain.params.dtype == dtype
    costs = history.as_dict()["cost"]
    assert len(costs) == 51 and np.all(np.diff(costs) < 0)
    assert costs[-1] < 0.05 * costs[0]
    if dtype == jnp.float64:  # heavy-ball momentum gets further in as many steps
        heavy = baselines.sgd(
            linear, jnp.zeros(3), (a, b), learning_rate=0.1, momentum=0.5, max_steps=50
        )
        assert float(heavy.cost) < float(plain.cost)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("adam", jnp.float64),
        ("adam", jnp.float32),
        ("sgd", jnp.float32),
        ("lbfgs", jnp.float64),  # slow to compile: one dtype
    ],
)
def test_iterates_do_not_depend_on_segmentation(name, dtype):
    optimiser, options = RUNS[name]
    p0, args = network_problem(dtype)
    whole = optimiser(network_residual, p0, args, max_steps=30, **options)
    assert int(whole.stats.steps) == 30
    for every in (1, 7):
        history = nlls.History()
        cut = optimiser(
            network_residual,
            p0,
            args,
            max_steps=30,
            callbacks=[history],
            callback_every=every,
            **options,
        )
        assert_trees_identical(cut.params, whole.params)
        assert_trees_identical(cut.residual, whole.residual)
        assert float(cut.cost) == float(whole.cost)
        assert int(cut.status) == int(whole.status)
        for field in ("steps", "nfev", "njev", "rejected"):
            assert int(getattr(cut.stats, field)) == int(getattr(whole.stats, field))
        # The History: the start, then one row per segment of `every` updates.
        assert cut.history is history
        data = history.as_dict()
        expected = [0, *range(every, 30, every), 30]
        np.testing.assert_array_equal(data["step"], expected)
        np.testing.assert_array_equal(data["iteration"], expected)
        assert data["cost"][-1] == float(whole.cost)
        assert data["nfev"][-1] == int(whole.stats.nfev)


@pytest.mark.parametrize("name", ["adam", "lbfgs"])
def test_step_info_is_in_least_squares_units(name):
    optimiser, options = RUNS[name]
    p0, args = network_problem()
    recorder = Recorder()
    optimiser(network_residual, p0, args, max_steps=12, callbacks=[recorder], **options)
    assert recorder.started.step == 0 and recorder.started.step_norm == 0.0
    assert [info.step for info in recorder.infos] == list(range(1, 13))
    previous = recorder.started.params
    for info in recorder.infos:
        cost, grad_norm = cost_and_grad_norm(network_residual, info.params, args)
        assert info.cost == pytest.approx(cost, rel=1e-10)
        assert info.grad_norm == pytest.approx(grad_norm, rel=1e-8)
        moved = ravel_pytree(info.params)[0] - ravel_pytree(previous)[0]
        assert info.step_norm == pytest.approx(float(jnp.linalg.norm(moved)), rel=1e-8)
        assert info.accepted
        assert info.metrics == {} and info.signature == ""
        previous = info.params
    if name == "adam":
        assert all(info.damping == 0.02 for info in recorder.infos)
        assert [info.nfev for info in recorder.infos] == list(range(2, 14))
    else:  # the line search's step size, and one evaluation or more per update
        assert all(info.damping > 0 for info in recorder.infos)
        assert all(
            b.nfev > a.nfev for a, b in zip(recorder.infos[:-1], recorder.infos[1:], strict=True)
        )
    assert all(info.status is nlls.Status.RUNNING for info in recorder.infos[:-1])
    assert recorder.infos[-1].status is recorder.ended.status is nlls.Status.MAX_STEPS


@pytest.mark.parametrize("every", [1, 4])
def test_callback_returning_true_stops_after_that_segment(every):
    p0, args = network_problem()
    recorder = Recorder(stop_at_step=8)
    sol = baselines.adam(
        network_residual, p0, args, callbacks=[recorder], callback_every=every, learning_rate=0.02
    )
    assert nlls.Status(int(sol.status)) is nlls.Status.CALLBACK
    assert sol.message.startswith("callback") and not bool(sol.success)
    assert int(sol.stats.steps) == 8
    assert_trees_identical(sol.params, recorder.infos[-1].params)
    assert float(sol.cost) == recorder.infos[-1].cost
    assert recorder.ended.status is nlls.Status.CALLBACK


def test_callbacks_outside_the_main_thread_give_the_same_iterates():
    """Outside the main thread the driver cannot hold back Ctrl-C and uses the program that does
    not donate its input state; the iterates stay the same."""
    p0, args = network_problem()
    whole = baselines.adam(network_residual, p0, args, max_steps=30, learning_rate=0.02)
    result = {}

    def run():
        result["sol"] = baselines.adam(
            network_residual,
            p0,
            args,
            max_steps=30,
            learning_rate=0.02,
            callbacks=[nlls.History()],
            callback_every=4,
        )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert_trees_identical(result["sol"].params, whole.params)
    assert len(result["sol"].history) == 1 + 8


def test_runs_under_jit_and_vmap_without_callbacks():
    x = jnp.linspace(0.0, 1.0, 20)
    ys = jnp.stack([2.0 * x + 1.0, -x + 3.0])

    def fit(y):
        return baselines.adam(
            lambda p, x, y: p[0] * x + p[1] - y, jnp.zeros(2), (x, y), learning_rate=0.05
        )

    sols = jax.jit(jax.vmap(fit))(ys)
    np.testing.assert_allclose(np.asarray(sols.params), [[2.0, 1.0], [-1.0, 3.0]], atol=1e-8)
    assert sols.message == [nlls.Status.MAX_STEPS.message] * 2
    bad = jax.jit(fit)(ys[0].at[3].set(jnp.nan))
    assert nlls.Status(int(bad.status)) is nlls.Status.NONFINITE_START
    np.testing.assert_array_equal(np.asarray(bad.params), [0.0, 0.0])


def test_keyboard_interrupt_in_a_callback_returns_the_last_point():
    p0, args = network_problem()
    seen, interrupter = Recorder(), Recorder(interrupt_at_step=5)
    sol = baselines.adam(network_residual, p0, args, callbacks=[seen, interrupter])
    assert nlls.Status(int(sol.status)) is nlls.Status.INTERRUPTED
    assert int(sol.stats.steps) == 5
    assert_trees_identical(sol.params, seen.infos[-1].params)
    assert interrupter.ended.status is nlls.Status.INTERRUPTED


def test_max_time_is_honoured():
    p0, args = network_problem()

    def run(max_time):
        return baselines.adam(
            network_residual, p0, args, callbacks=[lambda info: time.sleep(0.02)], max_time=max_time
        )

    run(0.0)  # compile first
    started = time.perf_counter()
    sol = run(0.2)
    elapsed = time.perf_counter() - started
    assert nlls.Status(int(sol.status)) is nlls.Status.TIME_LIMIT
    assert 0 < int(sol.stats.steps) < 100
    assert elapsed < 0.2 + 1.0
    at_once = baselines.adam(network_residual, p0, args, max_time=0.0)
    assert nlls.Status(int(at_once.status)) is nlls.Status.TIME_LIMIT
    assert int(at_once.stats.steps) == 0
    assert_trees_identical(at_once.params, p0)


def test_early_stopping_restores_the_best_params():
    """The metric (distance of x₀ from 0.3) is lowest part-way along Adam's path from 0 to x* ≈ 1."""
    a, b = linear_problem(jnp.float64)
    seen = {}

    def metric(p):
        return float((p[0] - 0.3) ** 2)

    stopper = nlls.EarlyStopping(metric, patience=3, name="distance")
    history = nlls.History()
    sol = baselines.adam(
        linear,
        jnp.zeros(3),
        (a, b),
        learning_rate=0.05,
        callbacks=[lambda info: seen.update({info.step: info.params}), history, stopper],
    )
    assert nlls.Status(int(sol.status)) is nlls.Status.CALLBACK
    values = {step: metric(params) for step, params in seen.items()} | {0: metric(jnp.zeros(3))}
    best_step = min(values, key=values.get)
    assert 0 < best_step < int(sol.stats.steps) == best_step + 3  # patience 3
    assert stopper.best_step == best_step
    np.testing.assert_array_equal(np.asarray(sol.params), np.asarray(seen[best_step]))
    # The solution is evaluated at the restored parameters; the counters are the whole run's.
    cost, _ = cost_and_grad_norm(linear, sol.params, (a, b))
    assert float(sol.cost) == pytest.approx(cost, rel=1e-14)
    np.testing.assert_allclose(
        np.asarray(sol.residual), np.asarray(linear(sol.params, a, b)), rtol=1e-14
    )
    np.testing.assert_allclose(np.asarray(sol.grad), np.asarray(a.T @ sol.residual), rtol=1e-12)
    assert int(sol.stats.nfev) == int(sol.stats.steps) + 1
    assert np.nanmin(history.as_dict()["distance"]) == pytest.approx(values[best_step])


def test_a_residual_that_turns_nan_stops_at_the_last_finite_point():
    """sqrt(θ) − 0.1 from θ = 1: Adam's steps of about the learning rate (0.3) walk θ below 0."""

    def residual(p):
        return jnp.sqrt(p) - 0.1

    sol = baselines.adam(residual, jnp.array([1.0]), learning_rate=0.3, max_steps=100)
    assert nlls.Status(int(sol.status)) is nlls.Status.NONFINITE_TRIALS
    assert not bool(sol.success)
    assert bool(jnp.all(jnp.isfinite(sol.params))) and float(sol.params[0]) > 0.0
    assert np.isfinite(float(sol.cost)) and np.all(np.isfinite(np.asarray(sol.grad)))
    assert int(sol.stats.rejected) == 1
    assert 1 <= int(sol.stats.steps) < 10
    assert int(sol.stats.nfev) == int(sol.stats.steps) + 2  # the start and the discarded point
    # The same with callbacks: the History ends at the last finite point.
    history = nlls.History()
    watched = baselines.adam(
        residual, jnp.array([1.0]), learning_rate=0.3, max_steps=100, callbacks=[history]
    )
    assert_trees_identical(watched.params, sol.params)
    data = history.as_dict()
    assert np.all(np.isfinite(data["cost"])) and data["cost"][-1] == float(sol.cost)
    assert not data["accepted"][-1]


def test_non_finite_start_raises():
    a, b = linear_problem(jnp.float64)
    with pytest.raises(ValueError, match="params0 is not finite"):
        baselines.adam(linear, jnp.array([jnp.nan, 0.0, 0.0]), (a, b))
    with pytest.raises(ValueError, match="not finite at params0"):
        baselines.adam(linear, jnp.zeros(3), (a, b.at[2].set(jnp.inf)))
    with pytest.raises(ValueError, match="not finite at params0"):
        baselines.adam(linear, jnp.zeros(3), (a, b.at[2].set(jnp.nan)), callbacks=[nlls.History()])


def test_checkpoint_is_refused(tmp_path):
    a, b = linear_problem(jnp.float64)
    with pytest.raises(ValueError, match="Checkpoint/resume is for least_squares"):
        baselines.adam(linear, jnp.zeros(3), (a, b), callbacks=[nlls.Checkpoint(tmp_path / "c")])


@pytest.mark.parametrize(
    ("optimiser", "options", "match"),
    [
        (baselines.adam, {"learning_rate": 0.0}, "learning_rate must be positive"),
        (baselines.adam, {"learning_rate": float("nan")}, "learning_rate must be finite"),
        (baselines.adam, {"b1": lambda count: 0.9}, "a schedule is taken by learning_rate only"),
        (baselines.adam, {"b1": 1.0}, r"b1 must be in \[0, 1\)"),
        (baselines.adam, {"eps": -1.0}, "eps must be non-negative"),
        (baselines.adam, {"max_steps": -1}, "max_steps must be a non-negative int"),
        (baselines.adam, {"max_steps": 10.0}, "max_steps must be a non-negative int"),
        (baselines.adam, {"max_steps": True}, "max_steps must be a non-negative int"),
        (baselines.adam, {"max_steps": 2**31}, "max_steps must be a non-negative int"),
        (baselines.adam, {"gtol": -1e-3}, "gtol must be non-negative"),
        (baselines.adam, {"callback_every": 0}, "callback_every must be a positive int"),
        (baselines.sgd, {"learning_rate": -0.1}, "learning_rate must be positive"),
        (baselines.sgd, {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        (baselines.sgd, {"nesterov": True}, "nesterov=True needs a momentum"),
        (baselines.lbfgs, {"memory_size": 0}, "memory_size must be a positive int"),
        (baselines.lbfgs, {"max_time": -1.0}, "max_time must be a non-negative number"),
    ],
)
def test_bad_options_raise(optimiser, options, match):
    a, b = linear_problem(jnp.float64)
    with pytest.raises(ValueError, match=match):
        optimiser(linear, jnp.zeros(3), (a, b), **options)


def test_dtype_mismatch_is_named():
    a, b = linear_problem(jnp.float64)
    with pytest.raises(ValueError, match="float64 but params0 is float32"):
        baselines.adam(linear, jnp.zeros(3, jnp.float32), (a, b))


def test_pytrees_and_non_array_arguments():
    """Parameters and residuals keep their structure; a function or a string among the args is
    static, part of the program (as with least_squares)."""
    a, b = linear_problem(jnp.float64)

    def residual(p, a, b, transform, name):
        assert name == "linear"
        r = transform(a @ jnp.stack([p["x"], p["y"]["z"][0], p["y"]["z"][1]])) - b
        return {"head": r[:10], "tail": r[10:]}

    p0 = {"x": 0.0, "y": {"z": jnp.zeros(2)}}
    args = (a, b, lambda z: z, "linear")
    sol = baselines.adam(residual, p0, args, learning_rate=0.05, max_steps=1000)
    assert jax.tree_util.tree_structure(sol.params) == jax.tree_util.tree_structure(p0)
    assert sol.residual["head"].shape == (10,) and sol.residual["tail"].shape == (20,)
    exact, *_ = np.linalg.lstsq(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(float(sol.params["x"]), exact[0], atol=1e-10)
    np.testing.assert_allclose(np.asarray(sol.params["y"]["z"]), exact[1:], atol=1e-10)


class CompileLog(logging.Handler):
    """Collects JAX's "Compiling ..." messages while ``jax.log_compiles()`` is on."""

    def __init__(self):
        super().__init__()
        self.compiled = []

    def emit(self, record):
        if record.getMessage().startswith("Compiling"):
            self.compiled.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("jax").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("jax").removeHandler(self)


def test_repeated_calls_do_not_recompile(monkeypatch):
    """One loop program per call signature, shared by runs with and without callbacks; the
    numerical options are traced."""
    # The driver donates segment buffers only under Python's own SIGINT handler; a test runner
    # started in the background inherits SIGINT ignored, which would switch to the other program.
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.default_int_handler)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    a, b = linear_problem(jnp.float64)
    shifted = a + 1.0

    def run(p0, a, **options):
        baselines.adam(linear, p0, (a, b), **options)
        baselines.adam(linear, p0, (a, b), callbacks=[nlls.History()], **options)

    nlls.plan._cached_plan.cache_clear()
    with CompileLog() as first, jax.log_compiles():
        run(jnp.zeros(3), a, max_steps=5)
    assert sum("jit(_advance)" in message for message in first.compiled) == 1
    with CompileLog() as again, jax.log_compiles():
        for learning_rate in (0.1, 0.01):
            run(jnp.zeros(3), a, learning_rate=learning_rate, b1=0.8, gtol=1e-9, max_steps=9)
        run(jnp.ones(3), shifted, max_steps=7)
    assert again.compiled == []


# ----------------------------------------------------------------------------------------------
# Any optax GradientTransformation, and schedules as learning rates.


def _optax_loop(transformation, residual, params, args, steps):
    """The independent reference: optax's own loop on mean(r²), written out, with the gradient
    ∇mean(r²) = (2/m)·Jᵀr as the baselines compute it."""
    import optax

    state = transformation.init(params)
    for _ in range(steps):
        r, pullback = jax.vjp(lambda p: residual(p, *args), params)
        gradient = (2.0 / r.size) * pullback(r)[0]
        updates, state = transformation.update(gradient, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_optax_transformation_runs_as_optax_runs_it(dtype):
    import optax

    a, b = linear_problem(dtype)
    chained = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.05))
    sol = baselines.optax_optimiser(linear, jnp.zeros(3, dtype), (a, b), chained, max_steps=60)
    expected = _optax_loop(chained, linear, jnp.zeros(3, dtype), (a, b), 60)
    rtol = 1e-10 if dtype == jnp.float64 else 2e-5
    np.testing.assert_allclose(np.asarray(sol.params), np.asarray(expected), rtol=rtol)
    assert sol.stats.method == "optax" and int(sol.stats.steps) == 60
    assert sol.status is nlls.Status.MAX_STEPS


def test_a_schedule_as_learning_rate_is_followed_and_reported():
    import optax

    a, b = linear_problem(jnp.float64)
    # Piecewise constant: its values are exact, so the compiled and the eager schedule agree to the
    # bit (a power, as in exponential_decay, can differ in its last bit once compiled).
    schedule = optax.piecewise_constant_schedule(0.1, {10: 0.5, 20: 0.5, 30: 0.5})
    history = nlls.History()
    sol = baselines.adam(
        linear,
        jnp.zeros(3),
        (a, b),
        learning_rate=schedule,
        max_steps=40,
        callbacks=[history],
        callback_every=10,
    )
    expected = _optax_loop(optax.adam(schedule), linear, jnp.zeros(3), (a, b), 40)
    np.testing.assert_allclose(np.asarray(sol.params), np.asarray(expected), rtol=1e-10)
    data = history.as_dict()
    np.testing.assert_allclose(data["damping"], [float(schedule(k)) for k in data["step"]])


def test_fit_takes_optax_transformations_full_batch_line_search_and_minibatch():
    import optax

    x = jnp.linspace(-1.0, 1.0, 40)
    features = jnp.stack([x, x**2, jnp.ones_like(x)], axis=1)
    y = (features @ jnp.array([0.5, -1.0, 2.0]))[:, None] + 0.01 * jnp.sin(9.0 * x)[:, None]
    model = (lambda p, xi: (xi @ p)[None], jnp.zeros(3))
    exact = np.linalg.lstsq(np.asarray(features), np.asarray(y[:, 0]), rcond=None)[0]
    # L-BFGS with its line search (a transformation taking extra arguments) reaches the minimum.
    lbfgs = nlls.fit(model, features, y, method=optax.lbfgs(), max_steps=100)
    np.testing.assert_allclose(np.asarray(lbfgs.model[1]), exact, rtol=1e-7)
    # SGD given as a transformation takes the same steps as method="sgd" (same batches too).
    for options in ({}, {"batch_size": 8, "epochs": 2}):
        named = nlls.fit(model, features, y, method="sgd", learning_rate=0.1, **options)
        given = nlls.fit(model, features, y, method=optax.sgd(0.1), **options)
        np.testing.assert_allclose(
            np.asarray(given.model[1]), np.asarray(named.model[1]), rtol=1e-12
        )
    injected = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    result = nlls.fit(model, features, y, method=injected, max_steps=5, callback_every=5)
    np.testing.assert_allclose(result.history.as_dict()["damping"], 0.1)


def test_optax_transformation_errors_name_the_fix():
    import optax

    a, b = linear_problem(jnp.float64)
    with pytest.raises(TypeError, match=r"optax GradientTransformation such as optax.adam"):
        baselines.optax_optimiser(linear, jnp.zeros(3), (a, b), "adam")
    model = (lambda p, xi: (xi @ p)[None], jnp.zeros(3))
    with pytest.raises(ValueError, match=r"learning_rate.*configure the optimiser itself"):
        nlls.fit(model, a, b[:, None], method=optax.sgd(0.1), batch_size=5, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"ftol is an option of the least-squares methods"):
        nlls.fit(model, a, b[:, None], method=optax.sgd(0.1), ftol=1e-3)
