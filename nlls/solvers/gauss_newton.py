"""Gauss–Newton with a backtracking (Armijo) line search.

The direction is the minimum-norm solution of the linearised problem, ``d = −J⁺ r`` (``λ = 0`` in
``nlls.linear``: singular values below the rank cut-off are dropped, so a rank-deficient or
underdetermined Jacobian still gives a well-defined step — the one closest to the current parameters).
The step length starts at ``α = 1`` and is multiplied by ``backtrack_factor`` until the sufficient
decrease condition holds (Nocedal & Wright, Alg. 3.1):

    ½‖r(θ + αd)‖² ≤ ½‖r(θ)‖² + c α gᵀd,    g = Jᵀr,

with ``c`` = ``armijo_constant`` (with a robust loss, the robust cost and ``d`` from the corrected
``J̃``, ``r̃``: ``nlls.losses``; no damping then guards a model that is nearly flat where most
residuals are outliers, so start from a plain fit or use LM). Trial points with non-finite residuals
fail the test. Every trial that fails counts as a rejected step. If ``max_backtracks`` halvings
find no decrease, or ``d`` is not a descent direction, the solve ends: converged (``FTOL``) when the model predicts a reduction of at most
``ftol · cost`` for the full step — there is nothing left to gain at working precision — and with status
``LINE_SEARCH_FAILED`` otherwise.

When the model predicts a reduction below the rounding level of the cost for the full step, the cost
cannot judge it: the full step is taken without a line search when its residual and Jacobian are
finite and the reduction measured on the gradient, ``−½(g + g_trial)ᵀδ``, is at least ``c`` times the
prediction (``nlls.solvers.base``); otherwise, or when the prediction is at the noise floor, the solve
has reached working precision (``Status.PRECISION``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import checks
from ..damping import armijo_holds
from ..linear import factorize
from ..problem import FlatProblem
from ..termination import resolution
from .base import (
    Method,
    Point,
    StepReport,
    accept_if,
    actual_reduction,
    damping_limited,
    gradient_ratio,
    jacobian_of,
    judged_by_rounding,
    precision_reached,
    refresh,
    start_point,
)


class GNState(eqx.Module):
    point: Point
    factor: eqx.Module
    length: Float[Array, ""]  # α of the last line search (1 before the first)


class GaussNewton(Method):
    """Gauss–Newton with backtracking line search.

    Args:
        armijo_constant: c in the sufficient decrease condition.
        backtrack_factor: the factor applied to α after each failed trial.
        max_backtracks: the most trials after the first.
    """

    armijo_constant: float = 1e-4
    backtrack_factor: float = 0.5
    max_backtracks: int = 30

    def __check_init__(self):
        if not 0 < self.backtrack_factor < 1:
            raise ValueError(f"backtrack_factor must be in (0, 1), got {self.backtrack_factor}")
        if not 0 < self.armijo_constant < 1:
            raise ValueError(f"armijo_constant must be in (0, 1), got {self.armijo_constant}")
        # α = backtrack_factorᵏ: past a few thousand halvings it is zero in any precision.
        checks.bounded_int("max_backtracks", self.max_backtracks, 0, 10_000)

    def init(self, problem: FlatProblem, path, params) -> GNState:
        point, jac, _ = start_point(problem, params)
        unit = jnp.ones(params.shape, params.dtype)
        one = jnp.ones((), params.dtype)
        return GNState(point, factorize(path, jac, point.residual, unit, problem.layout), one)

    def damping_value(self, state: GNState) -> Float[Array, ""]:
        """What ``StepInfo.damping`` reports: the last line-search step length α (no damping)."""
        return state.length

    def step(self, problem: FlatProblem, path, state: GNState) -> tuple[GNState, StepReport]:
        point = state.point
        jac = jacobian_of(problem, point)
        direction = state.factor.step(jac, 0.0)
        slope = point.grad @ direction
        descent = slope < 0
        full_change = jac @ direction
        full_prediction = -slope - 0.5 * (full_change @ full_change)
        # Below the rounding level the full step is judged by the gradient (``solvers.base``).
        rounding = jnp.abs(full_prediction) < resolution(point.cost)

        def trial(length):
            residual = problem(point.params + length * direction)
            return residual, problem.loss.cost(residual)

        def sufficient(length, cost):
            return armijo_holds(cost, point.cost, length, slope, self.armijo_constant)

        def insufficient(carry):
            length, count, _, cost, _ = carry
            return ~sufficient(length, cost) & (count <= self.max_backtracks) & descent & ~rounding

        def backtrack(carry):
            length, count, _, _, finite = carry
            length = length * self.backtrack_factor
            residual, cost = trial(length)
            return length, count + 1, residual, cost, finite & jnp.isfinite(cost)

        one = jnp.asarray(1.0, point.params.dtype)
        first_residual, first_cost = trial(one)
        length, trials, trial_residual, trial_cost, all_finite = jax.lax.while_loop(
            insufficient,
            backtrack,
            (one, jnp.asarray(1, jnp.int32), first_residual, first_cost, jnp.isfinite(first_cost)),
        )
        actual = actual_reduction(problem, point, trial_residual)
        _, found = judged_by_rounding(
            point, full_prediction, actual, descent & sufficient(length, trial_cost)
        )
        step = length * direction
        trial_params = point.params + step

        unit = jnp.ones_like(point.params)
        (point, _, factor), accepted, jac_finite = accept_if(
            found,
            lambda: refresh(
                problem,
                path,
                False,
                unit,
                trial_params,
                trial_residual,
                lambda: problem.jacobian(trial_params),
            ),
            (point, unit, state.factor),
            keep=lambda new: (
                ~rounding
                | (gradient_ratio(state.point, new, step, full_prediction) > self.armijo_constant)
            ),
        )
        # Gauss–Newton has no damping to raise: a refused rounding-level step ends the solve.
        stalled = rounding & found & jac_finite & ~accepted

        # On failure, report the full step's predicted reduction: the ftol test then tells a minimum
        # at working precision (nothing left to gain) from a genuine failure.
        model_change = length * full_change
        report = StepReport(
            accepted=accepted,
            cost_before=state.point.cost,
            actual_reduction=actual,
            predicted_reduction=jnp.where(
                accepted, -slope * length - 0.5 * (model_change @ model_change), full_prediction
            ),
            step_norm=jnp.where(accepted, jnp.linalg.norm(step), jnp.linalg.norm(direction)),
            # the line search's trials, and the accepted point linearised again for its Jacobian
            nfev=trials + found.astype(jnp.int32),
            njev=found.astype(jnp.int32),
            rejected=trials - accepted.astype(jnp.int32),
            failed=~accepted & ~stalled,
            finite=jnp.isfinite(actual) & jac_finite & all_finite,
            rounding=rounding,
            at_precision=precision_reached(rounding, stalled, full_prediction, state.point.cost),
        )
        # A backtracked step's length is the line search's, not the model's: not a sign of convergence.
        report = damping_limited(report, length < 1)
        return GNState(point, factor, length), report
