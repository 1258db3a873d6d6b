"""The step solvers: the damped linear least-squares problem of every iteration.

Each iteration solves, for the Jacobian ``J`` (m×n), residual ``r``, damping ``λ ≥ 0`` and a diagonal
scaling ``D`` (positive entries; ``D = I`` when scaling is off),

    δ = argmin ‖J δ + r‖² + λ ‖D δ‖²,    i.e.   (JᵀJ + λD²) δ = −Jᵀr.

With ``y = D δ`` and the scaled Jacobian ``Jₛ = J D⁻¹`` this is ``(JₛᵀJₛ + λI) y = −Jₛᵀr``. A
factorisation is computed once per Jacobian and reused for every damping tried at that point (rejected
LM steps, the Gauss–Newton and Cauchy pieces of a dogleg step, geodesic acceleration).

Paths, chosen by shape (``linear="auto"``) or by name:

``"normal"`` (n ≤ m): the n×n normal equations.
    * ``n ≤ QR_MAX_N``: a thin QR ``Jₛ = Q R`` once (O(mn²)); for each damping a second QR of the
      stacked ``[R; √λ I] = Q₂ R₂`` (O(n³)) and ``y = −R₂⁻¹ Q₂ᵀ [Qᵀr; 0]``, as MINPACK does (Moré
      1978). This never forms ``JₛᵀJₛ``, so it does not square the condition number: ill-conditioned
      curve fits (the NIST Lanczos and Gauss sets) keep their accuracy. At ``λ = 0`` the solve is a
      triangular one, or, when ``R`` is numerically singular, the minimum-norm solution from an SVD
      of the small ``R``.
    * larger ``n``: the Gram matrix ``A = JₛᵀJₛ`` once, then a Cholesky factorisation of ``A + λI`` per
      damping; it costs a matrix product instead of an SVD, which pays once ``n`` is in the hundreds.

``"min_norm"`` (m < n): the m×m system, never an n×n matrix. By the push-through identity
    ``(JₛᵀJₛ + λI)⁻¹Jₛᵀ = Jₛᵀ(JₛJₛᵀ + λI)⁻¹``, so ``y = −Jₛᵀ z`` with ``(JₛJₛᵀ + λI) z = r``, and
    ``δ = −D⁻²Jᵀ(J D⁻² Jᵀ + λI)⁻¹ r``. As ``λ → 0`` this is the minimum-norm Gauss–Newton step.

``λ = 0`` (Gauss–Newton, the Gauss–Newton leg of a dogleg) gives the minimum-norm least-squares
solution: singular values (or Gram eigenvalues) below the rank cut-off are dropped, as ``numpy.linalg.
lstsq`` does. When a Cholesky factorisation fails (a singular Gram matrix at λ = 0, or rounding), the
solve falls back to an eigendecomposition of the same Gram matrix with the same cut-off.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Float

LINEAR_PATHS = ("auto", "normal", "min_norm")
QR_MAX_N = 64


def choose_path(linear: str, m: int, n: int) -> str:
    """``"normal"`` when ``n ≤ m``, ``"min_norm"`` when ``m < n``, unless named explicitly."""
    if linear == "auto":
        return "normal" if n <= m else "min_norm"
    return linear


class QRStep(eqx.Module):
    """Thin QR of the scaled Jacobian ``Jₛ = Q R``; each damping refactors the small ``[R; √λ I]``."""

    q: Float[Array, "m n"]
    r: Float[Array, "n n"]
    scale: Float[Array, " n"]

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """``δ`` with ``(JᵀJ + λD²) δ = −Jᵀ rhs`` (minimum-norm solution at ``λ = 0``)."""
        del jac
        padding = self.q.shape[0] - rhs.shape[0]  # zero rows added to a wide J (see factorize)
        projected = self.q.T @ jnp.pad(rhs, (0, padding))
        if isinstance(damping, float | int) and damping == 0:  # known zero: no branch needed
            y = _triangular_least_squares(self.r, projected)
        else:
            y = jax.lax.cond(
                damping > 0,
                lambda: _damped_triangular_solve(self.r, projected, damping),
                lambda: _triangular_least_squares(self.r, projected),
            )
        return y / self.scale


def _damped_triangular_solve(r, projected, damping):
    """``y = −(RᵀR + λI)⁻¹ Rᵀ c`` by the QR of ``[R; √λ I]``, for ``λ > 0``."""
    n = r.shape[0]
    stacked = jnp.concatenate([r, jnp.sqrt(damping) * jnp.eye(n, dtype=r.dtype)])
    q2, r2 = jnp.linalg.qr(stacked)
    return -solve_triangular(r2, q2[:n].T @ projected)


def _triangular_least_squares(r, projected):
    """The minimum-norm ``y`` minimising ``‖R y + c‖``: a triangular solve when ``R`` is well away
    from singular, the SVD pseudo-inverse of ``R`` otherwise."""
    n = r.shape[0]
    diagonal = jnp.abs(jnp.diagonal(r))
    eps = jnp.finfo(r.dtype).eps
    regular = jnp.min(diagonal, initial=jnp.inf) > 1e3 * n * eps * jnp.max(diagonal, initial=0.0)

    def pseudo_inverse():
        u, s, vt = jnp.linalg.svd(r)
        cutoff = eps * n * jnp.max(s, initial=0.0)
        keep = s > cutoff
        return -(vt.T @ (jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0) * (u.T @ projected)))

    return jax.lax.cond(regular, lambda: -solve_triangular(r, projected), pseudo_inverse)


class NormalGramStep(eqx.Module):
    """Gram matrix ``A = JₛᵀJₛ`` (n×n); each solve factors ``A + λI`` by Cholesky."""

    gram: Float[Array, "n n"]
    scale: Float[Array, " n"]

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """``δ`` with ``(JᵀJ + λD²) δ = −Jᵀ rhs``."""
        y = _damped_spd_solve(self.gram, -(jac.T @ rhs) / self.scale, damping)
        return y / self.scale


class MinNormStep(eqx.Module):
    """Gram matrix ``K = JₛJₛᵀ`` (m×m); each solve factors ``K + λI`` by Cholesky."""

    gram: Float[Array, "m m"]
    scale: Float[Array, " n"]

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """``δ = −D⁻²Jᵀ (J D⁻² Jᵀ + λI)⁻¹ rhs``."""
        z = _damped_spd_solve(self.gram, rhs, damping)
        return -(jac.T @ z) / self.scale**2


def factorize(path: str, jac: Float[Array, "m n"], scale: Float[Array, " n"]):
    """The factorisation of ``Jₛ = J D⁻¹`` that the path ``"normal"`` or ``"min_norm"`` uses."""
    scaled = jac / scale
    if path == "min_norm":
        return MinNormStep(gram=scaled @ scaled.T, scale=scale)
    m, n = jac.shape
    if n <= QR_MAX_N:
        # Zero rows change neither JᵀJ nor Jᵀr; they make R square when J is wide.
        q, r = jnp.linalg.qr(jnp.pad(scaled, ((0, max(n - m, 0)), (0, 0))))
        return QRStep(q=q, r=r, scale=scale)
    return NormalGramStep(gram=scaled.T @ scaled, scale=scale)


def _damped_spd_solve(
    gram: Float[Array, "k k"], rhs: Float[Array, " k"], damping
) -> Float[Array, " k"]:
    """``(G + λI)⁻¹ rhs`` for a symmetric positive semi-definite ``G``.

    Cholesky first; if it fails (non-finite result: ``G + λI`` singular or indefinite in rounding),
    an eigendecomposition with the minimum-norm cut-off on the eigenvalues.
    """
    size = gram.shape[0]
    damped = gram + damping * jnp.eye(size, dtype=gram.dtype)
    factor = jnp.linalg.cholesky(damped)
    solution = cho_solve((factor, True), rhs)

    def eigen_solve():
        eigenvalues, vectors = jnp.linalg.eigh(gram)
        cutoff = jnp.finfo(gram.dtype).eps * size * jnp.max(jnp.abs(eigenvalues), initial=0.0)
        shifted = eigenvalues + damping
        keep = shifted > cutoff
        inverse = jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0)
        return vectors @ (inverse * (vectors.T @ rhs))

    return jax.lax.cond(jnp.all(jnp.isfinite(solution)), lambda: solution, eigen_solve)
