"""What every method shares: the current point, the step report, and Marquardt scaling."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..damping import gain_ratio
from ..linear import factorize
from ..problem import FlatProblem


class Point(eqx.Module):
    """An accepted iterate with everything evaluated there."""

    params: Float[Array, " n"]
    residual: Float[Array, " m"]
    cost: Float[Array, ""]
    jac: Float[Array, "m n"]
    grad: Float[Array, " n"]

    @property
    def finite(self) -> Bool[Array, ""]:
        return jnp.all(jnp.isfinite(self.jac)) & jnp.isfinite(self.cost)


def cost_of(residual: Float[Array, " m"]) -> Float[Array, ""]:
    """``½‖r‖²``, and ``+∞`` when the residual has a non-finite entry."""
    cost = 0.5 * jnp.sum(residual**2)
    return jnp.where(jnp.isfinite(cost), cost, jnp.inf)


def point_of(params, residual: Float[Array, " m"], jac: Float[Array, "m n"]) -> Point:
    """The ``Point`` with cost and gradient ``Jᵀr`` derived from a residual and its Jacobian."""
    return Point(
        params=params, residual=residual, cost=cost_of(residual), jac=jac, grad=jac.T @ residual
    )


def point_at(problem: FlatProblem, params: Float[Array, " n"]) -> Point:
    """Evaluate residual and Jacobian at ``params``."""
    return point_of(params, *problem.linearize(params))


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
    finite: Bool[Array, ""]  # the trial's residual (and Jacobian, if computed) were finite


def column_norms(jac: Float[Array, "m n"]) -> Float[Array, " n"]:
    return jnp.sqrt(jnp.sum(jac**2, axis=0))


def initial_scale(jac: Float[Array, "m n"], scaling: bool) -> Float[Array, " n"]:
    """Marquardt scaling ``D = ‖J[:, j]‖`` (1 where a column is zero), or ``D = I``."""
    n = jac.shape[1]
    if not scaling:
        return jnp.ones(n, dtype=jac.dtype)
    norms = column_norms(jac)
    return jnp.where(norms > 0, norms, 1.0)


def updated_scale(
    scale: Float[Array, " n"], jac: Float[Array, "m n"], scaling: bool
) -> Float[Array, " n"]:
    """``D ← max(D, ‖J[:, j]‖)``: the running maximum of the column norms (Moré 1978)."""
    if not scaling:
        return scale
    return jnp.maximum(scale, column_norms(jac))


def refresh(path: str, scaling: bool, scale, params, residual, jacobian: Callable[[], Array]):
    """The point, scale and factorisation at an accepted trial point, whose residual is known and
    whose Jacobian ``jacobian()`` materialises (``FlatProblem.evaluate``)."""
    jac = jacobian()
    point = point_of(params, residual, jac)
    new_scale = updated_scale(scale, jac, scaling)
    return point, new_scale, factorize(path, jac, residual, new_scale)


def accept_if(candidate: Bool[Array, ""], refreshed: Callable[[], tuple], current: tuple):
    """``(refreshed(), True)`` when ``candidate`` holds and the new point is finite, else
    ``(current, False)``; ``refreshed`` (Jacobian and factorisation at the trial point) runs only for
    a candidate, and a non-finite Jacobian there rejects the step after all."""

    def accept():
        new = refreshed()
        finite = new[0].finite
        return jax.lax.cond(finite, lambda: (new, finite), lambda: (current, finite))

    return jax.lax.cond(candidate, accept, lambda: (current, jnp.asarray(False)))


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
):
    """Evaluate ``point.params + step`` once and accept it when the gain ratio
    ``ρ = (actual reduction) / predicted`` exceeds ``accept_threshold`` and the residual and Jacobian
    there are finite; the Jacobian and factorisation at the trial point are computed only then.

    Returns ``(point, scale, factor, ratio, report)``: the new ones when accepted, the old otherwise.
    """
    trial_params = point.params + step
    trial_residual, trial_jacobian = problem.evaluate(trial_params)
    actual = point.cost - cost_of(trial_residual)
    ratio = gain_ratio(actual, predicted)
    candidate = ratio > accept_threshold
    (new_point, new_scale, new_factor), accepted = accept_if(
        candidate,
        lambda: refresh(path, scaling, scale, trial_params, trial_residual, trial_jacobian),
        (point, scale, factor),
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
        finite=jnp.isfinite(actual) & ~(candidate & ~accepted),
    )
    return new_point, new_scale, new_factor, ratio, report
