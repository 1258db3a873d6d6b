"""The host driver: runs a plan's compiled loop in segments and calls the callbacks between them.

Used by ``least_squares`` when it is given ``callbacks``, ``max_time`` or ``resume``. Each segment is one
call of the plan's compiled ``advance`` (``loop.run`` up to an iteration count), followed by two small
transfers to the host (the counters and the scalar values of the snapshot).

Interrupts: in the main thread, Ctrl-C (SIGINT) during a solve only sets a flag, which is checked
between segments, so a segment always completes and the solve ends at its state with
``Status.INTERRUPTED``; a second Ctrl-C raises ``KeyboardInterrupt`` at once, as usual. With the
segment thus protected, ``advance`` donates the incoming state (its buffers are reused for the outgoing
one: no copy of the Jacobian and factorisation per segment). Elsewhere (another thread, where signal
handlers cannot be set) the state is not donated and a ``KeyboardInterrupt`` is caught directly. A
``KeyboardInterrupt`` raised by a callback ends the solve the same way.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import checkpoint, checks
from .callbacks import Checkpoint, History, StepInfo
from .problem import raise_non_finite_start
from .result import Solution
from .sharding import agreed, placed_like
from .termination import Status
from .threads import one_blas_thread


@dataclasses.dataclass(frozen=True)
class Run:
    """How a plan is run: the step budget, the callbacks called every ``callback_every``
    iterations, the time limit in seconds and the checkpoint to resume (both ``None`` for none),
    and the status of a run that spends its budget (``MAX_STEPS``; ``MAX_EPOCHS`` when the
    budget is a number of epochs). The callbacks and the numbers are checked (``nlls.checks``)
    when it is made."""

    max_steps: int
    callbacks: tuple = ()
    callback_every: int = 1
    max_time: float | None = None
    resume: Any = None
    exhausted: Status = Status.MAX_STEPS

    def __post_init__(self):
        callbacks = checks.callbacks(self.callbacks, self.callback_every, self.max_time)
        object.__setattr__(self, "callbacks", callbacks)

    @property
    def driven(self) -> bool:
        """Whether the loop runs from Python in segments (``drive``)."""
        return bool(self.callbacks) or self.max_time is not None or self.resume is not None


def run_plan(plan, params0, dynamic, run: Run) -> Solution:
    """Run a plan: through ``drive`` when there are callbacks, a time limit or a checkpoint to
    resume; otherwise as its one compiled ``solve`` program (which works under ``jit``/``vmap``,
    where a non-finite start stays a reported status instead of an error).

    Either way the BLAS libraries are held at one thread until the results are ready
    (``nlls.threads``); traced into a caller's ``jit``, the solve runs later, outside this limit."""
    if any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((params0, dynamic))
    ):
        refuse_traced(run)
    with one_blas_thread():
        if run.driven:
            solution = drive(plan, params0, dynamic, run)
        else:
            solution = plan.solve(params0, dynamic, np.int32(run.max_steps))
            if run.exhausted != Status.MAX_STEPS:
                code = solution.status_code
                spent = jnp.where(code == Status.MAX_STEPS, int(run.exhausted), code)
                solution = solution.replace(status=spent.astype(code.dtype))
            if isinstance(solution.status_code, jax.core.Tracer):
                return solution
            if np.any(np.asarray(solution.status) == Status.NONFINITE_START):
                raise_non_finite_start(params0)
        # Dispatch is asynchronous: the limit must outlast the programs, not just their launch.
        return jax.block_until_ready(solution)


def refuse_traced(run: Run) -> None:
    """Raise for a run driven from Python (``Run.driven``) whose inputs are traced."""
    if run.driven:
        raise ValueError(
            "callbacks, max_time and resume run the loop from Python between compiled "
            "segments; they cannot be used inside jax.jit or jax.vmap, nor under a derivative "
            "(jax.grad, jax.jvp, ...): drop them to trace or differentiate the solve"
        )


