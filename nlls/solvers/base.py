"""What every method shares: the current point, the step report, Marquardt scaling, and how a trial
step is judged.

Judging a trial at the rounding level. The actual reduction of the cost is computed from the change of
the residual, ``d = r(θ + δ) − r(θ)``, as ``½‖r‖² − ½‖r + d‖² = −dᵀ(r + ½d)``: no difference of two
rounded sums of squares. It still carries the rounding of the two residual evaluations, a few ``eps·cost``
or more, so once the model predicts a reduction below ``resolution(cost)`` (``RESOLUTION · eps · cost``)
the gain ratio is noise. Comparing costs there would reject good steps at random, raise the damping and
end the solve on ``xtol`` some ``√eps`` away from the minimum (the cost is flat to rounding within
``√eps`` of it). Such a trial is judged instead by what stays accurate: the predicted reduction itself
(exact arithmetic on the step), and the gradient ``g = Jᵀr``, which is linear in the distance to the
minimum, not quadratic. The reduction is measured by the trapezoidal rule on the gradient,
``−½(g + g_trial)ᵀδ`` (``gradient_reduction``; exact on a quadratic cost), and its gain ratio decides as
usual, provided the residual and Jacobian are finite and the cost did not rise by more than rounding
can explain (``termination.tolerated_rise``). The solve ends with ``Status.PRECISION``
(``nlls.termination``) when such a trial of an exact step fails (nothing measurable is left to gain),
or when the predicted reduction falls to the noise floor ``termination.floor`` (``‖Jδ‖`` a few ten
``eps·‖r‖``: the step no longer changes the residual at working precision, and the gain ratio is
random).

With a robust loss (``nlls.losses``) the cost is ``½ Σ C²ρ((rᵢ/C)²)``: a ``Point`` holds the corrected
``r̃``, ``J̃`` of ``FlatProblem.model`` (``point_of``), so the methods' models and predictions are
unchanged, and the actual reduction is that of the robust cost (``actual_reduction``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..damping import gain_ratio
from ..linear import Krylov, factorize
from ..problem import FlatProblem
from ..termination import (
    Status,
    Tolerances,
    check,
    floor,
    gradient_cosines,
    gradient_small,
    resolution,
    tolerated_rise,
)


class Point(eqx.Module):
    """An accepted iterate with everything evaluated there. ``jac`` is the dense Jacobian, or
    ``None`` on the matrix-free path (``jacobian_of`` then linearises at ``params`` again) and for
    the methods that use gradients only; those keep no ``residual`` either (``None``).

    With a robust loss (``nlls.losses``) ``residual`` and ``jac`` are those of the model the steps
    are solved on, ``r̃`` and ``J̃``, ``cost`` is ``½ Σ C²ρ(zᵢ)`` and ``grad = J̃ᵀr̃`` its gradient;
    ``plain_residual`` is ``r`` itself (``None`` for the linear loss, where ``residual`` is ``r``).
    """

    params: Float[Array, " n"]
    residual: Float[Array, " m"] | None
    cost: Float[Array, ""]
    jac: Float[Array, "m n"] | None
    grad: Float[Array, " n"]
    plain_residual: Float[Array, " m"] | None = None

    @property
    def plain(self) -> Float[Array, " m"] | None:
        """The residual ``r`` itself."""
        return self.residual if self.plain_residual is None else self.plain_residual

    @property
    def finite(self) -> Bool[Array, ""]:
        if self.jac is None:
            return jnp.all(jnp.isfinite(self.grad)) & jnp.isfinite(self.cost)
        return jnp.all(jnp.isfinite(self.jac)) & jnp.isfinite(self.cost)


def stationary_cosines(problem: FlatProblem, point: Point) -> Float[Array, " n"]:
    """``termination.gradient_cosines`` at ``point``: what ``gtol`` tests (the projected gradient
    with bounds, ``problem.stationarity``); for a method that keeps no residual (the first-order
    baselines) the gradient itself, ``|Jᵀr|``, which their ``gtol`` tests."""
    if point.residual is None:
        return jnp.abs(point.grad)
    jac = point.jac
    if problem.loss.linear:
        residual_norm = jnp.sqrt(2.0 * point.cost)  # ½‖r‖², already summed
    else:
        # The cosines of the weighted problem J_w = diag(√ρ') J, r_w = √ρ' ∘ r, whose J_wᵀr_w is
        # the robust gradient too: r̃ itself is r·ρ'/s with s as small as √eps for an outlier, which
        # would make every cosine look tiny.
        factor, rows = problem.loss.correction(point.plain)
        weights = jnp.sqrt(factor * rows)
        residual_norm = jnp.linalg.norm(weights * point.plain)
        jac = None if jac is None else (weights / rows)[:, None] * jac
    if jac is None:
        grad = problem.stationarity(point.params, point.grad)
        return gradient_cosines(grad, residual_norm, 1.0)
    columns = column_norms(jac)
    grad = problem.stationarity(point.params, point.grad, columns * columns)
    return gradient_cosines(grad, residual_norm, columns)


def jacobian_of(problem: FlatProblem, point: Point):
    """The Jacobian at ``point`` for this step: the stored matrix, or, matrix-free, a fresh
    linearisation (one evaluation of the residual; the operator cannot be carried between steps)."""
    return point.jac if point.jac is not None else problem.operator(point.params)


def cost_of(residual: Float[Array, " m"]) -> Float[Array, ""]:
    """``½‖r‖²``, and ``+∞`` when the residual has a non-finite entry."""
    cost = 0.5 * jnp.sum(residual**2)
    return jnp.where(jnp.isfinite(cost), cost, jnp.inf)


def point_of(problem: FlatProblem, params, residual: Float[Array, " m"], jac) -> tuple[Point, Any]:
    """``(point, model_jac)``: the ``Point`` at ``params`` from its residual ``r`` and Jacobian
    ``J`` (dense, or a ``MatrixFreeJacobian``, which is not kept), with the model's ``r̃`` and
    ``J̃`` (``FlatProblem.model``; ``r`` and ``J`` for the linear loss), the problem's cost and the
    gradient ``J̃ᵀr̃``; and ``J̃`` for the steps from it."""
    model_residual, model_jac = problem.model(residual, jac)
    point = Point(
        params=params,
        residual=model_residual,
        cost=problem.loss.cost(residual),
        jac=model_jac if isinstance(model_jac, jax.Array) else None,
        grad=model_jac.T @ model_residual,
        plain_residual=None if problem.loss.linear else residual,
    )
    return point, model_jac


def point_at(problem: FlatProblem, params: Float[Array, " n"]) -> Point:
    """Evaluate residual and Jacobian at ``params``."""
    return start_point(problem, params)[0]


def start_point(problem: FlatProblem, params: Float[Array, " n"]):
    """``(point, jac, plain_jac)`` at ``params``: the point, the model's Jacobian ``J̃`` for the
    first step (the dense matrix, or the ``MatrixFreeJacobian`` the gradient came from, not
    linearised again), and ``J`` itself, for Marquardt's scale (the same object for the linear
    loss)."""
    residual, plain_jac = problem.linearize(params)
    point, jac = point_of(problem, params, residual, plain_jac)
    return point, jac, plain_jac


def predicted_reduction(point: Point, jac, step: Float[Array, " n"]) -> Float[Array, ""]:
    """The reduction the linear model predicts for ``step``: ``−gᵀδ − ½‖Jδ‖²`` (the general form,
    for any step; a damped step solved exactly has the cancellation-free form of LM)."""
    model_change = jac @ step
    return -(point.grad @ step) - 0.5 * (model_change @ model_change)


def start_size(scale: Float[Array, " n"], params, point: Point) -> Float[Array, ""]:
    """``max(‖Dθ₀‖, √eps·‖r₀‖)``, or 0 when ``θ₀ = 0``: the size of the start in scaled variables
    ``y = Dδ``, which have the residual's units. The floor: a start that is nearly but not exactly
    0 (θ₀ = 1e-11) made the first radius, and LM's first damping, so small that the first step
    measured nothing and the solve stopped at its start, "converged". (A floor of ``‖r₀‖`` itself
    let BoxBOD's first step from NIST's first start send its rate to +∞.)"""
    size = jnp.linalg.norm(scale * params)
    floor = jnp.sqrt(jnp.finfo(params.dtype).eps) * jnp.linalg.norm(point.residual)
    return jnp.where(size > 0, jnp.maximum(size, floor), 0.0)


def initial_radius(factor: float, scale: Float[Array, " n"], params, point) -> Float[Array, ""]:
    """``factor · start_size`` (``factor`` alone when ``θ₀ = 0``): the first trust radius."""
    size = start_size(scale, params, point)
    return (factor * jnp.where(size > 0, size, 1.0)).astype(params.dtype)


def actual_reduction(
    problem: FlatProblem, point: Point, trial_residual: Float[Array, " m"]
) -> Float[Array, ""]:
    """The reduction of the problem's cost from ``point`` to a trial point of residual
    ``trial_residual``: ``reduction`` for the linear loss, ``Loss.reduction`` for a robust one."""
    if problem.loss.linear:
        return reduction(point.residual, trial_residual)
    return problem.loss.reduction(point.plain_residual, trial_residual)


def reduction(residual: Float[Array, " m"], trial_residual: Float[Array, " m"]) -> Float[Array, ""]:
    """``½‖r‖² − ½‖r_trial‖²`` as ``−dᵀ(r + ½d)`` with ``d = r_trial − r``, which does not subtract
    two rounded costs; ``−∞`` when the trial residual is not finite."""
    change = trial_residual - residual
    actual = -(change @ (residual + 0.5 * change))
    return jnp.where(jnp.all(jnp.isfinite(trial_residual)), actual, -jnp.inf)


def gradient_reduction(point: Point, trial: Point, step: Float[Array, " n"]) -> Float[Array, ""]:
    """The reduction of the cost along ``step`` by the trapezoidal rule on its gradient,
    ``−½(g + g_trial)ᵀδ``: exact for a quadratic cost (a linear residual), with an error of order
    ``‖δ‖³`` otherwise, and free of the cancellation that makes ``cost − cost_trial`` noise near a
    minimum (``g`` is linear in the distance to the minimum, the cost quadratic)."""
    return -0.5 * ((point.grad + trial.grad) @ step)


def judged_by_rounding(
    point: Point, predicted: Float[Array, ""], actual: Float[Array, ""], regular: Bool[Array, ""]
) -> tuple[Bool[Array, ""], Bool[Array, ""]]:
    """``(rounding, candidate)``: whether the prediction is below the cost's rounding, and whether
    the trial goes on to be refreshed: by the method's ``regular`` test, or at the rounding level
    when the cost did not rise beyond ``tolerated_rise`` (module docstring)."""
    rounding = jnp.abs(predicted) < resolution(point.cost)
    return rounding, jnp.where(rounding, actual >= -tolerated_rise(point.cost), regular)


def gradient_ratio(point: Point, trial: Point, step, predicted) -> Float[Array, ""]:
    """The gain ratio of ``gradient_reduction``: how a rounding-level trial is accepted."""
    return gain_ratio(gradient_reduction(point, trial, step), predicted)


def precision_reached(rounding, stalled, predicted, cost) -> Bool[Array, ""]:
    """A rounding-level trial ends the solve (``Status.PRECISION``): it ``stalled`` (a step solved
    exactly was refused by ``gradient_ratio``), or its prediction is at the noise floor."""
    return rounding & (stalled | (jnp.abs(predicted) <= floor(cost)))


class StepReport(eqx.Module):
    """What one trial step did, for the termination tests, the counters and the callbacks."""

    accepted: Bool[Array, ""]
    cost_before: Float[Array, ""]
    actual_reduction: Float[Array, ""]
    predicted_reduction: Float[Array, ""]
    step_norm: Float[Array, ""]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    rejected: Int[Array, ""]
    failed: Bool[Array, ""]
    #: the trial's residual (and Jacobian, if computed) were finite; for a line search, every trial's
    finite: Bool[Array, ""]
    rounding: Bool[Array, ""]  # judged at the rounding level (predicted reduction < resolution)
    at_precision: Bool[Array, ""]  # judged there, and working precision is reached (converged)
    #: the step's length was set by the damping, not the model (LM: λ > (‖Jⱼ‖/Dⱼ)² for some j), so
    #: a short accepted step does not mean convergence (``termination.check``'s ``xtol``)
    damped: Bool[Array, ""] = eqx.field(default_factory=lambda: jnp.asarray(False))


def damping_limited(report: StepReport, limited: Bool[Array, ""]) -> StepReport:
    """``report`` with ``damped`` set: the trial's length was set by the damping or the trust
    radius rather than by the model, so a short accepted step says nothing about convergence."""
    return eqx.tree_at(lambda r: r.damped, report, jnp.asarray(limited))


def on_boundary(scaled_step: Float[Array, " n"], radius: Float[Array, ""]) -> Bool[Array, ""]:
    """The step reached the trust region's boundary (``‖Dδ‖ ≥ 0.99 Δ``): the radius set its length."""
    return jnp.linalg.norm(scaled_step) >= 0.99 * radius


