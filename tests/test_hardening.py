"""Every loop ends: rejected trials shrink the step whatever the acceptance threshold, and the loop
bounds accepted plus rejected trials (``Status.MAX_ITERATIONS``)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from nlls import loop
from nlls.problem import FlatProblem
from nlls.solvers.base import simple_report
from nlls.termination import Status, Tolerances

jax.config.update("jax_enable_x64", True)


def rosenbrock(p):
    return jnp.array([10.0 * (p[1] - p[0] ** 2), 1.0 - p[0]])


X = jnp.linspace(0.0, 4.0, 30)
Y = 2.0 * jnp.exp(-1.3 * X) + 0.5


def decay(p):
    return p[0] * jnp.exp(-p[1] * X) + p[2] - Y


# Each of these looped forever: a rejected trial with 1/4 ≤ ρ ≤ η left the radius as it was, so
# the same trial was tried again, and max_steps counts accepted steps only.
@pytest.mark.parametrize(
    "method, residual, start, solution",
    [
        (nlls.TrustRegion(accept_threshold=0.5), rosenbrock, [-1.2, 1.0], [1.0, 1.0]),
        (nlls.Dogleg(accept_threshold=0.5), rosenbrock, [-1.2, 1.0], [1.0, 1.0]),
        (nlls.TrustRegion(accept_threshold=0.99), decay, [1.0, 1.0, 0.0], [2.0, 1.3, 0.5]),
        (nlls.Dogleg(accept_threshold=0.99), decay, [1.0, 1.0, 0.0], [2.0, 1.3, 0.5]),
        (
            nlls.LevenbergMarquardt(damping="trust_region", accept_threshold=0.99),
            decay,
            [1.0, 1.0, 0.0],
            [2.0, 1.3, 0.5],
        ),
        (
            nlls.TrustRegion(subproblem="steihaug", accept_threshold=0.9),
            rosenbrock,
            [-1.2, 1.0],
            [1.0, 1.0],
        ),
    ],
)
def test_a_high_acceptance_threshold_still_converges(method, residual, start, solution):
    sol = nlls.least_squares(residual, jnp.asarray(start), method=method)
    assert sol.success, sol.message
    np.testing.assert_allclose(sol.params, solution, rtol=1e-7)
    # One trial per iteration for these methods: well inside the loop's bound on rejections.
    assert int(sol.stats.rejected) <= 9 * int(sol.stats.steps) + 100


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nlls.Dogleg(accept_threshold=-1.0), r"accept_threshold must be in \[0, 1\)"),
        (lambda: nlls.Dogleg(accept_threshold=2.0), r"accept_threshold must be in \[0, 1\)"),
        (lambda: nlls.Dogleg(accept_threshold=float("nan")), "accept_threshold must be finite"),
        (lambda: nlls.Dogleg(accept_threshold=True), "accept_threshold must be a number"),
        (lambda: nlls.TrustRegion(initial_radius=float("inf")), "initial_radius must be finite"),
        (lambda: nlls.Dogleg(initial_radius=0.0), "initial_radius must be positive"),
        (lambda: nlls.LevenbergMarquardt(initial_damping=float("inf")), "initial_damping must be"),
        (lambda: nlls.LevenbergMarquardt(geodesic_ratio=-1.0), "geodesic_ratio must be positive"),
        (lambda: nlls.LevenbergMarquardt(geodesic="yes"), "geodesic must be True or False"),
        (
            lambda: nlls.GaussNewton(max_backtracks=-1),
            r"max_backtracks must be an int in \[0, 10000\]",
        ),
        (lambda: nlls.GaussNewton(max_backtracks=2.5), "max_backtracks must be an int"),
        (lambda: nlls.GaussNewton(max_backtracks=10**9), "max_backtracks must be an int"),
    ],
)
def test_method_options_that_could_stall_or_mislead_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_time": True}, "max_time must be a non-negative number of seconds"),
        ({"max_time": float("nan")}, "max_time must be a non-negative number of seconds"),
        ({"max_jacobian_bytes": float("inf")}, "max_jacobian_bytes must be positive and finite"),
    ],
)
def test_solve_options_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=message):
        nlls.least_squares(decay, jnp.asarray([1.0, 1.0, 0.0]), **options)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_parameters_are_refused_with_the_reason(dtype):
    with pytest.raises(ValueError, match="nlls solves in float32 or float64"):
        nlls.least_squares(
            lambda p: decay(p.astype(jnp.float32)).astype(p.dtype),
            jnp.asarray([1.0, 1.0, 0.0], dtype),
        )


class _NeverAccepts(eqx.Module):
    """A method whose every trial is rejected and whose verdict never ends the run: only the
    loop's bound on iterations can stop it."""

    budget = "steps"

    def step(self, problem, path, state):
        del problem, path
        false = jnp.asarray(False)
        zero = jnp.zeros(())
        return state, simple_report(false, zero, zero, zero, zero, 1, 0, jnp.asarray(True))

    def verdict(self, tol, report, before, after, problem):
        del tol, report, before, after, problem
        return jnp.asarray(Status.RUNNING, jnp.int32)


