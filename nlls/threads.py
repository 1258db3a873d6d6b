"""One BLAS thread while nlls runs its compiled programs.

On CPU, JAX sends its decompositions (Cholesky, QR, eigh, triangular solves) to the LAPACK and BLAS
routines that jaxlib takes from scipy (``scipy.linalg.cython_lapack``), i.e. to scipy's OpenBLAS.
OpenBLAS runs its own pool of threads, one per core, which spin while they wait for work, beside
XLA's pool, which runs the rest of the program: the two fight for the same cores. On the 2-core
machine of ``BENCHMARKS.md`` the README's wide-MLP fit (481 parameters, 200 points, 52 LM steps, a
200×200 Cholesky per step) took 0.25–6.2 s a call with OpenBLAS's default two threads against
0.07–0.09 s with one. (XLA's own decompositions, which need no LAPACK, are no way out: the same fit
took 0.50 s with them.)

``one_blas_thread()`` sets the BLAS libraries to one thread (threadpoolctl) for the duration of a
solve and puts back what they had afterwards, on any exit, exceptions included; nothing outside a
solve changes. ``driver.run_plan`` holds it until the solve's results are ready: JAX dispatches
asynchronously, and a limit lifted before the program has run limits nothing.

The thread count is process-wide (OpenBLAS's pthreads pool), so one Python thread at a time holds
the limit, as threadpoolctl itself has it: the first thread to start a solve sets it and the last of
its (possibly nested) solves puts it back; a solve started meanwhile in another thread runs under
whatever is set. Under a caller's ``jax.jit`` the solve is traced into the caller's program, which
runs later, outside nlls: wrap that call in ``threadpoolctl.threadpool_limits(1, user_api="blas")``,
or set ``OPENBLAS_NUM_THREADS=1`` before Python starts (README, "Accuracy and speed").
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator

import threadpoolctl

_lock = threading.Lock()
_controller: threadpoolctl.ThreadpoolController | None = None
_holder: threading.Thread | None = None  # the thread whose solves hold the limit
_depth = 0  # how many of the holder's solves are running (a callback may start another)
_limiter = None  # the holder's threadpoolctl limit, which puts the setting back on exit


def _blas_controller() -> threadpoolctl.ThreadpoolController:
    """The controller of the BLAS libraries loaded in this process, made once: making one lists the
    loaded libraries (about 10 ms); limiting through it takes about 10 µs.

    jaxlib loads scipy's LAPACK (and its OpenBLAS) only when it first compiles a decomposition, which
    can be inside the first solve, after the limit is set: load it here first so that it is seen.
    """
    global _controller
    if _controller is None:
        try:
            importlib.import_module("scipy.linalg.cython_lapack")
        except ImportError:  # no scipy: jaxlib takes LAPACK from elsewhere, seen if loaded
            pass
        _controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return _controller


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold the BLAS libraries at one thread while the block runs, then put back their setting.

    Entering and leaving cost about 15 µs, most of it threadpoolctl's; with the wait for the
    results, a warm 3-parameter solve of about 110 µs takes about 30 µs more (``BENCHMARKS.md``,
    "BLAS threads"). Nothing is changed, and only the check costs, when every BLAS library already
    runs one thread (``OPENBLAS_NUM_THREADS=1``, or one core)."""
    global _holder, _depth, _limiter
    this = threading.current_thread()
    with _lock:
        if _holder is None:
            controller = _blas_controller()
            if any(library.num_threads != 1 for library in controller.lib_controllers):
                _limiter = controller.limit(limits=1)
                _limiter.__enter__()  # left below, when the holder's last solve ends
                _holder = this
        holds = _holder is this
        if holds:
            _depth += 1
    try:
        yield
    finally:
        if holds:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    limiter, _limiter, _holder = _limiter, None, None
                    limiter.__exit__(None, None, None)