def simple_report(accepted, cost, actual, predicted, step_norm, nfev, njev, finite) -> StepReport:
    """The report of a step with no line search and no rounding-level judgement (the first-order
    and minibatch methods); a step not ``accepted`` counts as rejected."""
    false = jnp.asarray(False)
    return StepReport(
        accepted=accepted,
        cost_before=cost,
        actual_reduction=actual,
        predicted_reduction=predicted,
        step_norm=step_norm,
        nfev=jnp.asarray(nfev, jnp.int32),
        njev=jnp.asarray(njev, jnp.int32),
        rejected=(~accepted).astype(jnp.int32),
        failed=false,
        finite=finite,
        rounding=false,
        at_precision=false,
    )


def column_norms(jac) -> Float[Array, " n"]:
    """``‖J[:, j]‖``: from the matrix, or by ``n`` JVPs of a ``MatrixFreeJacobian``."""
    if not isinstance(jac, jax.Array):
        return jac.column_norms()
    return jnp.sqrt(jnp.sum(jac**2, axis=0))


def norm_scale(norms: Float[Array, " n"]) -> Float[Array, " n"]:
    """The scale of columns with norms ``norms``: each rounded down to a power of two; a zero column
    gets the largest norm (1 when all are zero). A fixed 1 there was not free of units: from a start
    where a column vanishes (a rate whose amplitude starts at 0) the scale 1 stayed, and a residual
    of size 1e-7 made that column 1e-8 of the others once it woke up — below the rank cut-off, so
    the steps never moved that parameter."""
    fill = jnp.max(norms, initial=0.0)
    return power_of_two(jnp.where(norms > 0, norms, jnp.where(fill > 0, fill, 1.0)))


