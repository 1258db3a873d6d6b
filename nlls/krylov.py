"""Krylov solvers on a Jacobian seen only through products: damped CGLS and Steihaug–Toint CG.

Both work on an operator ``A`` (m×n) given by ``A @ v`` (a Jacobian–vector product) and ``A.T @ u``
(a vector–Jacobian product); each iteration costs one of each. ``A`` is the scaled Jacobian
``Jₛ = J D⁻¹`` of the step solvers (``nlls.linear``); for a dense ``J`` the same code runs on the matrix.

Damped CGLS (``damped_cgls``)
    The damped step ``y = argmin ‖A y − b‖² + λ‖y‖²`` (``b = −r``) solves the normal equations
    ``(AᵀA + λI) y = Aᵀb``. CGLS (Hestenes & Stiefel 1952; Björck 1996, §7.4) is conjugate gradients on
    those equations arranged so that ``AᵀA`` is never formed and the residual ``s = b − A y`` is
    updated in the m-space:

        y₀ = 0, s₀ = b, q₀ = Aᵀs₀, p₀ = q₀, γ₀ = ‖q₀‖²
        t = A pₖ,  αₖ = γₖ / (‖t‖² + λ‖pₖ‖²)
        yₖ₊₁ = yₖ + αₖ pₖ,  sₖ₊₁ = sₖ − αₖ t,  qₖ₊₁ = Aᵀsₖ₊₁ − λ yₖ₊₁  (the normal-equation residual)
        γₖ₊₁ = ‖qₖ₊₁‖²,  pₖ₊₁ = qₖ₊₁ + (γₖ₊₁/γₖ) pₖ

    Started at ``y = 0`` the iterates stay in the range of ``Aᵀ``, so at ``λ = 0`` CGLS converges to the
    minimum-norm least-squares solution, the same step as the dense paths. Each iterate decreases the
    damped model ``½‖A y − b‖² + ½λ‖y‖²``, so a truncated solve is still a descent step.

    Stopping (inexact Newton; Dembo, Eisenstat & Steihaug 1982): ``‖qₖ‖ ≤ η ‖q₀‖`` where ``q₀ = Aᵀb``
    is the (scaled) gradient, with the forcing term ``η = min(η_max, √‖q₀‖)`` unless a fixed
    tolerance is given, or after ``max_steps`` iterations. The classical cap ``η_max = ½`` (Nocedal &
    Wright, §7.1) stops CGLS after an iteration or two while the gradient is large, a nearly
    steepest-descent step; the damping already regularises the system, and solving it well pays.
    Measured on MLP fits (History cost at fixed times, ``linear="krylov"``): on 10,701 parameters
    and 300 residuals the cost after 2 s was 4.8e-4 with ``η_max = ½``, 6.4e-5 with 0.1, 3.0e-5 with
    a fixed 1e-2 and 5.5e-7 with a fixed 1e-3; on 1153 parameters and 20,000 residuals after 8 s,
    11.0, 7.5, 0.14 and 1.1e-3. So ``η_max = FORCING_MAX = 10⁻³``.

    lineax's ``CG`` stops on an element-wise test (``|rᵢ| ≤ atol + rtol·|bᵢ|``), which is not the
    forcing rule above and fails on zero gradient components, and its ``LSMR`` takes no damping; so
    this loop is written here.

Steihaug–Toint CG (``steihaug``)
    The trust-region subproblem ``min gᵀy + ½‖A y‖² s.t. ‖y‖ ≤ Δ`` with ``g = Aᵀr`` (Steihaug 1983;
    Toint 1981; Nocedal & Wright, Alg. 7.2): conjugate gradients on ``AᵀA y = −g`` from ``y = 0``,
    stopped when the next iterate would leave the trust region (the step then ends on the boundary
    along the current direction), when a direction has zero curvature ``‖A p‖ = 0`` (the boundary along
    it), when the residual meets the forcing test, or after ``max_steps`` iterations. The model
    decreases monotonically along the iterates and ``‖yₖ‖`` increases, so the truncated step is a
    descent step at least as good as the Cauchy point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .damping import boundary_length

FORCING_MAX = 1e-3


def forcing_tolerance(gradient_norm: Float[Array, ""], tolerance: float | None) -> Array:
    """The relative tolerance η of an inexact step: ``tolerance`` when given, else
    ``min(FORCING_MAX, √‖g‖)`` (tighter still near a minimum: superlinear convergence of the
    inexact Newton iteration)."""
    if tolerance is not None:
        return jnp.asarray(tolerance, gradient_norm.dtype)
    return jnp.minimum(FORCING_MAX, jnp.sqrt(gradient_norm))


def damped_cgls(
    operator, rhs: Float[Array, " m"], damping, *, max_steps: int, tolerance: float | None
) -> tuple[Float[Array, " n"], Int[Array, ""]]:
    """``y ≈ argmin ‖A y − rhs‖² + λ‖y‖²`` by CGLS; returns ``(y, iterations)``. ``damping`` is a
    scalar ``λ`` or a vector ``Λ`` of positive entries (then ``yᵀΛy`` replaces ``λ‖y‖²``)."""
    gradient = operator.T @ rhs
    n = gradient.shape[0]
    damping = jnp.asarray(damping, gradient.dtype)
    start_norm = jnp.linalg.norm(gradient)
    eta = forcing_tolerance(start_norm, tolerance)
    threshold = eta * start_norm
    tiny = jnp.finfo(gradient.dtype).tiny

    def keep_going(carry):
        _, _, _, _, gamma, count = carry
        return (count < max_steps) & (jnp.sqrt(gamma) > threshold) & (gamma > tiny)

    def iterate(carry):
        y, s, _, p, gamma, count = carry
        t = operator @ p
        curvature = t @ t + (damping * p) @ p
        # A zero curvature means p = 0 (λ > 0) or A p = 0 with λ = 0: no further progress possible.
        alpha = jnp.where(curvature > 0, gamma / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        y = y + alpha * p
        s = s - alpha * t
        q = operator.T @ s - damping * y
        new_gamma = jnp.where(curvature > 0, q @ q, 0.0)
        p = q + (new_gamma / gamma) * p
        return y, s, q, p, new_gamma, count + 1

    zero = jnp.zeros(n, gradient.dtype)
    start = (zero, rhs, gradient, gradient, start_norm**2, jnp.asarray(0, jnp.int32))
    y, *_, count = jax.lax.while_loop(keep_going, iterate, start)
    return y, count


def steihaug(
    operator,
    gradient: Float[Array, " n"],
    radius,
    *,
    max_steps: int,
    tolerance: float | None,
) -> tuple[Float[Array, " n"], Float[Array, " m"], Int[Array, ""]]:
    """Steihaug–Toint truncated CG for ``min gᵀy + ½‖A y‖²``, ``‖y‖ ≤ Δ``.

    Returns ``(y, A y, iterations)``; ``A y`` is accumulated along the way (no extra product), for the
    predicted reduction ``−gᵀy − ½‖A y‖²``.
    """
    n = gradient.shape[0]
    dtype = gradient.dtype
    radius = jnp.asarray(radius, dtype)
    start_norm = jnp.linalg.norm(gradient)
    threshold = forcing_tolerance(start_norm, tolerance) * start_norm

    def keep_going(carry):
        *_, done, count = carry
        return ~done & (count < max_steps)

    def iterate(carry):
        y, model_change, residual, p, _, count = carry
        t = operator @ p
        curvature = t @ t
        residual_sq = residual @ residual
        alpha = residual_sq / jnp.where(curvature > 0, curvature, 1.0)
        inside = (curvature > 0) & (jnp.linalg.norm(y + alpha * p) < radius)
        tau = boundary_length(y, p, radius)
        length = jnp.where(inside, alpha, tau)
        y = y + length * p
        model_change = model_change + length * t
        new_residual = residual + alpha * (operator.T @ t)
        converged = jnp.linalg.norm(new_residual) <= threshold
        beta = (new_residual @ new_residual) / jnp.where(residual_sq > 0, residual_sq, 1.0)
        p = -new_residual + beta * p
        done = ~inside | converged
        return y, model_change, new_residual, p, done, count + 1

    m = operator.shape[0]
    start = (
        jnp.zeros(n, dtype),
        jnp.zeros(m, dtype),
        gradient,
        -gradient,
        start_norm <= threshold,
        jnp.asarray(0, jnp.int32),
    )
    y, model_change, *_, count = jax.lax.while_loop(keep_going, iterate, start)
    return y, model_change, count


def conjugate_gradient(
    matvec, rhs: Float[Array, " n"], *, max_steps: int, tolerance
) -> Float[Array, " n"]:
    """``x ≈ A⁻¹ b`` for a symmetric positive semi-definite ``A`` given by ``matvec`` (Hestenes &
    Stiefel 1952; Nocedal & Wright, Alg. 5.2), from ``x₀ = 0``:

        s₀ = p₀ = b,  αₖ = ‖sₖ‖² / pₖᵀA pₖ,  xₖ₊₁ = xₖ + αₖ pₖ,  sₖ₊₁ = sₖ − αₖ A pₖ,
        pₖ₊₁ = sₖ₊₁ + (‖sₖ₊₁‖² / ‖sₖ‖²) pₖ,

    stopped at ``‖sₖ‖ ≤ tolerance · ‖b‖``, after ``max_steps`` products, or at a direction of zero
    or negative curvature (``A`` singular along it, or not positive semi-definite: the iterate
    reached is returned). From ``x₀ = 0`` the iterates stay in the Krylov space of ``b``, so for a
    consistent singular system CG converges to the minimum-norm solution."""
    tiny = jnp.finfo(rhs.dtype).tiny
    threshold = tolerance * jnp.linalg.norm(rhs)

    def keep_going(carry):
        *_, gamma, done, count = carry
        return ~done & (count < max_steps) & (jnp.sqrt(gamma) > threshold) & (gamma > tiny)

    def iterate(carry):
        x, s, p, gamma, _, count = carry
        t = matvec(p)
        curvature = p @ t
        positive = curvature > 0
        alpha = jnp.where(positive, gamma / jnp.where(positive, curvature, 1.0), 0.0)
        x = x + alpha * p
        s = s - alpha * t
        new_gamma = s @ s
        p = s + (new_gamma / gamma) * p
        return x, s, p, jnp.where(positive, new_gamma, gamma), ~positive, count + 1

    start = (
        jnp.zeros_like(rhs),
        rhs,
        rhs,
        rhs @ rhs,
        jnp.asarray(False),
        jnp.asarray(0, jnp.int32),
    )
    return jax.lax.while_loop(keep_going, iterate, start)[0]