def drive(plan, params0, dynamic, run: Run) -> Solution:
    max_steps, callbacks, callback_every = int(run.max_steps), run.callbacks, run.callback_every
    max_time, resume = run.max_time, run.resume
    started = time.perf_counter()
    steps_limit = np.int32(max_steps)
    # Digests of the residual and the data only where a checkpoint is written or read: hashing
    # the data costs a pass over it.
    checkpointing = resume is not None or any(isinstance(c, Checkpoint) for c in callbacks)
    signature = plan.signature(dynamic, fingerprint=checkpointing)
    if resume is not None:
        like = jax.eval_shape(plan.start, params0, dynamic)[0]
        state = checkpoint.load(resume, like, signature)
        if jax.process_count() > 1:  # each process places its part, as the programs expect
            placements = plan.start.lower(params0, dynamic).compile().output_shardings[0]
            leaves, treedef = jax.tree_util.tree_flatten(state)
            placed = placed_like(
                [np.asarray(leaf) for leaf in leaves], jax.tree_util.tree_leaves(placements)
            )
            state = jax.tree_util.tree_unflatten(treedef, placed)
        # A solve stopped from outside (callback, time limit, interrupt) is checkpointed as RUNNING;
        # one that ran out of steps continues up to the new max_steps. Any other status means it
        # had ended (converged or failed), and resuming ends it again at once.
        if int(state.status) == Status.MAX_STEPS:
            state = _with_status(state, Status.RUNNING)
        snapshot = plan.describe(state, params0)
    else:
        state, snapshot = plan.start(params0, dynamic)
    info = _info(snapshot, started, max_steps, state, signature)
    if info.status == Status.NONFINITE_START:
        raise_non_finite_start(params0)

    ended_by = None
    failure = None  # an exception from a callback: raised after every on_end has run
    with _InterruptFlag() as interrupt:
        advance = plan.advance_donating if interrupt.protects else plan.advance
        if info.status == Status.RUNNING:
            # Compile the segment program now (a call that runs no iteration), so that the clock of
            # `StepInfo.time` and `max_time` measures solving, not compiling.
            pause_at = np.int32(info.iteration)
            state, snapshot = advance(state, params0, dynamic, steps_limit, pause_at)
            info = _info(snapshot, time.perf_counter(), max_steps, state, signature)
        try:
            for callback in callbacks:
                if hasattr(callback, "on_start"):
                    callback.on_start(info)
            started = time.perf_counter()  # the clock starts with the first iteration
            stop = False
            while info.status == Status.RUNNING:
                # With several processes, process 0's view decides for all (nlls.sharding).
                late = max_time is not None and time.perf_counter() - started >= max_time
                stop, interrupted, late = agreed((stop, interrupt.raised, late))
                if stop:
                    ended_by = Status.CALLBACK
                    break
                if interrupted:
                    raise KeyboardInterrupt
                if late:
                    ended_by = Status.TIME_LIMIT
                    break
                pause_at = np.int32(min(info.iteration + callback_every, np.iinfo(np.int32).max))
                state, snapshot = advance(state, params0, dynamic, steps_limit, pause_at)
                info = _info(snapshot, started, max_steps, state, signature)
                # From here on `info` describes `state` (until the next segment).
                for callback in callbacks:
                    stop |= _wants_stop(callback(info))
        except KeyboardInterrupt:
            if _deleted(state):  # a second Ctrl-C inside a segment: its input is gone
                raise
            ended_by = Status.INTERRUPTED
            if info.solver_state is not state:  # interrupted between a segment and its snapshot
                info = _info(plan.describe(state, params0), started, max_steps, state, signature)
        except Exception as error:  # a callback raised: save what there is, then raise it
            if _deleted(state) or info.solver_state is not state:
                raise
            failure = error

    if ended_by is None and int(state.status) == Status.MAX_STEPS:
        ended_by = run.exhausted  # the budget was spent: in steps, or in epochs
    final = state if ended_by in (None, Status.MAX_STEPS) else _with_status(state, ended_by)
    info = dataclasses.replace(info, status=Status(int(final.status)), time=_since(started))
    for callback in callbacks:
        if hasattr(callback, "on_end"):
            callback.on_end(info)
    if failure is not None:
        raise failure
    restored = None
    for callback in callbacks:
        best = callback.restore() if hasattr(callback, "restore") else None
        restored = restored if best is None else best
    if restored is None:
        solution = plan.finish(final, params0, dynamic)
    else:
        flat = ravel_pytree(restored)[0].astype(final.point.params.dtype)
        solution = plan.finish(final, params0, dynamic, flat)
    history = next((c for c in callbacks if isinstance(c, History)), None)
    if history is not None:
        solution = _with_history(solution, history)
    return solution


class _InterruptFlag:
    """While active (in the main thread), the first SIGINT sets ``raised`` instead of raising
    ``KeyboardInterrupt``, and puts the previous handler back so that a second one raises."""

    def __init__(self):
        self.raised = False
        self.protects = False
        self._previous = None

    def _handle(self, signum, frame):
        self.raised = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:  # Python's own: safe to take over
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
                self.protects = True
        return self

    def __exit__(self, *exc):
        if self.protects and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _deleted(state) -> bool:
    return any(
        isinstance(leaf, jax.Array) and leaf.is_deleted()
        for leaf in jax.tree_util.tree_leaves(state)
    )


def pack_snapshot(state, damping, unravel):
    """What a callback sees, computed inside a plan's compiled programs: steps, iterations, nfev,
    njev, status and accepted as one int32 vector; cost, ‖Jᵀr‖∞, ``damping`` and the step norm as
    one float vector (two transfers to the host, not ten); and the parameters. ``_info`` reads it."""
    point = state.point
    counts = jnp.stack(
        [
            state.steps,
            state.iterations,
            state.nfev,
            state.njev,
            state.status,
            state.accepted.astype(jnp.int32),
        ]
    )
    values = jnp.stack(
        [
            point.cost,
            jnp.max(jnp.abs(point.grad), initial=0.0),
            jnp.asarray(damping).astype(point.cost.dtype),
            state.step_norm,
        ]
    )
    return counts, values, unravel(point.params)


def _info(snapshot, started, max_steps, state, signature) -> StepInfo:
    counts, values, params = snapshot
    step, iteration, nfev, njev, status, accepted = np.asarray(counts).tolist()
    cost, grad_norm, damping, step_norm = np.asarray(values).tolist()
    return StepInfo(
        step=step,
        iteration=iteration,
        params=params,
        cost=cost,
        grad_norm=grad_norm,
        damping=damping,
        step_norm=step_norm,
        accepted=bool(accepted),
        nfev=nfev,
        njev=njev,
        time=_since(started),
        status=Status(status),
        max_steps=max_steps,
        solver_state=state,
        signature=signature,
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _wants_stop(answer) -> bool:
    """``True`` as a Python, NumPy or JAX boolean stops; anything else (``None``, numbers) does not."""
    if answer is True:
        return True
    if isinstance(answer, np.bool_ | np.ndarray | jax.Array):
        return np.shape(answer) == () and np.asarray(answer).dtype == bool and bool(answer)
    return False


def _with_status(state, status: Status):
    return eqx.tree_at(lambda s: s.status, state, jnp.asarray(int(status), jnp.int32))


def _with_history(solution: Solution, history: History) -> Solution:
    return solution.replace(history=history)