def power_of_two(positive: Float[Array, " n"]) -> Float[Array, " n"]:
    """The largest power of two at most each entry (``2^⌊log₂ x⌋``): a scale ``D`` of such entries makes
    ``J D⁻¹`` and ``δ = y / D`` exact in floating point, so scaling costs no accuracy. (Scaling by
    the column norms themselves perturbs every entry of J by rounding; measured on a linear problem
    of condition 5e8, the scaled QR solve lost two digits against the unscaled one.)"""
    _, exponent = jnp.frexp(positive)  # positive = mantissa · 2^exponent, mantissa in [½, 1)
    return jnp.ldexp(jnp.ones_like(positive), exponent - 1)


def default_scaling(path) -> bool:
    """Marquardt scaling by default: on the normal path; on the matrix-free path when its column
    norms are cheap (``Krylov.jacobi``: ``n`` JVPs cost no more than one Krylov solve); off on the
    minimum-norm path, whose step should be the one of least Euclidean norm."""
    if isinstance(path, Krylov):
        return path.jacobi
    return path == "normal"


def scale_and_curvature(
    jac, scaling: bool, plain_jac=None
) -> tuple[Float[Array, " n"], Float[Array, ""]]:
    """The initial scale ``D`` (``initial_scale``) and ``max diag(JₛᵀJₛ)``, the scale of LM's initial
    damping, from one computation of the column norms. Matrix-free without scaling the column norms
    would cost ``n`` JVPs; the largest eigenvalue of ``JₛᵀJₛ`` by a few power iterations stands in
    for the diagonal's maximum there (an upper bound of the same size).

    With a robust loss ``jac`` is the model's ``J̃`` and ``plain_jac`` is ``J``: ``D`` comes from
    ``J`` (the units of the parameters). ``J̃``'s rows of outliers are ``√eps``-small (``nlls.losses``),
    so from a start where most residuals are outliers its column norms would give a scale ``10⁸``
    too small, which jumps up once they become inliers; λ, in scaled units, then took tens of steps
    to follow (Huber on a decay with outliers stopped on ``xtol`` after two steps)."""
    n = jac.shape[1]
    if plain_jac is not None and plain_jac is not jac and scaling:
        scale = norm_scale(column_norms(plain_jac))
        return scale, jnp.max((column_norms(jac) / scale) ** 2, initial=0.0)
    if isinstance(jac, jax.Array) or scaling:
        norms = column_norms(jac)
        scale = norm_scale(norms) if scaling else jnp.ones(n, jac.dtype)
        return scale, jnp.max((norms / scale) ** 2, initial=0.0)
    scale = jnp.ones(n, jac.dtype)
    vector = scale / jnp.sqrt(n)

    def power(_, carry):
        vector, _ = carry
        image = jac.T @ (jac @ vector)
        size = jnp.linalg.norm(image)
        return image / jnp.where(size > 0, size, 1.0), size

    return scale, jax.lax.fori_loop(0, 8, power, (vector, jnp.zeros((), jac.dtype)))[1]


