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

from . import termination
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

    @property
    def point(self):
        return self.method_state.point


def init(method, problem: FlatProblem, path: str, params, tol: Tolerances) -> LoopState:
    """Evaluate residual and Jacobian at the start; flag a non-finite start, or a stationary one."""
    method_state = method.init(problem, path, params)
    point = method_state.point
    finite = jnp.all(jnp.isfinite(params)) & point.finite  # a non-finite residual makes cost inf
    status = jnp.where(
        finite,
        jnp.where(termination.gradient_small(tol, point.grad), Status.GTOL, Status.RUNNING),
        Status.NONFINITE_START,
    )
    zero = jnp.asarray(0, jnp.int32)
    return LoopState(
        method_state=method_state,
        iterations=zero,
        steps=zero,
        nfev=jnp.asarray(1, jnp.int32),
        njev=jnp.asarray(1, jnp.int32),
        rejected=zero,
        status=status.astype(jnp.int32),
        step_norm=jnp.zeros((), params.dtype),
        accepted=jnp.asarray(False),
    )


def run(
    method,
    problem: FlatProblem,
    path: str,
    tol: Tolerances,
    state: LoopState,
    max_steps,
    pause_at=None,
) -> LoopState:
    """Step until a termination test fires, ``max_steps`` accepted steps are done, or the iteration
    count (trial steps, accepted or not) reaches ``pause_at``; then the status stays ``RUNNING`` and
    ``run`` can be called again. Pausing never changes the iterates: the loop body is the same."""

    def keep_going(s: LoopState):
        going = (s.status == Status.RUNNING) & (s.steps < max_steps)
        return going if pause_at is None else going & (s.iterations < pause_at)

    def body(s: LoopState) -> LoopState:
        method_state, report = method.step(problem, path, s.method_state)
        status = termination.check(
            tol,
            accepted=report.accepted,
            failed=report.failed,
            rounding=report.rounding,
            at_precision=report.at_precision,
            cost_before=report.cost_before,
            actual_reduction=report.actual_reduction,
            predicted_reduction=report.predicted_reduction,
            step_norm=report.step_norm,
            params_norm=jnp.linalg.norm(s.point.params),
            grad=method_state.point.grad,
        )
        walled_in = (status == Status.XTOL) & ~report.accepted & ~report.finite
        status = jnp.where(walled_in, Status.NONFINITE_TRIALS, status)
        status = jnp.where(
            (status == Status.RUNNING) & report.failed, Status.LINE_SEARCH_FAILED, status
        )
        steps = s.steps + report.accepted.astype(jnp.int32)
        return LoopState(
            method_state=method_state,
            iterations=s.iterations + 1,
            steps=steps,
            nfev=s.nfev + report.nfev,
            njev=s.njev + report.njev,
            rejected=s.rejected + report.rejected,
            status=status.astype(jnp.int32),
            step_norm=report.step_norm.astype(s.step_norm.dtype),
            accepted=report.accepted,
        )

    state = jax.lax.while_loop(keep_going, body, state)
    # The one place max_steps sets the status: keep_going stops the loop at max_steps accepted steps.
    exhausted = (state.status == Status.RUNNING) & (state.steps >= max_steps)
    return eqx.tree_at(
        lambda s: s.status,
        state,
        jnp.where(exhausted, Status.MAX_STEPS, state.status).astype(jnp.int32),
    )
