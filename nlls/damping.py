"""Globalisation rules: the LM damping update, the trust-radius update, the Armijo test.

Each is a small pure function of the gain ratio

    ρ = (actual reduction) / (predicted reduction)
      = (½‖r(θ)‖² − ½‖r(θ + δ)‖²) / (½‖r‖² − ½‖r + Jδ‖²),

which compares the cost with its Gauss–Newton model along the trial step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
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
    accepted: Bool[Array, ""],
) -> Float[Array, ""]:
    """The classical rule (Nocedal & Wright, Alg. 4.1; Moré 1978).

    ``ρ < 1/4`` or the step rejected: ``Δ ← ‖Dδ‖/4`` (shrink to a quarter of the step just tried);
    ``ρ > 3/4`` and the step reached the boundary (``‖Dδ‖ ≥ 0.99 Δ``): ``Δ ← 2Δ``;
    otherwise unchanged. A rejected trial always shrinks the region, whatever ``accept_threshold``
    is: with ``η ≥ 1/4`` a trial with ``1/4 ≤ ρ ≤ η`` would otherwise be tried again unchanged, forever.
    """
    shrunk = 0.25 * step_norm
    grown = 2.0 * radius
    at_boundary = step_norm >= 0.99 * radius
    new_radius = jnp.where(
        (ratio < 0.25) | ~accepted,
        shrunk,
        jnp.where((ratio > 0.75) & at_boundary, grown, radius),
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


def damping_for_radius(
    scaled_step: Callable[[Array], Float[Array, " n"]],
    gradient_norm: Float[Array, ""],
    radius: Float[Array, ""],
    tolerance: float = 0.1,
    max_iterations: int = 10,
) -> tuple[Float[Array, ""], Float[Array, " n"]]:
    """The damping of Moré's trust-region form of LM (Moré 1978; MINPACK's ``lmpar``).

    Finds ``λ ≥ 0`` whose scaled step ``y(λ) = Dδ(λ)`` has ``|‖y‖ − Δ| ≤ tolerance · Δ``, or ``λ = 0``
    when the Gauss–Newton step already has ``‖y(0)‖ ≤ (1 + tolerance) Δ``. Since
    ``ψ(λ) = 1/‖y(λ)‖`` is nearly linear in ``λ`` (Hebden 1973), the root of ``ψ(λ) − 1/Δ`` is found
    by regula falsi (Illinois variant) on the bracket ``[0, ‖gₛ‖/Δ]``: at ``λ = ‖gₛ‖/Δ``,
    ``‖y‖ ≤ ‖gₛ‖/λ = Δ``. ``scaled_step(λ)`` returns ``y(λ)``; ``gradient_norm`` is ``‖gₛ‖ = ‖D⁻¹Jᵀr‖``.
    Returns ``(λ, y(λ))``.
    """
    dtype = radius.dtype
    zero = jnp.zeros((), dtype)
    gauss_newton = scaled_step(0.0)  # a Python zero: the step solvers' minimum-norm branch
    gauss_newton_norm = jnp.linalg.norm(gauss_newton)
    upper = gradient_norm / radius
    upper_step = scaled_step(upper)

    def excess(norm):  # ψ(λ) − 1/Δ: negative while the step is too long
        return 1.0 / jnp.maximum(norm, jnp.finfo(dtype).tiny) - 1.0 / radius

    def unfinished(carry):
        _, _, _, _, _, _, norm, _, count = carry
        return (jnp.abs(norm - radius) > tolerance * radius) & (count < max_iterations)

    def regula_falsi(carry):
        low, f_low, high, f_high, _, _, _, side, count = carry
        span = f_high - f_low
        guess = jnp.where(
            span > 0,
            high - f_high * (high - low) / jnp.where(span > 0, span, 1.0),
            0.5 * (low + high),
        )
        guess = jnp.clip(guess, jnp.maximum(low, jnp.finfo(dtype).tiny), high)
        step = scaled_step(guess)
        norm = jnp.linalg.norm(step)
        f = excess(norm)
        too_long = f < 0
        # Illinois: halve the stale end's value when the same end is kept twice in a row.
        f_high = jnp.where(too_long & (side == -1), 0.5 * f_high, f_high)
        f_low = jnp.where(~too_long & (side == 1), 0.5 * f_low, f_low)
        low, f_low = jnp.where(too_long, guess, low), jnp.where(too_long, f, f_low)
        high, f_high = jnp.where(too_long, high, guess), jnp.where(too_long, f_high, f)
        side = jnp.where(too_long, -1, 1)
        return low, f_low, high, f_high, guess, step, norm, side, count + 1

    upper_norm = jnp.linalg.norm(upper_step)
    start = (
        zero,
        excess(gauss_newton_norm),
        upper,
        excess(upper_norm),
        upper,
        upper_step,
        upper_norm,
        jnp.asarray(0),
        jnp.asarray(0),
    )
    *_, damping, step, _, _, _ = jax.lax.while_loop(unfinished, regula_falsi, start)
    inside = gauss_newton_norm <= (1 + tolerance) * radius
    return jnp.where(inside, zero, damping), jnp.where(inside, gauss_newton, step)


def more_radius_update(
    radius: Float[Array, ""],
    ratio: Float[Array, ""],
    scaled_step_norm: Float[Array, ""],
    damping: Float[Array, ""],
    actual_reduction: Float[Array, ""],
    predicted_reduction: Float[Array, ""],
    cost: Float[Array, ""],
    accepted: Bool[Array, ""],
) -> Float[Array, ""]:
    """Moré's radius update for trust-region LM (Moré 1978, MINPACK ``lmder``).

    ``ρ < 1/4`` or the step rejected (see ``trust_radius_update``): ``Δ ← μ · min(Δ, 10‖Dδ‖)`` with ``μ = ½·d/(d + ½a)`` clipped to [0.1, ½], where
    ``d = −2 pred`` is the model's directional derivative of ``‖r‖²`` and ``a`` the actual reduction of
    ``‖r‖²`` — the minimiser of the quadratic through those values; ``μ = 0.1`` when the trial cost is
    over 100 times the current one. ``ρ ≥ 3/4`` or ``λ = 0``: ``Δ ← 2‖Dδ‖``. Otherwise unchanged.
    """
    derivative = -2.0 * predicted_reduction
    actual = 2.0 * actual_reduction
    denominator = derivative + 0.5 * actual
    safe = jnp.isfinite(actual) & (denominator < 0)
    interpolated = jnp.where(safe, 0.5 * derivative / jnp.where(safe, denominator, -1.0), 0.1)
    factor = jnp.where(actual >= 0, 0.5, jnp.clip(interpolated, 0.1, 0.5))
    factor = jnp.where(cost - actual_reduction > 100.0 * cost, 0.1, factor)
    shrunk = factor * jnp.minimum(radius, 10.0 * scaled_step_norm)
    grown = 2.0 * scaled_step_norm
    new_radius = jnp.where(
        (ratio < 0.25) | ~accepted,
        shrunk,
        jnp.where((ratio >= 0.75) | (damping == 0), grown, radius),
    )
    tiny = jnp.finfo(radius.dtype).tiny
    return jnp.clip(new_radius, tiny, 1.0 / tiny).astype(radius.dtype)


def boundary_length(
    start: Float[Array, " n"], direction: Float[Array, " n"], radius
) -> Float[Array, ""]:
    """The ``τ ≥ 0`` with ``‖start + τ·direction‖ = Δ`` for ``‖start‖ ≤ Δ`` (0 when ``direction``
    is 0). Computed in units of Δ, so that no square overflows or underflows (Δ⁴ of a residual of
    1e-140 is 0 in float64), and by the form of the root of the quadratic that does not cancel."""
    safe_radius = jnp.where(radius > 0, radius, 1.0)
    unit_start, unit_direction = start / safe_radius, direction / safe_radius
    a = unit_direction @ unit_direction
    b = 2 * (unit_start @ unit_direction)
    c = unit_start @ unit_start - 1.0
    root = jnp.sqrt(jnp.maximum(b**2 - 4 * a * c, 0.0))
    positive = b + root
    return jnp.where(
        b >= 0,
        -2 * c / jnp.where(positive > 0, positive, 1.0),
        (root - b) / (2 * jnp.where(a > 0, a, 1.0)),
    )