def initial_scale(jac, scaling: bool) -> Float[Array, " n"]:
    """Marquardt scaling ``D = ‖J[:, j]‖`` rounded down to a power of two (``norm_scale``), or
    ``D = I``."""
    n = jac.shape[1]
    if not scaling:
        return jnp.ones(n, dtype=jac.dtype)
    return norm_scale(column_norms(jac))


def updated_scale(scale: Float[Array, " n"], jac, scaling: bool) -> Float[Array, " n"]:
    """``D ← max(D, ‖J[:, j]‖)``: the running maximum of the column norms (Moré 1978), each rounded
    down to a power of two."""
    if not scaling:
        return scale
    norms = column_norms(jac)
    return jnp.maximum(scale, jnp.where(norms > 0, norm_scale(norms), 0.0))


def refresh(
    problem: FlatProblem,
    path: str,
    scaling: bool,
    scale,
    params,
    residual,
    jacobian: Callable[[], Array],
    column=None,
):
    """The point, scale and factorisation at an accepted trial point, whose residual is known and
    whose Jacobian ``jacobian()`` materialises (``FlatProblem.evaluate``); the scale and the
    factorisation are those of the model's ``J̃`` and ``r̃`` (``point_of``), the scale that of ``J``
    itself (``scale_and_curvature``). ``column(point, scale)`` gives the column scale of the
    factorisation when it is not the scale itself (a bounded step: ``nlls.bounds.effective_scale``)."""
    plain_jac = jacobian()
    point, jac = point_of(problem, params, residual, plain_jac)
    new_scale = updated_scale(scale, plain_jac, scaling)
    factor_scale = new_scale if column is None else column(point, new_scale)
    return point, new_scale, factorize(path, jac, point.residual, factor_scale, problem.layout)


