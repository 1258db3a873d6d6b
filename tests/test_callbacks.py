"""Callbacks and the segmented host driver (``nlls.callbacks``, ``nlls.driver``, ``nlls.checkpoint``)."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def rosenbrock(p):
    return jnp.array([p[0] - 1.0, 10.0 * (p[1] - p[0] ** 2)])


ROSENBROCK_START = jnp.array([-1.2, 1.0])


def network(p, x):
    hidden = jnp.tanh(x[:, None] * p["w1"] + p["b1"])
    return hidden @ p["w2"] + p["b2"]


def network_residual(p, x, y):
    return network(p, x) - y


def network_problem(dtype=jnp.float64, width=8, points=50):
    """A small tanh network fitted to sin(3x): many steps, no early convergence."""
    x = jnp.linspace(-1.0, 1.0, points, dtype=dtype)
    y = jnp.sin(3.0 * x)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    p0 = {
        "w1": jax.random.normal(k1, (width,), dtype),
        "b1": jnp.zeros(width, dtype),
        "w2": 0.3 * jax.random.normal(k2, (width,), dtype),
        "b2": jnp.zeros((), dtype),
    }
    return p0, (x, y)


def assert_trees_identical(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for left, right in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


class Recorder:
    """Keeps every StepInfo it sees (and the ones of on_start/on_end)."""

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


def test_callback_returning_true_at_step_5_stops_there():
    p0, args = network_problem()
    recorder = Recorder(stop_at_step=5)
    sol = nlls.least_squares(network_residual, p0, args, callbacks=[recorder])
    assert int(sol.stats.steps) == 5
    assert nlls.Status(int(sol.status)) == nlls.Status.CALLBACK
    assert sol.message.startswith("callback")
    assert not bool(sol.success)
    assert recorder.started.iteration == 0 and recorder.started.step == 0
    assert recorder.ended.status == nlls.Status.CALLBACK
    # The solution is the point the callback last saw.
    assert_trees_identical(sol.params, recorder.infos[-1].params)
    assert float(sol.cost) == recorder.infos[-1].cost


def test_callbacks_see_every_iteration_with_consistent_counters():
    p0, args = network_problem()
    recorder = Recorder()
    sol = nlls.least_squares(network_residual, p0, args, callbacks=[recorder], max_steps=30)
    iterations = [info.iteration for info in recorder.infos]
    assert iterations == list(range(1, len(iterations) + 1))
    steps = np.array([info.step for info in recorder.infos])
    accepted = np.array([info.accepted for info in recorder.infos])
    # The step count rises exactly at the accepted trials.
    np.testing.assert_array_equal(np.diff(np.concatenate([[0], steps])), accepted.astype(int))
    assert recorder.infos[-1].step == int(sol.stats.steps)
    assert recorder.infos[-1].nfev == int(sol.stats.nfev)
    assert recorder.infos[-1].njev == int(sol.stats.njev)
    costs = np.array([info.cost for info in recorder.infos])
    assert np.all(np.diff(costs) <= 0)  # LM accepts only decreases
    for info in recorder.infos:
        grad = jax.grad(lambda p: 0.5 * jnp.sum(network_residual(p, *args) ** 2))(info.params)
        expected = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grad))
        assert info.grad_norm == pytest.approx(expected, rel=1e-8)
    assert all(info.damping > 0 for info in recorder.infos)
    assert all(info.step_norm > 0 for info in recorder.infos)
    times = [info.time for info in recorder.infos]
    assert times == sorted(times)


@pytest.mark.parametrize(
    "method, linear",
    [
        ("lm", "auto"),
        ("gn", "auto"),
        ("dogleg", "auto"),
        (nlls.LevenbergMarquardt(damping="trust_region"), "auto"),
        (nlls.LevenbergMarquardt(geodesic=True), "auto"),
        ("trust_region", "auto"),
        ("lm", "krylov"),
        ("trust_region", "krylov"),
    ],
    ids=[
        "lm",
        "gn",
        "dogleg",
        "lm-trust-region",
        "lm-geodesic",
        "steihaug",
        "lm-krylov",
        "steihaug-krylov",
    ],
)
# float32 is in `make test-all` (slow): the segments are cut by the same host code in either dtype.
@pytest.mark.parametrize(
    "dtype",
    [jnp.float64, pytest.param(jnp.float32, marks=pytest.mark.slow)],
    ids=["float64", "float32"],
)
def test_iterates_do_not_depend_on_segmentation(method, linear, dtype):
    # Gauss–Newton's line search gives up early on the default network; a narrower one keeps it going.
    p0, args = network_problem(dtype, **({"width": 4, "points": 80} if method == "gn" else {}))
    whole = nlls.least_squares(
        network_residual, p0, args, method=method, linear=linear, max_steps=40
    )
    assert whole.stats.linear == ("krylov" if linear == "krylov" else "normal")
    assert int(whole.stats.steps) > 7
    for every in (1, 7):
        recorder = Recorder()
        cut = nlls.least_squares(
            network_residual,
            p0,
            args,
            method=method,
            linear=linear,
            max_steps=40,
            callbacks=[recorder],
            callback_every=every,
        )
        assert_trees_identical(cut.params, whole.params)
        assert_trees_identical(cut.residual, whole.residual)
        assert float(cut.cost) == float(whole.cost)
        assert int(cut.status) == int(whole.status)
        for name in ("steps", "nfev", "njev", "rejected"):
            assert int(getattr(cut.stats, name)) == int(getattr(whole.stats, name))
        iterations = [info.iteration for info in recorder.infos]
        gaps = np.diff([0, *iterations])
        assert np.all(gaps[:-1] == every) and 1 <= gaps[-1] <= every  # the last may end early


def test_iterates_of_every_segment_match_single_step_runs():
    """The points seen with callback_every=7 are among those seen with callback_every=1."""
    p0, args = network_problem()
    fine, coarse = Recorder(), Recorder()
    nlls.least_squares(network_residual, p0, args, max_steps=25, callbacks=[fine])
    nlls.least_squares(
        network_residual, p0, args, max_steps=25, callbacks=[coarse], callback_every=7
    )
    by_iteration = {info.iteration: info for info in fine.infos}
    for info in coarse.infos:
        assert_trees_identical(info.params, by_iteration[info.iteration].params)
        assert info.damping == by_iteration[info.iteration].damping


def test_callback_return_values_other_than_true_continue():
    answers = iter([None, 1, "yes", np.float64(1.0), jnp.array([True]), np.bool_(False)])
    calls = []

    def callback(info):
        calls.append(info.iteration)
        return next(answers, None)

    sol = nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[callback])
    assert sol.success
    assert len(calls) > 6
    stop_numpy = nlls.least_squares(
        rosenbrock, ROSENBROCK_START, callbacks=[lambda info: np.bool_(info.iteration == 2)]
    )
    stop_jax = nlls.least_squares(
        rosenbrock, ROSENBROCK_START, callbacks=[lambda info: jnp.asarray(info.iteration == 3)]
    )
    assert nlls.Status(int(stop_numpy.status)) == nlls.Status.CALLBACK
    assert nlls.Status(int(stop_jax.status)) == nlls.Status.CALLBACK


def test_history_records_columns_and_is_returned(tmp_path):
    p0, args = network_problem()
    history = nlls.History()
    sol = nlls.least_squares(network_residual, p0, args, max_steps=20, callbacks=[history])
    assert sol.history is history
    data = history.as_dict()
    assert set(nlls.callbacks.COLUMNS) <= set(data)
    assert len(history) == int(data["iteration"][-1]) + 1  # the start, then every iteration
    assert data["iteration"][0] == 0 and data["step"][0] == 0
    assert data["step"][-1] == int(sol.stats.steps)
    assert data["cost"][-1] == float(sol.cost)
    assert data["nfev"][-1] == int(sol.stats.nfev)
    assert data["accepted"].dtype == bool
    assert np.all(np.diff(data["cost"]) <= 0)
    path = tmp_path / "history.npz"
    history.save(path)
    with np.load(path) as saved:
        for name, column in data.items():
            np.testing.assert_array_equal(saved[name], column)
    # A History used again starts afresh.
    nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[history])
    assert history.as_dict()["cost"][0] == pytest.approx(
        float(0.5 * jnp.sum(rosenbrock(ROSENBROCK_START) ** 2))
    )


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = nlls.History()
    nlls.least_squares(
        rosenbrock,
        ROSENBROCK_START,
        callbacks=[history, nlls.Metrics({"distance": lambda p: jnp.linalg.norm(p - 1.0)})],
    )
    path = tmp_path / "history.png"
    history.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    history = nlls.History()
    nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[history])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        history.plot(tmp_path / "x.png")


def test_metrics_go_into_the_history():
    p0, (x, y) = network_problem()
    x_val = jnp.linspace(-0.95, 0.95, 17)
    y_val = jnp.sin(3.0 * x_val)

    def val_mse(p):
        return jnp.mean((network(p, x_val) - y_val) ** 2)

    seen = []
    history = nlls.History()
    metrics = nlls.Metrics({"val_mse": val_mse}, every=2)
    sol = nlls.least_squares(
        network_residual,
        p0,
        (x, y),
        max_steps=15,
        # The History comes first: metrics added later to the same step are still recorded.
        callbacks=[history, metrics, lambda info: seen.append(info.params)],
    )
    data = history.as_dict()
    column = data["val_mse"]
    assert column[0] == pytest.approx(float(val_mse(p0)))
    assert column[-1] == pytest.approx(float(val_mse(sol.params)))
    # Every second call computes it; the others are NaN.
    assert np.all(np.isfinite(column[2:-1:2])) and np.all(np.isnan(column[1:-1:2]))
    for row in range(2, len(seen), 2):
        assert column[row] == pytest.approx(float(val_mse(seen[row - 1])))


def test_metrics_reject_bad_arguments():
    with pytest.raises(TypeError, match="mapping"):
        nlls.Metrics([lambda p: 0.0])
    with pytest.raises(ValueError, match="clash"):
        nlls.Metrics({"cost": lambda p: 0.0})
    with pytest.raises(ValueError, match="every"):
        nlls.Metrics({"a": lambda p: 0.0}, every=0)


def test_early_stopping_restores_the_best_params():
    """The metric (distance of x from 0.3) is lowest part-way along Rosenbrock's valley."""
    seen = {}

    def metric(p):
        return float((p[0] - 0.3) ** 2)

    def remember(info):
        seen[info.step] = info.params

    stopper = nlls.EarlyStopping(metric, patience=3, name="distance")
    history = nlls.History()
    sol = nlls.least_squares(
        rosenbrock, ROSENBROCK_START, callbacks=[remember, history, stopper], gtol=0.0
    )
    assert nlls.Status(int(sol.status)) == nlls.Status.CALLBACK
    values = {step: metric(params) for step, params in seen.items()}
    values[0] = metric(ROSENBROCK_START)
    best_step = min(values, key=values.get)
    assert 0 < best_step < int(sol.stats.steps)
    assert stopper.best_step == best_step
    np.testing.assert_array_equal(np.asarray(sol.params), np.asarray(seen[best_step]))
    # The solution is evaluated at the restored parameters.
    np.testing.assert_allclose(
        float(sol.cost), float(0.5 * jnp.sum(rosenbrock(sol.params) ** 2)), rtol=1e-14
    )
    # It stopped after `patience` evaluations without improvement (accepted steps only).
    accepted_after = [s for s in seen if s > best_step]
    assert len(set(accepted_after)) == 3
    recorded = history.as_dict()["distance"]
    assert np.nanmin(recorded) == pytest.approx(values[best_step])


