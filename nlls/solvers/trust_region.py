"""Trust region with a Steihaug–Toint truncated-CG subproblem: matrix-free, and exact for small n.

In scaled variables ``y = Dδ`` (``Jₛ = J D⁻¹``, ``gₛ = Jₛᵀr``) each step approximately solves the
trust-region subproblem of the Gauss–Newton model

    min  m(y) = gₛᵀy + ½‖Jₛ y‖²    subject to  ‖y‖ ≤ Δ

by conjugate gradients on ``JₛᵀJₛ y = −gₛ`` from ``y = 0``, truncated at the boundary, at a direction
of zero curvature, at the inexact-Newton forcing tolerance, or after a cap on iterations (Steihaug
1983; Toint 1981; ``nlls.krylov.steihaug``). Each CG iteration is one Jacobian–vector and one
vector–Jacobian product, so on the matrix-free path (``linear="krylov"``) the Jacobian is never
formed; on the dense paths the same iteration runs on the matrix. No factorisation is kept.

The gain ratio with ``pred = −gₛᵀy − ½‖Jₛ y‖²`` (``Jₛ y`` accumulated by the CG itself) accepts the step
when ``ρ > η`` and updates ``Δ`` by the classical rule (``nlls.damping.trust_radius_update``). The
initial radius is ``‖Dθ₀‖`` (1 if that is zero) times ``initial_radius``.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from .. import checks
from ..damping import trust_radius_update
from ..krylov import steihaug
from ..linear import Krylov, scaled_operator
from ..problem import FlatProblem
from .base import (
    RadiusMethod,
    RadiusState,
    StepReport,
    damping_limited,
    jacobian_of,
    judge_trial,
    on_boundary,
)

SUBPROBLEMS = ("steihaug",)


class TrustRegion(RadiusMethod):
    """Trust region with Steihaug–Toint truncated CG.

    Args:
        subproblem: ``"steihaug"`` (for the dogleg subproblem, use ``nlls.Dogleg``).
        initial_radius: factor on ``‖Dθ₀‖`` (or on 1 when ``θ₀ = 0``) giving the first radius.
        scaling: Marquardt scaling of the trust region; ``None``: as ``nlls.LevenbergMarquardt``
            (on for the normal path, and for the matrix-free path when ``n`` is small).
        accept_threshold: η, the smallest gain ratio that accepts a step.
        max_cg_steps: the most CG iterations per step; ``None``: the ``nlls.Krylov`` cap of the
            matrix-free path, and the same default (``min(max(10·min(m, n), 20), 200)``) on a dense
            path.
        tolerance: a fixed relative tolerance on the CG residual; ``None``: the forcing term
            ``min(10⁻³, √‖gₛ‖)`` (``nlls.krylov``).

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]), method=nlls.TrustRegion())
        >>> bool(jnp.allclose(sol.params, 1.0, atol=1e-4))
        True
    """

    subproblem: str = "steihaug"
    initial_radius: float = 1.0
    scaling: bool | None = None
    accept_threshold: float = 1e-4
    max_cg_steps: int | None = None
    tolerance: float | None = None

    factorized: ClassVar[bool] = False

    def __check_init__(self):
        if self.subproblem not in SUBPROBLEMS:
            raise ValueError(
                f"subproblem must be one of {SUBPROBLEMS} (nlls.Dogleg solves the dogleg "
                f"subproblem), got {self.subproblem!r}"
            )
        checks.positive("initial_radius", self.initial_radius)
        checks.fraction("accept_threshold", self.accept_threshold)
        if self.max_cg_steps is not None and not (
            isinstance(self.max_cg_steps, int) and self.max_cg_steps >= 1
        ):
            raise ValueError(f"max_cg_steps must be a positive int, got {self.max_cg_steps!r}")
        if self.tolerance is not None and not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance!r}")

    def cg_steps(self, path, m: int, n: int) -> int:
        if self.max_cg_steps is not None:
            return self.max_cg_steps
        if isinstance(path, Krylov):
            return path.max_steps
        return Krylov().sized(m, n).max_steps

    def step(
        self, problem: FlatProblem, path, state: RadiusState
    ) -> tuple[RadiusState, StepReport]:
        point, scale = state.point, state.scale
        operator = scaled_operator(jacobian_of(problem, point), scale)
        scaled_grad = point.grad / scale
        scaled_step, model_change, _ = steihaug(
            operator,
            scaled_grad,
            state.radius,
            max_steps=self.cg_steps(path, *operator.shape),
            tolerance=self.tolerance,
        )
        predicted = -(scaled_grad @ scaled_step) - 0.5 * (model_change @ model_change)
        point, scale, _, ratio, report = judge_trial(
            problem,
            None,  # no factorisation to refresh
            self.uses_scaling(path),
            point,
            scale,
            None,
            scaled_step / scale,
            predicted,
            self.accept_threshold,
        )
        report = damping_limited(report, on_boundary(scaled_step, state.radius))
        radius = trust_radius_update(
            state.radius, ratio, jnp.linalg.norm(scaled_step), report.accepted
        )
        return RadiusState(point, scale, radius), report