def accept_if(
    candidate: Bool[Array, ""],
    refreshed: Callable[[], tuple],
    current: tuple,
    keep: Callable[[Point], Bool[Array, ""]] | None = None,
):
    """``(refreshed(), True, True)`` when ``candidate`` holds, the new point is finite and
    ``keep(new point)`` holds (if given), else ``(current, False, finite)``; ``refreshed`` (Jacobian
    and factorisation at the trial point) runs only for a candidate, and a non-finite Jacobian there
    rejects the step after all (``finite`` is False then, and True when nothing was refreshed)."""

    def accept():
        new = refreshed()
        finite = new[0].finite
        good = finite if keep is None else finite & keep(new[0])
        return jax.lax.cond(good, lambda: (new, good, finite), lambda: (current, good, finite))

    return jax.lax.cond(candidate, accept, lambda: (current, jnp.asarray(False), jnp.asarray(True)))


def judge_trial(
    problem: FlatProblem,
    path: str,
    scaling: bool,
    point: Point,
    scale,
    factor,
    step: Float[Array, " n"],
    predicted: Float[Array, ""],
    accept_threshold: float,
    evaluations: int = 1,
    column=None,
):
    """Evaluate ``point.params + step`` once and accept it when the gain ratio
    ``ρ = (actual reduction) / predicted`` exceeds ``accept_threshold`` and the residual and Jacobian
    there are finite; the Jacobian and factorisation at the trial point are computed only then. A
    prediction below the rounding level is judged by the gradient instead (module docstring); when
    such a trial of an exact step (``factor.exact``: the damped system solved to rounding) fails, the
    report says working precision is reached. An inexact step (Krylov, Steihaug's CG: ``factor`` not
    exact or ``None``) is then only rejected: a shorter one may still gain.

    ``column``: as in ``refresh``.

    Returns ``(point, scale, factor, ratio, report)``: the new ones when accepted, the old otherwise;
    at the rounding level ``ratio`` is that of ``gradient_reduction`` (``−∞`` for a rejected trial).
    """
    trial_params = point.params + step
    trial_residual, trial_jacobian = problem.evaluate(trial_params)
    actual = actual_reduction(problem, point, trial_residual)
    ratio = gain_ratio(actual, predicted)
    rounding, candidate = judged_by_rounding(point, predicted, actual, ratio > accept_threshold)
    exact = factor is not None and factor.exact
    (new_point, new_scale, new_factor), accepted, jac_finite = accept_if(
        candidate,
        lambda: refresh(
            problem, path, scaling, scale, trial_params, trial_residual, trial_jacobian, column
        ),
        (point, scale, factor),
        keep=lambda new: (
            ~rounding | (gradient_ratio(point, new, step, predicted) > accept_threshold)
        ),
    )
    report = StepReport(
        accepted=accepted,
        cost_before=point.cost,
        actual_reduction=actual,
        predicted_reduction=predicted,
        step_norm=jnp.linalg.norm(step),
        nfev=jnp.asarray(evaluations, jnp.int32),
        njev=candidate.astype(jnp.int32),
        rejected=(~accepted).astype(jnp.int32),
        failed=jnp.asarray(False),
        finite=jnp.isfinite(actual) & jac_finite,
        rounding=rounding,
        at_precision=precision_reached(
            rounding, candidate & jac_finite & ~accepted & exact, predicted, point.cost
        ),
    )
    measured = gradient_ratio(point, new_point, step, predicted)
    ratio = jnp.where(rounding, jnp.where(accepted, measured, -jnp.inf), ratio)
    return new_point, new_scale, new_factor, ratio, report