class _State(eqx.Module):
    point: jax.Array


@pytest.mark.parametrize("max_steps", [0, 1, 7, 2**31 - 1])
def test_the_loop_bounds_rejected_trials(max_steps):
    problem = FlatProblem(lambda p: p, (), lambda p: p, "fwd")
    zero = jnp.asarray(0, jnp.int32)
    state = loop.LoopState(
        method_state=_State(jnp.zeros(1)),
        iterations=zero,
        steps=zero,
        nfev=zero,
        njev=zero,
        rejected=zero,
        status=jnp.asarray(Status.RUNNING, jnp.int32),
        step_norm=jnp.zeros(()),
        accepted=jnp.asarray(False),
        walled=jnp.asarray(False),
    )
    if max_steps > 1000:  # the bound for a huge budget, without running 2·10⁹ iterations
        state = eqx.tree_at(lambda s: s.iterations, state, jnp.asarray(2**31 - 10, jnp.int32))
    tol = Tolerances(ftol=1e-8, xtol=1e-8, gtol=1e-8)
    ended = loop.run(_NeverAccepts(), problem, None, tol, state, np.int32(max_steps))
    if max_steps == 0:
        assert int(ended.status) == Status.MAX_STEPS  # the budget is spent before any trial
        return
    assert int(ended.status) == Status.MAX_ITERATIONS
    expected = min(max_steps, (2**31 - 1 - 100) // 10) * 10 + 100
    assert int(ended.iterations) == max(expected, int(state.iterations))
    assert int(ended.rejected) == int(ended.iterations) - int(state.iterations)
    assert not Status(int(ended.status)).converged


def decay_jacobian(p):
    e = jnp.exp(-p[1] * X)
    return jnp.stack([e, -p[0] * X * e, jnp.ones_like(X)], axis=1)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda p: -decay_jacobian(p),  # the sign
        lambda p: 1000.0 * decay_jacobian(p),  # the scale
        lambda p: decay_jacobian(p)[:, jnp.array([1, 0, 2])],  # the column order
        lambda p: jnp.ones((X.size, 3)),  # a constant
    ],
)
def test_a_wrong_user_jacobian_is_an_error_naming_the_check(wrong):
    start = jnp.asarray([1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="does not match the derivative of the residual"):
        nlls.least_squares(decay, start, jac=wrong)
    # check_jac=False trusts it (and the solve goes where that Jacobian leads).
    nlls.least_squares(decay, start, jac=wrong, check_jac=False, max_steps=3)


def test_a_right_user_jacobian_passes_the_check_and_solves():
    sol = nlls.least_squares(decay, jnp.asarray([1.0, 1.0, 0.0]), jac=decay_jacobian)
    np.testing.assert_allclose(sol.params, [2.0, 1.3, 0.5], rtol=1e-7)
    assert sol.stats.jac == "user"


def test_curve_fit_checks_the_model_jacobian():
    def model(x, a, k, c):
        return a * jnp.exp(-k * x) + c

    def wrong(x, a, k, c):  # ∂/∂k with the wrong sign
        e = jnp.exp(-k * x)
        return jnp.stack([e, a * x * e, jnp.ones_like(x)], axis=1)

    with pytest.raises(ValueError, match="does not match the derivative of the residual"):
        nlls.curve_fit(model, X, Y, p0=[1.0, 1.0, 0.0], jac=wrong)


def _rosenbrock_solve(**options):
    return nlls.least_squares(rosenbrock, jnp.asarray([-1.2, 1.0]), **options)


def test_a_checkpoint_that_cannot_be_written_warns_and_the_solve_returns(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    saver = nlls.Checkpoint(blocker / "fit.ckpt", every=2)  # its folder cannot be made
    with pytest.warns(nlls.CheckpointWarning, match="checkpoint not saved"):
        sol = _rosenbrock_solve(callbacks=[saver])
    assert sol.success
    np.testing.assert_allclose(sol.params, [1.0, 1.0], rtol=1e-7)
    assert saver.failed_saves >= 2  # during the solve and at its end


def test_a_failing_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "fit.ckpt"
    _rosenbrock_solve(callbacks=[nlls.Checkpoint(path, every=1)], max_steps=3)
    before = nlls.checkpoint.read_meta(path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nlls.checkpoint.os, "fsync", full_disk)
    with pytest.warns(nlls.CheckpointWarning, match="No space left"):
        sol = _rosenbrock_solve(callbacks=[nlls.Checkpoint(path, every=1)])
    assert sol.success
    assert nlls.checkpoint.read_meta(path) == before  # untouched, and still readable
    assert not list(tmp_path.glob(".fit.ckpt.*.tmp"))  # no temporary file left


def test_a_raising_callback_still_saves_the_final_checkpoint_then_raises(tmp_path):
    path = tmp_path / "fit.ckpt"

    def fails_at_step_4(info):
        if info.step >= 4:
            raise RuntimeError("metric server down")

    with pytest.raises(RuntimeError, match="metric server down"):
        _rosenbrock_solve(callbacks=[nlls.Checkpoint(path, every=100), fails_at_step_4])
    assert nlls.checkpoint.read_meta(path)["step"] == 4
    resumed = _rosenbrock_solve(resume=path)
    straight = _rosenbrock_solve()
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_a_save_removes_temporary_files_a_killed_save_left(tmp_path):
    orphan = tmp_path / ".fit.ckpt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    _rosenbrock_solve(callbacks=[nlls.Checkpoint(tmp_path / "fit.ckpt")])
    assert not orphan.exists()
    assert (tmp_path / "fit.ckpt").exists()


def test_a_checkpoint_of_other_data_or_another_residual_is_refused(tmp_path):
    path = tmp_path / "fit.ckpt"
    start = jnp.asarray([1.0, 1.0, 0.0])

    def residual(p, x, y):
        return p[0] * jnp.exp(-p[1] * x) + p[2] - y

    nlls.least_squares(residual, start, args=(X, Y), max_steps=2, callbacks=[nlls.Checkpoint(path)])
    # The same residual, shapes and method, other data: the saved cost would be a lie here.
    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(residual, start, args=(X, 2.0 * Y), resume=path)

    def other(p, x, y):  # the same shapes, another function
        return p[0] * jnp.exp(-p[1] * x) - p[2] - y

    with pytest.raises(nlls.CheckpointError, match="different solve"):
        nlls.least_squares(other, start, args=(X, Y), resume=path)
    # The same residual written anew (same code) and the same data resume, and end where a solve
    # that was never stopped ends.
    again = nlls.least_squares(
        lambda p, x, y: p[0] * jnp.exp(-p[1] * x) + p[2] - y, start, args=(X, Y), resume=path
    )
    straight = nlls.least_squares(residual, start, args=(X, Y))
    np.testing.assert_array_equal(again.params, straight.params)


def test_digests_are_stable_and_tell_code_and_data_apart():
    from nlls.fingerprint import digest

    def make(k):
        return lambda p: p - k

    assert digest(make(1.0)) == digest(make(1.0))
    assert digest(make(1.0)) != digest(make(2.0))
    assert digest((X, Y)) == digest((jnp.array(X), np.asarray(Y)))
    assert digest((X, Y)) != digest((X, Y.at[3].add(1e-12)))
    assert digest(lambda p: p + 1) != digest(lambda p: p - 1)


KILLED_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import nlls
rng = np.random.default_rng(0)
a, b = jnp.asarray(rng.standard_normal((300, 60))), jnp.asarray(rng.standard_normal((60, 60)))
y = jnp.asarray(rng.standard_normal(300))
def residual(p, a, b, y):
    return a @ jnp.tanh(b @ p) - y
options = dict(args=(a, b, y), ftol=0.0, xtol=0.0, gtol=0.0, max_steps=400)
nlls.least_squares(residual, jnp.zeros(60), callbacks=[nlls.Checkpoint(sys.argv[1] + ".warm")], **options)
print("go", flush=True)
nlls.least_squares(residual, jnp.zeros(60), callbacks=[nlls.Checkpoint(sys.argv[1], every=1)], **options)
print("done", flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_saves_always_leaves_a_checkpoint_that_resumes_to_the_same_end(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(1)
    script = tmp_path / "solve.py"
    script.write_text(KILLED_SCRIPT)
    namespace: dict = {}
    exec(KILLED_SCRIPT.split("options = ")[0].replace("import sys", ""), namespace)
    residual, args = namespace["residual"], (namespace["a"], namespace["b"], namespace["y"])
    options = dict(args=args, ftol=0.0, xtol=0.0, gtol=0.0, max_steps=400)
    straight = nlls.least_squares(residual, jnp.zeros(60), **options)
    kills = resumed_count = 0
    for round_ in range(20):
        path = tmp_path / f"fit{round_}.ckpt"
        process = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout.readline().strip() == "go"
            time.sleep(rng.uniform(0.02, 0.4))
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=120)
        kills += process.returncode == -signal.SIGKILL
        if not path.exists():  # killed before its first save
            continue
        nlls.checkpoint.read_meta(path)  # loadable (a CheckpointError would fail the test)
        resumed = nlls.least_squares(residual, jnp.zeros(60), resume=path, **options)
        np.testing.assert_array_equal(resumed.params, straight.params)
        resumed_count += 1
    # Most rounds were killed mid-solve (not after it ended), with a checkpoint on disk.
    assert kills >= 15 and resumed_count >= 15


SLOW_SOLVE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore SIGINT)
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import nlls

def heavy(p):
    # About 10 ms of work per evaluation that leaves the residual unchanged.
    a = jnp.eye(120) * p[0]
    w = jax.lax.fori_loop(0, 150, lambda i, w: jnp.tanh(w @ a), jnp.ones((120, 120)))
    return 1e-300 * jnp.sum(w)

def residual(p):
    # No minimum: each Gauss-Newton step lowers p by 1 and the cost by e², up to max_steps.
    return jnp.exp(p) + heavy(p)

p0 = jnp.asarray([10.0])
options = dict(method="gn", ftol=0.0, xtol=0.0, gtol=0.0)
nlls.least_squares(residual, p0, max_steps=1, **options)  # compiles the one program
started = time.perf_counter()
nlls.least_squares(residual, p0, max_steps=25, **options)
full = time.perf_counter() - started
print("ready", flush=True)
try:
    nlls.least_squares(residual, p0, max_steps=25, **options)
    print("finished", full, flush=True)
except KeyboardInterrupt:
    print("interrupted", full, time.perf_counter() - float(sys.stdin.readline()), flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_ends_a_plain_call_while_its_program_runs():
    """A plain call (no callbacks: one compiled program) raises ``KeyboardInterrupt`` on Ctrl-C
    while its program still runs (JAX's wait for the result checks for signals), not when the
    solve has ended. The program runs on to its end, which the iteration cap bounds."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_SOLVE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        child.stdin.write(f"{time.perf_counter()}\n")
        child.stdin.flush()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=300)
    finally:
        child.kill()
    outcome, full, latency = out.split()
    assert outcome == "interrupted"
    assert float(full) > 1.0  # the uninterrupted solve, for scale
    assert float(latency) < 0.25 * float(full)