def test_early_stopping_validates_options():
    with pytest.raises(TypeError):
        nlls.EarlyStopping(3.0)
    with pytest.raises(ValueError, match="patience"):
        nlls.EarlyStopping(lambda p: 0.0, patience=0)
    with pytest.raises(ValueError, match="min_delta"):
        nlls.EarlyStopping(lambda p: 0.0, min_delta=-1.0)


def test_max_time_is_honoured():
    def slow(info):
        time.sleep(0.05)

    def solve(max_time):
        return nlls.least_squares(
            rosenbrock, ROSENBROCK_START, callbacks=[slow], max_time=max_time, gtol=0.0, ftol=0.0
        )

    solve(None)  # compile first: the time limit counts compilation too
    started = time.perf_counter()
    sol = solve(0.2)
    elapsed = time.perf_counter() - started
    assert nlls.Status(int(sol.status)) == nlls.Status.TIME_LIMIT
    assert sol.message.startswith("time limit")
    assert 0 < int(sol.stats.steps) < 20
    assert elapsed < 0.2 + 1.0  # one segment and one callback past the limit, plus slack


def test_max_time_without_callbacks_and_zero_time():
    sol = nlls.least_squares(rosenbrock, ROSENBROCK_START, max_time=0.0)
    assert nlls.Status(int(sol.status)) == nlls.Status.TIME_LIMIT
    assert int(sol.stats.steps) == 0
    np.testing.assert_array_equal(np.asarray(sol.params), np.asarray(ROSENBROCK_START))
    plenty = nlls.least_squares(rosenbrock, ROSENBROCK_START, max_time=60.0)
    assert plenty.success


