"""The compiled solver loop: ``init`` once, then ``step`` inside one ``lax.while_loop``.

The loop is pure JAX, so it runs under ``jax.jit`` and ``jax.vmap`` (a batch of problems runs until the
last member has stopped; finished members keep their state). ``run`` takes the step count at which to
pause as a traced value, so one compiled program serves every segment length.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .checks import INT32_MAX
from .problem import FlatProblem
from .termination import Status, Tolerances


class LoopState(eqx.Module):
    """The method's state plus the counters and status every method shares."""

    method_state: Any
    iterations: Int[Array, ""]
    steps: Int[Array, ""]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    rejected: Int[Array, ""]
    status: Int[Array, ""]
    step_norm: Float[Array, ""]  # of the last trial step
    accepted: Bool[Array, ""]  # whether the last trial step was accepted
    #: a trial since the last accepted step (or in the line search of the last one) met a
    #: non-finite residual or Jacobian: an ``xtol`` stop then means walled in, not converged
    walled: Bool[Array, ""]

    @property
    def point(self):
        return self.method_state.point


def init(method, problem: FlatProblem, path, params, tol: Tolerances) -> LoopState:
    """Evaluate the start (``method.init``) and give it its status (``method.start_status``: a
    non-finite start, a stationary one, or ``RUNNING``)."""
    method_state = method.init(problem, path, params)
    zero = jnp.asarray(0, jnp.int32)
    evaluations = jnp.asarray(method.start_evaluations, jnp.int32)
    return LoopState(
        method_state=method_state,
        iterations=zero,
        steps=zero,
        nfev=evaluations,
        njev=evaluations,
        rejected=zero,
        status=method.start_status(tol, method_state.point, problem),
        step_norm=jnp.zeros((), params.dtype),
        accepted=jnp.asarray(False),
        walled=jnp.asarray(False),
    )


def run(
    method,
    problem: FlatProblem,
    path,
    tol: Tolerances,
    state: LoopState,
    max_steps,
    pause_at=None,
) -> LoopState:
    """Step until the method's ``verdict`` ends the run, the budget is spent (``max_steps`` accepted
    steps, or iterations for a method whose ``budget`` counts them; for the others also
    ``10·max_steps + 100`` iterations, accepted or rejected), or the iteration count (trial
    steps, accepted or not) reaches ``pause_at``; then the status stays ``RUNNING`` and ``run`` can
    be called again. Pausing never changes the iterates: the loop body is the same."""

    def spent(s: LoopState):
        return (s.iterations if method.budget == "iterations" else s.steps) >= max_steps

    # Rejected trials are bounded too (``Status.MAX_ITERATIONS``), without overflowing int32.
    max_iterations = jnp.minimum(max_steps, (INT32_MAX - 100) // 10) * 10 + 100

    def rejecting(s: LoopState):
        return (method.budget != "iterations") & (s.iterations >= max_iterations)

    def keep_going(s: LoopState):
        going = (s.status == Status.RUNNING) & ~spent(s) & ~rejecting(s)
        return going if pause_at is None else going & (s.iterations < pause_at)

    def body(s: LoopState) -> LoopState:
        method_state, report = method.step(problem, path, s.method_state)
        status = method.verdict(tol, report, s.point, method_state.point, problem)
        walled = ~report.finite | (s.walled & ~report.accepted)
        # Steps shrunk to xtol, or a line search that failed, against points where the residual
        # is not defined: the solve is walled in, not at a minimum.
        stuck = (status == Status.XTOL) | (status == Status.LINE_SEARCH_FAILED)
        status = jnp.where(stuck & walled, Status.NONFINITE_TRIALS, status)
        return LoopState(
            method_state=method_state,
            iterations=s.iterations + 1,
            steps=s.steps + report.accepted.astype(jnp.int32),
            nfev=s.nfev + report.nfev,
            njev=s.njev + report.njev,
            rejected=s.rejected + report.rejected,
            status=status,
            step_norm=report.step_norm.astype(s.step_norm.dtype),
            accepted=report.accepted,
            walled=walled,
        )

    state = jax.lax.while_loop(keep_going, body, state)
    # The one place the budget sets the status: keep_going stops the loop when it is spent.
    running = state.status == Status.RUNNING
    status = jnp.where(
        running & spent(state),
        Status.MAX_STEPS,
        jnp.where(running & rejecting(state), Status.MAX_ITERATIONS, state.status),
    )
    return eqx.tree_at(lambda s: s.status, state, status.astype(jnp.int32))
