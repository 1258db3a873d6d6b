"""One BLAS thread during a solve, and the caller's setting back after it (``nlls.threads``).

Every test starts from a setting that is neither 1 nor a likely default (3 threads, set with
threadpoolctl as a user would), so that "put back" and "held at 1" cannot both pass by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
import threadpoolctl

import nlls

USER_THREADS = 3
ROOT = Path(__file__).resolve().parents[1]

x = jnp.linspace(0.0, 1.0, 20)
y = 2.0 * jnp.exp(-1.5 * x) + 0.5
START = jnp.array([1.0, 1.0, 0.0])


def blas_threads() -> dict[str, int]:
    """The thread count of every BLAS library loaded, by file."""
    return {
        library["filepath"]: library["num_threads"]
        for library in threadpoolctl.threadpool_info()
        if library["user_api"] == "blas"
    }


def decay(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


seen_while_running: set[int] = set()


def watched_decay(p, x, y):
    """``decay``, noting the BLAS thread counts each time the compiled program evaluates it."""
    jax.debug.callback(lambda: seen_while_running.update(blas_threads().values()))
    return decay(p, x, y)


@pytest.fixture
def user_setting():
    """The user's own BLAS setting around the test: ``USER_THREADS`` in every library, including
    scipy's OpenBLAS, where jaxlib's CPU LAPACK kernels live (loaded here if not yet)."""
    pytest.importorskip("scipy.linalg.cython_lapack")
    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control is loaded")
    with threadpoolctl.threadpool_limits(limits=USER_THREADS, user_api="blas"):
        setting = blas_threads()
        assert set(setting.values()) == {USER_THREADS}
        yield setting


def test_a_plain_solve_runs_its_program_on_one_blas_thread_and_puts_the_setting_back(
    user_setting,
):
    seen_while_running.clear()
    sol = nlls.least_squares(watched_decay, START, args=(x, y))
    assert sol.success
    assert seen_while_running == {1}  # read by the compiled program itself, as it ran
    assert blas_threads() == user_setting


def test_a_driven_solve_holds_one_blas_thread_through_segments_and_callbacks(user_setting):
    inside = []
    history = nlls.History()
    sol = nlls.least_squares(
        decay, START, args=(x, y), callbacks=[history, lambda info: inside.append(blas_threads())]
    )
    assert sol.success and len(inside) == sol.stats.steps + sol.stats.rejected
    assert all(set(threads.values()) == {1} for threads in inside)
    assert blas_threads() == user_setting


def test_the_setting_is_put_back_when_a_callback_raises(user_setting):
    def fail(info):
        if info.step == 2:
            raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        nlls.least_squares(decay, START, args=(x, y), callbacks=[fail])
    assert blas_threads() == user_setting


@pytest.mark.parametrize("driven", [False, True], ids=["plain", "driven"])
def test_the_setting_is_put_back_when_the_solve_finds_a_non_finite_start(user_setting, driven):
    def undefined_at_start(p, x, y):  # sqrt(-1) at p = 1: found inside the compiled solve
        return jnp.sqrt(p[0] - 2.0) * x - y

    callbacks = [nlls.History()] if driven else []
    with pytest.raises(ValueError, match="not finite at params0"):
        nlls.least_squares(undefined_at_start, START, args=(x, y), callbacks=callbacks)
    assert blas_threads() == user_setting


def test_a_solve_started_by_a_callback_leaves_the_outer_solve_on_one_blas_thread(user_setting):
    after_inner = []

    def solve_again(info):
        inner = nlls.least_squares(decay, START, args=(x, y))
        after_inner.append((bool(inner.success), blas_threads()))

    nlls.least_squares(decay, START, args=(x, y), callbacks=[solve_again])
    assert after_inner
    assert all(ok and set(threads.values()) == {1} for ok, threads in after_inner)
    assert blas_threads() == user_setting


def test_solves_in_two_threads_at_once_leave_the_process_default_unchanged():
    pytest.importorskip("scipy.linalg.cython_lapack")
    before = blas_threads()
    if set(before.values()) <= {1}:
        pytest.skip("the BLAS libraries already run one thread: nothing to put back")
    started = threading.Barrier(2)
    results = []

    def solve():
        started.wait()
        overlap = lambda info: threading.Event().wait(0.005)  # noqa: E731
        results.append(nlls.least_squares(decay, START, args=(x, y), callbacks=[overlap]))

    threads = [threading.Thread(target=solve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and all(bool(sol.success) for sol in results)
    assert blas_threads() == before


def test_under_the_users_jit_the_program_runs_outside_nlls_with_the_users_setting(user_setting):
    """What the README says: traced into the caller's jit, nlls cannot hold the limit, and the
    caller's own ``threadpool_limits`` around the call is what applies."""
    solve = jax.jit(lambda p: nlls.least_squares(watched_decay, p, args=(x, y)).params)
    seen_while_running.clear()
    jax.block_until_ready(solve(START))
    assert seen_while_running == {USER_THREADS}
    seen_while_running.clear()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        jax.block_until_ready(solve(START))
    assert seen_while_running == {1}
    assert blas_threads() == user_setting


def test_the_first_solve_of_a_process_is_held_at_one_blas_thread_too():
    """jaxlib loads scipy's LAPACK (and its OpenBLAS) when it first compiles a decomposition, which
    in a fresh process happens inside the first solve, after the limit was set."""
    pytest.importorskip("scipy.linalg.cython_lapack")
    script = textwrap.dedent(
        """
        import json
        import jax, jax.numpy as jnp, threadpoolctl, nlls

        def blas_threads():
            return {lib["filepath"]: lib["num_threads"]
                    for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}

        seen = set()

        def residual(p, x):
            jax.debug.callback(lambda: seen.update(blas_threads().items()))
            return p[0] * jnp.exp(-p[1] * x) - 2.0 * jnp.exp(-1.5 * x)

        nlls.least_squares(residual, jnp.array([1.0, 1.0]), args=(jnp.linspace(0.0, 1.0, 20),))
        print(json.dumps({"seen": sorted(seen), "after": blas_threads()}))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "2"},
    )
    report = json.loads(child.stdout.splitlines()[-1])
    if not report["after"]:
        pytest.skip("no BLAS library that threadpoolctl can control is loaded")
    if set(report["after"].values()) == {1}:  # OpenBLAS caps its threads at the cores
        pytest.skip("one core: the BLAS libraries run one thread anyway")
    assert 1 not in report["after"].values()  # the process's setting, back after the solve
    # Every library was held at one thread while the program ran, scipy's (loaded by it) too.
    assert {path for path, _ in report["seen"]} == set(report["after"])
    assert {threads for _, threads in report["seen"]} == {1}