def test_keyboard_interrupt_returns_the_last_point(tmp_path):
    p0, args = network_problem()
    path = tmp_path / "fit.ckpt"
    recorder = Recorder(interrupt_at_step=7)
    seen = Recorder()
    sol = nlls.least_squares(
        network_residual,
        p0,
        args,
        callbacks=[seen, recorder, nlls.Checkpoint(path, every=100)],
    )
    assert nlls.Status(int(sol.status)) == nlls.Status.INTERRUPTED
    assert sol.message.startswith("interrupted")
    assert int(sol.stats.steps) == 7
    assert_trees_identical(sol.params, seen.infos[-1].params)
    # LM's cost never rises, so the last point is the best one seen.
    assert float(sol.cost) == min(info.cost for info in seen.infos)
    assert recorder.ended.status == nlls.Status.INTERRUPTED
    # The final checkpoint was written and holds that point.
    assert checkpoint.read_meta(path)["step"] == 7


def test_ctrl_c_ends_the_solve_after_the_current_segment(tmp_path):
    """A real SIGINT in the middle of a solve: the solve returns the last point with status
    "interrupted" and writes its final checkpoint; the SIGINT handler is put back afterwards."""
    script = textwrap.dedent(
        f"""
        import signal, sys, time, jax
        # Python's own handler, as in a terminal, even when the test runner was started in the
        # background (where SIGINT is inherited ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, {str(ROOT)!r})
        import nlls
        from nlls import checkpoint
        from tests.test_callbacks import network_problem, network_residual
        p0, args = network_problem()

        def announce(info):
            if info.iteration == 3:
                print("running", flush=True)
            time.sleep(0.01)

        sol = nlls.least_squares(
            network_residual, p0, args, max_steps=100000, ftol=0.0, xtol=0.0, gtol=0.0,
            callbacks=[announce, nlls.Checkpoint(sys.argv[1], every=1000000)],
        )
        print(nlls.Status(int(sol.status)).name, int(sol.stats.steps),
              checkpoint.read_meta(sys.argv[1])["step"],
              signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
        """
    )
    path = tmp_path / "fit.ckpt"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout.readline().strip() == "running"
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=120)
    finally:
        child.kill()
    status, steps, saved, handler_restored = out.split()
    assert status == "INTERRUPTED"
    assert int(steps) >= 3 and int(saved) == int(steps)
    assert handler_restored == "True"


