"""Levenberg–Marquardt: Nielsen's damping update or Moré's trust-region form, with optional geodesic
acceleration.

Each step solves the damped problem ``(JᵀJ + λD²) δ = −Jᵀr`` (see ``nlls.linear``) and compares the
actual reduction of the cost ``½‖r‖²`` with the reduction predicted by the Gauss–Newton model. For the
exact damped step the prediction has a form without cancellation (Moré 1978, MINPACK's ``lmpar``):

    pred = ½‖r‖² − ½‖r + Jδ‖² = ½‖Jδ‖² + λ‖Dδ‖².

An inexact step (the matrix-free path) uses the general form ``pred = −gᵀδ − ½‖Jδ‖²``, which is
positive for every iterate of CGLS started at zero.

The gain ratio ``ρ = actual / pred`` accepts the step when ``ρ > η`` (``accept_threshold``). A trial
point whose residual or Jacobian is not finite is rejected like any other bad step.

How λ is chosen (``damping``):

* ``"nielsen"`` (default): λ is the state. Accepted: ``λ ← λ·max(1/3, 1 − (2ρ − 1)³)``; rejected:
  ``λ ← λ·ν``, ``ν ← 2ν`` (Nielsen 1999; ``nlls.damping.nielsen_update``); accepted at the rounding level
  of the cost (``nlls.solvers.base``): ``λ ← √eps·λ``, so the last digits come from Gauss–Newton
  steps. Initial ``λ₀ = max(τ · max diag(JₛᵀJₛ), ‖gₛ‖/Δ₀)`` with ``Jₛ = J D⁻¹`` (Madsen, Nielsen &
  Tingleff 2004, τ = ``initial_damping``) and ``Δ₀ = initial_radius · ‖Dθ₀‖``: the first step is
  bounded as a trust region's would be (``‖Dδ‖ ≤ ‖gₛ‖/λ₀ ≤ Δ₀``; no bound when θ₀ = 0). One linear
  solve per trial.
* ``"trust_region"``: a radius Δ is the state and λ is the smallest damping with ``‖Dδ(λ)‖ ≤ Δ``
  (λ = 0, the Gauss–Newton step, when that fits; ``nlls.damping.damping_for_radius``). Δ follows Moré's
  update (``nlls.damping.more_radius_update``); ``Δ₀ = initial_radius · ‖Dθ₀‖`` (or
  ``initial_radius`` when θ₀ = 0). A few linear solves per trial (cheap on the SVD path), and pure
  Gauss–Newton steps near a minimum: fewer evaluations on small curve fits.

Scaling (Marquardt 1963; Moré 1978): ``D = diag(max over the run of the column norms of J)``, each
rounded down to a power of two (so that ``J D⁻¹`` is exact), which makes the method invariant to the
units of each parameter (up to that factor of at most 2). On by default on the normal path; off by default on
the minimum-norm path, whose step should be the one of least Euclidean norm.

Geodesic acceleration (Transtrum & Sethna 2012): with the first-order step ``v``, the second-order
correction ``a`` solves the same damped system with ``r`` replaced by the second directional derivative
``r''(θ)[v, v]`` (computed exactly by a nested JVP); the trial step is ``v + a/2`` when
``2‖Da‖ ≤ α‖Dv‖`` (``geodesic_ratio``), and ``v`` otherwise. The prediction then uses the general model
form ``pred = −gᵀδ − ½‖Jδ‖²``. The extra evaluation counts as one residual evaluation.

Bounds (``least_squares(bounds=...)``; Nielsen's rule, no geodesic acceleration): the step solves
the Coleman–Li system ``(JₛᵀJₛ + C + λI) y = −Jₛᵀr`` in the affine-scaled variables of
``nlls.bounds`` (the factorisation at each point is of ``J E⁻¹`` with the bounded column scale
``E``), the best of the reflective candidates is tried, and the gain ratio compares the actual
reduction with the reduction of the Coleman–Li model. Iterates stay strictly inside the box.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import bounds as box
from .. import checks
from ..damping import damping_for_radius, more_radius_update, nielsen_update
from ..jacobian import MatrixFreeJacobian
from ..linear import factorize
from ..problem import FlatProblem
from .base import (
    Method,
    Point,
    StepReport,
    column_norms,
    damping_limited,
    jacobian_of,
    judge_trial,
    predicted_reduction,
    scale_and_curvature,
    start_point,
    start_size,
)

DAMPING_RULES = ("nielsen", "trust_region")


class LMState(eqx.Module):
    point: Point
    scale: Float[Array, " n"]
    factor: eqx.Module
    damping: Float[Array, ""]
    damping_growth: Float[Array, ""]  # ν of Nielsen's rule
    radius: Float[Array, ""]  # Δ of the trust-region form


class LevenbergMarquardt(Method):
    """Levenberg–Marquardt.

    Args:
        damping: ``"nielsen"`` or ``"trust_region"`` (Moré), see the module docstring.
        initial_damping: τ in ``λ₀ = τ · max diag(JₛᵀJₛ)`` (Nielsen's rule).
        initial_radius: factor on ``‖Dθ₀‖`` giving the first radius (trust-region form), and the
            bound on the first step's ``‖Dδ‖`` (Nielsen's rule: λ₀ is raised to meet it).
        scaling: Marquardt scaling; ``None`` turns it on for the normal path and off for the
            minimum-norm path.
        geodesic: add geodesic acceleration.
        geodesic_ratio: α, the largest accepted ``2‖Da‖/‖Dv‖``.
        accept_threshold: η, the smallest gain ratio that accepts a step.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]), method=nlls.LevenbergMarquardt())
        >>> bool(jnp.allclose(sol.params, 1.0, atol=1e-4))
        True
    """

    damping: str = "nielsen"
    initial_damping: float = 1e-3
    initial_radius: float = 1.0
    scaling: bool | None = None
    geodesic: bool = False
    geodesic_ratio: float = 0.75
    accept_threshold: float = 1e-4

    def __check_init__(self):
        if self.damping not in DAMPING_RULES:
            raise ValueError(f"damping must be one of {DAMPING_RULES}, got {self.damping!r}")
        checks.positive("initial_damping", self.initial_damping)
        checks.positive("initial_radius", self.initial_radius)
        checks.positive("geodesic_ratio", self.geodesic_ratio)
        checks.flag("geodesic", self.geodesic)
        checks.fraction("accept_threshold", self.accept_threshold)

    def bounds_refused(self) -> str | None:
        if self.geodesic:
            return "geodesic acceleration is not available with bounds; use geodesic=False"
        if self.damping != "nielsen":
            return "bounds need LevenbergMarquardt(damping='nielsen') (the default)"
        return None

    def init(self, problem: FlatProblem, path, params: Float[Array, " n"]) -> LMState:
        if problem.bounds is not None:  # a start on a bound would stay there: move it inside
            params = box.strictly_inside(params, *problem.bounds, box.START_INSIDE)
        point, jac, plain_jac = start_point(problem, params)
        scale, largest = scale_and_curvature(jac, self.uses_scaling(path), plain_jac)
        damping = self.initial_damping * jnp.where(largest > 0, largest, 1.0)
        size = start_size(scale, params, point)
        radius = self.initial_radius * jnp.where(size > 0, size, 1.0)
        if self.damping == "nielsen":
            damping = jnp.maximum(damping, self._bounding_damping(point, scale, size))
        return LMState(
            point=point,
            scale=scale,
            factor=factorize(
                path, jac, point.residual, _column(problem, point, scale), problem.layout
            ),
            damping=damping.astype(params.dtype),
            damping_growth=jnp.asarray(2.0, dtype=params.dtype),
            radius=radius.astype(params.dtype),
        )

    def _bounding_damping(self, point: Point, scale, size) -> Float[Array, ""]:
        """``‖gₛ‖ / Δ₀`` with ``Δ₀ = initial_radius · max(‖Dθ₀‖, √eps‖r₀‖)`` (0 when θ₀ = 0,
        ``base.start_size``): a damping at which the first step has ``‖Dδ‖ ≤ ‖gₛ‖/λ ≤ Δ₀``.

        A far start's Gauss–Newton step can be many times the parameters' own size and carry a
        parameter where the model goes flat (an exponential rate to +∞: its Jacobian column
        vanishes and the solve stalls there, as BoxBOD from NIST's first start did). Bounding the
        first step as a trust region does keeps it where the linear model is meant. The bound is a
        closed form, not Moré's iteration for the exact λ: that iteration's branches depend on
        rounding, and a λ₀ that jumps with the last bits of J made solves with the same J to
        rounding (a chunked and an unchunked Jacobian) drift apart."""
        radius = self.initial_radius * size
        gradient_norm = jnp.linalg.norm(point.grad / scale)
        return jnp.where(size > 0, gradient_norm / jnp.where(size > 0, radius, 1.0), 0.0)

    def damping_value(self, state: LMState) -> Float[Array, ""]:
        """What ``StepInfo.damping`` reports: λ (in the trust-region form, the λ of the last trial)."""
        return state.damping

    def step(self, problem: FlatProblem, path, state: LMState) -> tuple[LMState, StepReport]:
        if problem.bounds is not None:
            return self._bounded_step(problem, path, state)
        point, scale, factor = state.point, state.scale, state.factor
        jac = jacobian_of(problem, point)
        if self.damping == "trust_region":
            damping, scaled = damping_for_radius(
                lambda lam: scale * factor.step(jac, lam),
                jnp.linalg.norm(point.grad / scale),
                state.radius,
            )
            step = scaled / scale
        else:
            damping = state.damping
            step = factor.step(jac, damping)
        evaluations = 1
        if self.geodesic:
            velocity = step
            curvature = problem.second_directional(point.params, velocity)
            acceleration = factor.solve(jac, curvature, damping)
            small = 2 * jnp.linalg.norm(scale * acceleration) <= self.geodesic_ratio * (
                jnp.linalg.norm(scale * velocity)
            )
            step = jnp.where(small, velocity + 0.5 * acceleration, velocity)
            predicted = predicted_reduction(point, jac, step)
            evaluations += 1
        elif factor.exact:
            model_change = jac @ step
            scaled_step = scale * step
            predicted = 0.5 * (model_change @ model_change) + damping * (scaled_step @ scaled_step)
        else:  # an inexact (Krylov) step: the general model form, positive for any CGLS iterate
            predicted = predicted_reduction(point, jac, step)

        new_point, new_scale, new_factor, ratio, report = self._judge(
            problem, path, state, step, predicted, evaluations=evaluations
        )
        if not isinstance(jac, MatrixFreeJacobian):
            curvature = jnp.square(column_norms(jac) / scale)
            report = damping_limited(report, jnp.any(damping > curvature))
        if self.damping == "trust_region":
            radius = more_radius_update(
                state.radius,
                ratio,
                jnp.linalg.norm(scale * step),
                damping,
                report.actual_reduction,
                predicted,
                point.cost,
                report.accepted,
            )
            new_damping, growth = damping, state.damping_growth
        else:
            radius = state.radius
            new_damping, growth = _nielsen(damping, state.damping_growth, ratio, report)

        return LMState(new_point, new_scale, new_factor, new_damping, growth, radius), report

    def _judge(self, problem: FlatProblem, path, state: LMState, step, predicted, **options):
        """``judge_trial`` of ``step`` from the state's point, with this method's threshold."""
        return judge_trial(
            problem,
            path,
            self.uses_scaling(path),
            state.point,
            state.scale,
            state.factor,
            step,
            predicted,
            self.accept_threshold,
            **options,
        )

    def _bounded_step(self, problem: FlatProblem, path, state: LMState):
        """One step inside the box (``nlls.bounds``): the Coleman–Li damped step, the best
        reflective candidate, Nielsen's update."""
        point, scale, factor = state.point, state.scale, state.factor
        lower, upper = problem.bounds
        jac = jacobian_of(problem, point)
        column, curvature = box.effective_scale(point.params, point.grad, lower, upper, scale)
        damping = state.damping
        step = factor.step(jac, damping + curvature)
        optimality = jnp.max(
            jnp.abs(box.projected_gradient(point.params, point.grad, lower, upper)), initial=0.0
        )
        theta = jnp.maximum(0.995, 1.0 - optimality)
        model = box.Model(jac, column, curvature, point.grad)
        radius = jnp.linalg.norm(column * step)
        step, predicted = box.reflective_step(
            model, point.params, step, lower, upper, theta, radius
        )
        step = box.strictly_inside(point.params + step, lower, upper) - point.params
        new_point, new_scale, new_factor, ratio, report = self._judge(
            problem,
            path,
            state,
            step,
            predicted,
            column=lambda new, new_scale: _column(problem, new, new_scale),
        )
        new_damping, growth = _nielsen(damping, state.damping_growth, ratio, report)
        new_state = LMState(new_point, new_scale, new_factor, new_damping, growth, state.radius)
        return new_state, report


def _nielsen(damping, growth, ratio, report: StepReport):
    """Nielsen's update of ``(λ, ν)`` after a trial (``nlls.damping.nielsen_update``). After a step
    accepted at the rounding level the cost is within rounding of its minimum and the model is
    trusted, so the damping only slows the last digits (the error along J's smallest singular
    directions shrinks by λ/(σ² + λ) a step): it drops to √eps·λ, which makes the next steps
    Gauss–Newton steps."""
    new_damping, growth = nielsen_update(damping, growth, ratio, report.accepted)
    eps = jnp.finfo(damping.dtype).eps
    rounded = report.rounding & report.accepted
    return jnp.where(rounded, jnp.sqrt(eps) * damping, new_damping), growth


def _column(problem: FlatProblem, point: Point, scale):
    """The column scale of the factorisation at ``point``: Marquardt's ``scale``, or with bounds the
    Coleman–Li scale (``nlls.bounds.effective_scale``)."""
    if problem.bounds is None:
        return scale
    return box.effective_scale(point.params, point.grad, *problem.bounds, scale)[0]
