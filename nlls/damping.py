"""Globalisation rules: the LM damping update, the trust-radius update, the Armijo test.

Each is a small pure function of the gain ratio

    ρ = (actual reduction) / (predicted reduction)
      = (½‖r(θ)‖² − ½‖r(θ + δ)‖²) / (½‖r‖² − ½‖r + Jδ‖²),

which compares the cost with its Gauss–Newton model along the trial step.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def gain_ratio(actual_reduction, predicted_reduction) -> Float[Array, ""]:
    """``ρ = actual / predicted``; ``−∞`` when the model predicts no decrease or the trial cost is
    not finite, so such a step is always rejected."""
    valid = (predicted_reduction > 0) & jnp.isfinite(actual_reduction)
    safe_predicted = jnp.where(valid, predicted_reduction, 1.0)
    return jnp.where(valid, actual_reduction / safe_predicted, -jnp.inf)


def nielsen_update(
    damping: Float[Array, ""],
    growth: Float[Array, ""],
    ratio: Float[Array, ""],
    accepted: Bool[Array, ""],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Nielsen's rule (Nielsen 1999; Madsen, Nielsen & Tingleff 2004, eq. 3.16).

    accepted: ``λ ← λ · max(1/3, 1 − (2ρ − 1)³)``, ``ν ← 2``;
    rejected: ``λ ← λ · ν``, ``ν ← 2ν``.

    ``λ`` and ``ν`` are kept within ``[tiny, 1/tiny]`` of their dtype so that neither underflows to
    zero after a long run of good steps nor overflows after a long run of rejections.
    """
    dtype = damping.dtype
    tiny = jnp.finfo(dtype).tiny
    shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
    new_damping = jnp.where(accepted, damping * jnp.where(accepted, shrink, 1.0), damping * growth)
    new_growth = jnp.where(accepted, 2.0, 2.0 * growth)
    return (
        jnp.clip(new_damping, tiny, 1.0 / tiny).astype(dtype),
        jnp.minimum(new_growth, 1.0 / tiny).astype(dtype),
    )


def trust_radius_update(
    radius: Float[Array, ""],
    ratio: Float[Array, ""],
    step_norm: Float[Array, ""],
) -> Float[Array, ""]:
    """The classical rule (Nocedal & Wright, Alg. 4.1; Moré 1978).

    ``ρ < 1/4``: ``Δ ← ‖Dδ‖/4`` (shrink to a quarter of the step just tried);
    ``ρ > 3/4`` and the step reached the boundary (``‖Dδ‖ ≥ 0.99 Δ``): ``Δ ← 2Δ``;
    otherwise unchanged.
    """
    shrunk = 0.25 * step_norm
    grown = 2.0 * radius
    at_boundary = step_norm >= 0.99 * radius
    new_radius = jnp.where(
        ratio < 0.25, shrunk, jnp.where((ratio > 0.75) & at_boundary, grown, radius)
    )
    tiny = jnp.finfo(radius.dtype).tiny
    return jnp.clip(new_radius, tiny, 1.0 / tiny).astype(radius.dtype)


def armijo_holds(
    cost_trial: Float[Array, ""],
    cost: Float[Array, ""],
    step_length: Float[Array, ""],
    slope: Float[Array, ""],
    constant: float,
) -> Bool[Array, ""]:
    """Sufficient decrease: ``f(θ + αδ) ≤ f(θ) + c α ∇f(θ)ᵀδ``, the trial cost finite and strictly
    below ``f(θ)`` (near a minimum ``c α ∇f(θ)ᵀδ`` can round away, and a step that does not lower
    the cost is no step)."""
    sufficient = cost_trial <= cost + constant * step_length * slope
    return jnp.isfinite(cost_trial) & sufficient & (cost_trial < cost)