def test_checkpoint_resume_in_a_new_process_is_bit_identical(tmp_path):
    """Checkpoint at step 10 of 40 and stop; a new process resumes and ends where an uninterrupted
    solve ends."""
    script = textwrap.dedent(
        f"""
        import sys, jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, {str(ROOT)!r})
        import nlls
        from tests.test_callbacks import network_problem, network_residual
        p0, args = network_problem()
        sol = nlls.least_squares(network_residual, p0, args, max_steps=40, resume=sys.argv[1])
        leaves = jax.tree_util.tree_leaves(sol.params)
        np.savez(sys.argv[2], *leaves, steps=int(sol.stats.steps), status=int(sol.status))
        """
    )
    p0, args = network_problem()
    whole = nlls.least_squares(network_residual, p0, args, max_steps=40)
    assert nlls.Status(int(whole.status)) == nlls.Status.MAX_STEPS
    path = tmp_path / "fit.ckpt"
    stopped = nlls.least_squares(
        network_residual,
        p0,
        args,
        max_steps=40,
        callbacks=[nlls.Checkpoint(path, every=10), lambda info: info.step >= 10],
    )
    assert int(stopped.stats.steps) == 10
    assert checkpoint.read_meta(path)["step"] == 10
    out = tmp_path / "resumed.npz"
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(out)],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with np.load(out) as resumed:
        assert int(resumed["steps"]) == 40
        assert int(resumed["status"]) == int(nlls.Status.MAX_STEPS)
        for i, leaf in enumerate(jax.tree_util.tree_leaves(whole.params)):
            np.testing.assert_array_equal(resumed[f"arr_{i}"], np.asarray(leaf))