class Method(eqx.Module):
    """What the compiled loop (``nlls.loop``) and the plan (``nlls.plan``) need of a method.

    A method is an ``eqx.Module`` holding its options. Subclasses define

    * ``init(problem, path, params) -> state``: evaluate the start; ``state.point`` is a ``Point``;
    * ``step(problem, path, state) -> (state, StepReport)``: one trial step, accepted or not;
    * ``damping_value(state)``: what ``StepInfo.damping`` reports;

    and may override the hooks below, whose defaults are those of the least-squares methods
    (Levenberg–Marquardt, Gauss–Newton, dogleg, Steihaug): the termination tests of
    ``nlls.termination``, a budget of accepted steps, one evaluation at the start, and the final
    point as it stands. Options that are JAX arrays are traced by the plan (a sweep over them
    compiles once); the others are part of the compiled program.
    """

    #: the Jacobian (``"jacobian"``, a linear path is chosen) or only gradients (``"gradient"``:
    #: reverse mode, no linear path)
    needs: ClassVar[str] = "jacobian"
    #: ``max_steps`` counts accepted ``"steps"`` or ``"iterations"`` (trials, accepted or not)
    budget: ClassVar[str] = "steps"
    #: whether ``Checkpoint`` and ``resume`` can save and restore a solve
    checkpointable: ClassVar[bool] = True
    #: a plain call is one compiled program (usable under ``jax.jit``/``jax.vmap`` in one piece);
    #: otherwise it is the driver's start, loop and finish programs called in a row, which
    #: compiles a long loop body once for both uses
    one_program: ClassVar[bool] = True
    #: residual and Jacobian evaluations counted at the start
    start_evaluations: ClassVar[int] = 1

    def start_status(self, tol: Tolerances, point: Point, problem: FlatProblem) -> Int[Array, ""]:
        """``NONFINITE_START``, ``GTOL`` at a stationary start, or ``RUNNING``."""
        finite = jnp.all(jnp.isfinite(point.params)) & point.finite
        status = jnp.where(
            gradient_small(tol, stationary_cosines(problem, point)), Status.GTOL, Status.RUNNING
        )
        return jnp.where(finite, status, Status.NONFINITE_START).astype(jnp.int32)

    def verdict(
        self, tol: Tolerances, report: StepReport, before: Point, after: Point, problem: FlatProblem
    ) -> Int[Array, ""]:
        """The status after one trial step from ``before`` to ``after`` (``termination.check``, on
        ``problem.stationarity``), or a failed line search, ``LINE_SEARCH_FAILED``. (The loop turns an
        ``xtol`` stop among non-finite trials into ``NONFINITE_TRIALS``: ``nlls.loop``.)"""
        cosines = stationary_cosines(problem, after)
        status = check(tol, report, jnp.linalg.norm(before.params), cosines)
        return jnp.where(
            (status == Status.RUNNING) & report.failed, Status.LINE_SEARCH_FAILED, status
        ).astype(jnp.int32)

    def bounds_refused(self) -> str | None:
        """Why this method cannot take bounds (a message naming the fix), or ``None`` when it
        can; only Levenberg–Marquardt does (``nlls.bounds``)."""
        return (
            f"{self.label} does not take bounds; use method='lm' (Levenberg–Marquardt with "
            "Coleman–Li reflective steps)"
        )

    def uses_scaling(self, path) -> bool:
        """Marquardt scaling: the method's ``scaling`` option, or the path's default
        (``default_scaling``) when that is ``None`` or the method has no such option."""
        scaling = getattr(self, "scaling", None)
        return default_scaling(path) if scaling is None else bool(scaling)

    @property
    def label(self) -> str:
        """The method's name as a report gives it (``Stats.method``)."""
        return type(self).__name__

    def open_segment(self, state):
        """The state at the start of a driver's segment (minibatch runs reset running sums)."""
        return state

    def close_segment(self, problem: FlatProblem, state):
        """The state at the end of a segment, as its snapshot reports it."""
        return state

    def final_point(self, problem: FlatProblem, state, params=None) -> Point:
        """The point the ``Solution`` reports, with its residual: the state's point, or the point
        at ``params`` (flat) when given (``EarlyStopping`` restoring the best)."""
        return state.point if params is None else point_at(problem, params)


class RadiusState(eqx.Module):
    """The state of a trust-region method: the point, the Marquardt scale, the trust radius, and
    the factorisation of the Jacobian (``None`` for a method that solves its step without one)."""

    point: Point
    scale: Float[Array, " n"]
    radius: Float[Array, ""]
    factor: eqx.Module | None = None


class RadiusMethod(Method):
    """A method globalised by a trust radius (dogleg, Steihaug): it starts at
    ``initial_radius · ‖Dθ₀‖`` and reports the radius as its damping."""

    #: whether the step needs the factorisation of the Jacobian (dogleg) or not (Steihaug's CG)
    factorized: ClassVar[bool] = True

    def init(self, problem: FlatProblem, path, params) -> RadiusState:
        point, jac, plain_jac = start_point(problem, params)
        scale = initial_scale(plain_jac, self.uses_scaling(path))
        factor = (
            factorize(path, jac, point.residual, scale, problem.layout) if self.factorized else None
        )
        return RadiusState(
            point, scale, initial_radius(self.initial_radius, scale, params, point), factor
        )

    def damping_value(self, state: RadiusState) -> Float[Array, ""]:
        """What ``StepInfo.damping`` reports: the trust radius Δ."""
        return state.radius
