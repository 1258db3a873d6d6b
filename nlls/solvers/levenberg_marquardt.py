"""Levenberg–Marquardt with Nielsen's damping update and optional geodesic acceleration.

Each step solves the damped problem ``(JᵀJ + λD²) δ = −Jᵀr`` (see ``nlls.linear``) and compares the
actual reduction of the cost ``½‖r‖²`` with the reduction predicted by the Gauss–Newton model. For the
exact damped step the prediction has a form without cancellation (Moré 1978, MINPACK's ``lmpar``):

    pred = ½‖r‖² − ½‖r + Jδ‖² = ½‖Jδ‖² + λ‖Dδ‖².

The gain ratio ``ρ = actual / pred`` accepts the step when ``ρ > η`` (``accept_threshold``) and updates
the damping by Nielsen's rule (``nlls.damping.nielsen_update``). A trial point whose residual or Jacobian
is not finite is rejected like any other bad step: the damping goes up and the solve goes on.

Scaling (Marquardt 1963; Moré 1978): ``D = diag(max over the run of the column norms of J)``, which makes
the method invariant to the units of each parameter. On by default on the normal path; off by default
on the minimum-norm path, whose step should be the one of least Euclidean norm.

The initial damping is ``λ₀ = τ · max diag(JₛᵀJₛ)`` with ``Jₛ = J D⁻¹`` (Madsen, Nielsen & Tingleff
2004, with τ = ``initial_damping``).

Geodesic acceleration (Transtrum & Sethna 2012): with the first-order step ``v``, the second-order
correction ``a`` solves the same damped system with ``r`` replaced by the second directional derivative
``r''(θ)[v, v]`` (computed exactly by a nested JVP); the trial step is ``v + a/2`` when
``2‖Da‖ ≤ α‖Dv‖`` (``geodesic_ratio``), and ``v`` otherwise. The prediction then uses the general
model form ``pred = −gᵀδ − ½‖Jδ‖²``. The extra evaluation counts as one residual evaluation.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..damping import gain_ratio, nielsen_update
from ..linear import factorize
from ..problem import FlatProblem
from .base import Point, StepReport, column_norms, cost_of, initial_scale, point_at, refresh, select


class LMState(eqx.Module):
    point: Point
    scale: Float[Array, " n"]
    factor: eqx.Module
    damping: Float[Array, ""]
    damping_growth: Float[Array, ""]


class LevenbergMarquardt(eqx.Module):
    """Levenberg–Marquardt.

    Args:
        initial_damping: τ in ``λ₀ = τ · max diag(JₛᵀJₛ)``.
        scaling: Marquardt scaling; ``None`` turns it on for the normal path and off for the
            minimum-norm path.
        geodesic: add geodesic acceleration.
        geodesic_ratio: α, the largest accepted ``2‖Da‖/‖Dv‖``.
        accept_threshold: η, the smallest gain ratio that accepts a step.

    Example:
        >>> import jax.numpy as jnp, nlls
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]), method=nlls.LevenbergMarquardt())
        >>> bool(jnp.allclose(sol.params, 1.0, atol=1e-4))
        True
    """

    initial_damping: float = 1e-3
    scaling: bool | None = None
    geodesic: bool = False
    geodesic_ratio: float = 0.75
    accept_threshold: float = 1e-4

    def __check_init__(self):
        if not self.initial_damping > 0:
            raise ValueError(f"initial_damping must be positive, got {self.initial_damping}")
        if not 0 <= self.accept_threshold < 1:
            raise ValueError(f"accept_threshold must be in [0, 1), got {self.accept_threshold}")

    def uses_scaling(self, path: str) -> bool:
        return path == "normal" if self.scaling is None else bool(self.scaling)

    def init(self, problem: FlatProblem, path: str, params: Float[Array, " n"]) -> LMState:
        point = point_at(problem, params)
        scale = initial_scale(point.jac, self.uses_scaling(path))
        largest = jnp.max((column_norms(point.jac) / scale) ** 2, initial=0.0)
        damping = self.initial_damping * jnp.where(largest > 0, largest, 1.0)
        return LMState(
            point=point,
            scale=scale,
            factor=factorize(path, point.jac, scale),
            damping=damping.astype(params.dtype),
            damping_growth=jnp.asarray(2.0, dtype=params.dtype),
        )

    def step(self, problem: FlatProblem, path: str, state: LMState) -> tuple[LMState, StepReport]:
        point, scale, damping = state.point, state.scale, state.damping
        step = state.factor.solve(point.jac, point.residual, damping)
        evaluations = 1
        if self.geodesic:
            velocity = step
            curvature = problem.second_directional(point.params, velocity)
            acceleration = state.factor.solve(point.jac, curvature, damping)
            small = 2 * jnp.linalg.norm(
                scale * acceleration
            ) <= self.geodesic_ratio * jnp.linalg.norm(scale * velocity)
            step = jnp.where(small, velocity + 0.5 * acceleration, velocity)
            model_change = point.jac @ step
            predicted = -(point.grad @ step) - 0.5 * (model_change @ model_change)
            evaluations += 1
        else:
            model_change = point.jac @ step
            scaled_step = scale * step
            predicted = 0.5 * (model_change @ model_change) + damping * (scaled_step @ scaled_step)

        trial_params = point.params + step
        trial_residual = problem(trial_params)
        actual = point.cost - cost_of(trial_residual)
        ratio = gain_ratio(actual, predicted)
        candidate = ratio > self.accept_threshold

        current = (point, scale, state.factor)
        new = jax.lax.cond(
            candidate,
            lambda: refresh(
                problem, path, self.uses_scaling(path), point, scale, trial_params, trial_residual
            ),
            lambda: current,
        )
        accepted = candidate & new[0].finite
        point, scale, factor = select(accepted, new, current)
        damping, growth = nielsen_update(damping, state.damping_growth, ratio, accepted)

        report = StepReport(
            accepted=accepted,
            cost_before=state.point.cost,
            actual_reduction=actual,
            predicted_reduction=predicted,
            step_norm=jnp.linalg.norm(step),
            nfev=jnp.asarray(evaluations, jnp.int32),
            njev=candidate.astype(jnp.int32),
            rejected=(~accepted).astype(jnp.int32),
            failed=jnp.asarray(False),
        )
        return LMState(point, scale, factor, damping, growth), report