def test_resume_in_process_with_callbacks_and_history(tmp_path):
    p0, args = network_problem()
    whole = nlls.least_squares(network_residual, p0, args, max_steps=30)
    path = tmp_path / "fit.ckpt"
    nlls.least_squares(
        network_residual,
        p0,
        args,
        max_steps=30,
        callbacks=[nlls.Checkpoint(path, every=4), lambda info: info.step >= 13],
        callback_every=3,
    )
    assert checkpoint.read_meta(path)["step"] >= 13
    saved_step = checkpoint.read_meta(path)["step"]
    history = nlls.History()
    resumed = nlls.least_squares(
        network_residual, p0, args, max_steps=30, resume=path, callbacks=[history]
    )
    assert_trees_identical(resumed.params, whole.params)
    assert int(resumed.stats.nfev) == int(whole.stats.nfev)
    assert history.as_dict()["step"][0] == saved_step


def test_a_solve_that_ran_out_of_steps_continues_from_its_checkpoint(tmp_path):
    p0, args = network_problem(jnp.float32)
    path = tmp_path / "fit.ckpt"
    short = nlls.least_squares(
        network_residual, p0, args, max_steps=12, callbacks=[nlls.Checkpoint(path)]
    )
    assert nlls.Status(int(short.status)) == nlls.Status.MAX_STEPS
    longer = nlls.least_squares(network_residual, p0, args, max_steps=30, resume=path)
    whole = nlls.least_squares(network_residual, p0, args, max_steps=30)
    assert int(longer.stats.steps) == 30
    assert_trees_identical(longer.params, whole.params)
    assert int(longer.stats.nfev) == int(whole.stats.nfev)


def test_resuming_a_finished_solve_ends_at_once(tmp_path):
    path = tmp_path / "done.ckpt"
    sol = nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[nlls.Checkpoint(path)])
    assert sol.success
    recorder = Recorder()
    again = nlls.least_squares(rosenbrock, ROSENBROCK_START, resume=path, callbacks=[recorder])
    assert int(again.status) == int(sol.status)
    assert recorder.infos == []  # no segment ran
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(sol.params))


