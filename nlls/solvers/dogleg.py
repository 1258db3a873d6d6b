"""Powell's dogleg trust-region method.

In scaled variables ``y = Dδ`` (``Jₛ = J D⁻¹``, ``gₛ = Jₛᵀr``) the step approximately minimises the
Gauss–Newton model ``m(y) = ½‖r + Jₛ y‖²`` subject to ``‖y‖ ≤ Δ`` along the path from 0 through the
Cauchy point to the Gauss–Newton point (Powell 1970; Nocedal & Wright, §4.1):

* Gauss–Newton point ``y_gn``: the minimum-norm solution of ``Jₛ y = −r`` (``λ = 0``);
* Cauchy point ``y_c = −(‖gₛ‖² / ‖Jₛ gₛ‖²) gₛ``, the model minimiser along steepest descent;
* if ``‖y_gn‖ ≤ Δ`` take ``y_gn``; if ``‖y_c‖ ≥ Δ`` take ``−Δ gₛ/‖gₛ‖``; otherwise the point where
  ``y_c + τ (y_gn − y_c)`` crosses the boundary, τ ∈ [0, 1].

The gain ratio with ``pred = −gᵀδ − ½‖Jδ‖²`` accepts the step when ``ρ > η`` and updates ``Δ`` by the
classical rule (``nlls.damping.trust_radius_update``). The initial radius is ``‖Dθ₀‖`` (1 if that is
zero) times ``initial_radius``.
"""

from __future__ import annotations

import jax.numpy as jnp

from .. import checks
from ..damping import boundary_length, trust_radius_update
from ..problem import FlatProblem
from .base import (
    RadiusMethod,
    RadiusState,
    StepReport,
    damping_limited,
    jacobian_of,
    judge_trial,
    on_boundary,
    predicted_reduction,
)


def dogleg_step(gauss_newton, cauchy, gradient_direction, radius):
    """The dogleg point in scaled variables (see the module docstring)."""
    gn_norm = jnp.linalg.norm(gauss_newton)
    cauchy_norm = jnp.linalg.norm(cauchy)
    leg = gauss_newton - cauchy
    tau = jnp.clip(boundary_length(cauchy, leg, radius), 0.0, 1.0)
    return jnp.where(
        gn_norm <= radius,
        gauss_newton,
        jnp.where(cauchy_norm >= radius, -radius * gradient_direction, cauchy + tau * leg),
    )


class Dogleg(RadiusMethod):
    """Powell's dogleg trust region.

    Args:
        initial_radius: factor on ``‖Dθ₀‖`` (or on 1 when ``θ₀ = 0``) giving the first radius.
        scaling: Marquardt scaling of the trust region; ``None``: on for the normal path only.
        accept_threshold: η, the smallest gain ratio that accepts a step.
    """

    initial_radius: float = 1.0
    scaling: bool | None = None
    accept_threshold: float = 1e-4

    def __check_init__(self):
        checks.positive("initial_radius", self.initial_radius)
        checks.fraction("accept_threshold", self.accept_threshold)

    def step(
        self, problem: FlatProblem, path, state: RadiusState
    ) -> tuple[RadiusState, StepReport]:
        point, scale = state.point, state.scale
        jac = jacobian_of(problem, point)
        scaled_grad = point.grad / scale
        grad_norm = jnp.linalg.norm(scaled_grad)
        curvature = jac @ (scaled_grad / scale)
        denominator = curvature @ curvature
        cauchy_length = jnp.where(
            denominator > 0, grad_norm**2 / jnp.where(denominator > 0, denominator, 1.0), 0.0
        )
        gauss_newton = scale * state.factor.step(jac, 0.0)
        direction = scaled_grad / jnp.where(grad_norm > 0, grad_norm, 1.0)
        scaled_step = dogleg_step(
            gauss_newton, -cauchy_length * scaled_grad, direction, state.radius
        )
        step = scaled_step / scale
        predicted = predicted_reduction(point, jac, step)
        scaling = self.uses_scaling(path)
        point, scale, factor, ratio, report = judge_trial(
            problem,
            path,
            scaling,
            point,
            scale,
            state.factor,
            step,
            predicted,
            self.accept_threshold,
        )
        report = damping_limited(report, on_boundary(scaled_step, state.radius))
        radius = trust_radius_update(
            state.radius, ratio, jnp.linalg.norm(scaled_step), report.accepted
        )
        return RadiusState(point, scale, radius, factor), report