def test_corrupt_checkpoints_are_refused(tmp_path):
    p0, args = network_problem()
    path = tmp_path / "fit.ckpt"
    nlls.least_squares(
        network_residual, p0, args, max_steps=5, callbacks=[nlls.Checkpoint(path, every=1)]
    )
    data = path.read_bytes()

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    flipped = tmp_path / "flipped.ckpt"
    damaged = bytearray(data)
    # Damage the stored bytes of a state array (not the zip headers): the CRC check catches it.
    offset = data.index(b"state_0.npy") + 200
    damaged[offset] ^= 0xFF
    flipped.write_bytes(bytes(damaged))
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array('{"format": "something-else"}'))

    for bad in (truncated, garbage, flipped, other):
        with pytest.raises(nlls.CheckpointError, match="checkpoint"):
            nlls.least_squares(network_residual, p0, args, resume=bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        nlls.least_squares(network_residual, p0, args, resume=tmp_path / "missing.ckpt")


def test_mismatched_checkpoints_are_refused(tmp_path):
    p0, args = network_problem()
    path = tmp_path / "fit.ckpt"
    nlls.least_squares(
        network_residual, p0, args, max_steps=5, callbacks=[nlls.Checkpoint(path, every=1)]
    )
    wider, wider_args = network_problem(width=9)
    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(network_residual, wider, wider_args, resume=path)
    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(network_residual, p0, args, method="dogleg", resume=path)
    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(network_residual, p0, args, ftol=1e-3, resume=path)
    p32, args32 = network_problem(jnp.float32)
    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(network_residual, p32, args32, resume=path)


def test_checkpoint_saves_are_atomic(tmp_path, monkeypatch):
    p0, args = network_problem()
    path = tmp_path / "fit.ckpt"
    nlls.least_squares(
        network_residual, p0, args, max_steps=3, callbacks=[nlls.Checkpoint(path, every=1)]
    )
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    # A failed save warns and the solve goes on to its result (nothing lost); the file on disk is
    # the previous checkpoint, whole.
    with pytest.warns(nlls.CheckpointWarning, match="disk full"):
        sol = nlls.least_squares(
            network_residual, p0, args, max_steps=6, callbacks=[nlls.Checkpoint(path, every=1)]
        )
    assert int(sol.stats.steps) == 6
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.ckpt"]


def test_checkpoint_rejects_bad_every():
    with pytest.raises(ValueError, match="every"):
        nlls.Checkpoint("x.ckpt", every=0)


def test_progress_bar_is_quiet_off_a_terminal_and_draws_when_asked(capsys):
    nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[nlls.ProgressBar()])
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    stream = io.StringIO()
    bar = nlls.ProgressBar(file=stream, disable=False, mininterval=0)
    sol = nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[bar])
    text = stream.getvalue()
    assert "cost=" in text and "g=" in text and "damping=" in text
    # The bar closes at the real end: the steps taken, at 100%, not a fraction of max_steps.
    steps = int(sol.stats.steps)
    last = text.split("\r")[-1]
    assert f"{steps}/{steps}" in last and "100%" in last, last
    assert nlls.Status(int(sol.status)).name.lower() in last


def test_bad_callback_options_are_refused():
    with pytest.raises(TypeError, match="callable"):
        nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[3])
    with pytest.raises(ValueError, match="callback_every"):
        nlls.least_squares(rosenbrock, ROSENBROCK_START, callbacks=[print], callback_every=0)
    with pytest.raises(ValueError, match="max_time"):
        nlls.least_squares(rosenbrock, ROSENBROCK_START, max_time=-1.0)


def test_callbacks_cannot_run_under_jit():
    @jax.jit
    def solve(p):
        return nlls.least_squares(rosenbrock, p, callbacks=[lambda info: None]).params

    with pytest.raises(ValueError, match="cannot be used inside jax.jit"):
        solve(ROSENBROCK_START)


def test_non_finite_start_still_raises_with_callbacks():
    recorder = Recorder()
    with pytest.raises(ValueError, match="not finite"):
        nlls.least_squares(rosenbrock, jnp.array([math.nan, 1.0]), callbacks=[recorder])
    assert recorder.started is None
