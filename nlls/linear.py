"""The step solvers: the damped linear least-squares problem of every iteration.

Each iteration solves, for the Jacobian ``J`` (m×n), residual ``r``, damping ``λ ≥ 0`` and a diagonal
scaling ``D`` (positive entries; ``D = I`` when scaling is off),

    δ = argmin ‖J δ + r‖² + λ ‖D δ‖²,    i.e.   (JᵀJ + λD²) δ = −Jᵀr.

With ``y = D δ`` and the scaled Jacobian ``Jₛ = J D⁻¹`` this is ``(JₛᵀJₛ + λI) y = −Jₛᵀr``. A
factorisation of ``Jₛ`` and the residual is computed once per Jacobian and reused for every damping
tried at that point (rejected LM steps, the Gauss–Newton leg of a dogleg step); ``step(jac, λ)`` gives
the step for that residual, ``solve(jac, rhs, λ)`` for another right-hand side (geodesic acceleration).

Paths, chosen by shape (``linear="auto"``) or by name:

``"normal"`` (n ≤ m): the n×n normal equations.
    * ``n ≤ QR_MAX_N``: one QR of the augmented ``[Jₛ r]`` gives ``R`` and ``c = Qᵀr`` without
      forming ``Q`` (O(mn²)); for each damping a QR of the small ``[R c; √λ I 0]`` gives ``R₂`` and
      ``c₂``, and ``y = −R₂⁻¹ c₂``, as MINPACK does (Moré 1978). This never forms ``JₛᵀJₛ``, so it
      does not square the condition number: ill-conditioned curve fits (the NIST Lanczos and Gauss
      sets) keep their accuracy. At ``λ = 0`` the solve is a triangular one, or, when ``R`` is
      numerically singular, the minimum-norm solution from an SVD of the small ``R``.
    * larger ``n``: the Gram matrix ``A = JₛᵀJₛ`` once, then a Cholesky factorisation of ``A + λI`` per
      damping; a matrix product costs less than a QR, which pays once ``n`` is in the hundreds.

``"min_norm"`` (m < n): the m×m system, never an n×n matrix. By the push-through identity
    ``(JₛᵀJₛ + λI)⁻¹Jₛᵀ = Jₛᵀ(JₛJₛᵀ + λI)⁻¹``, so ``y = −Jₛᵀ z`` with ``(JₛJₛᵀ + λI) z = r``, and
    ``δ = −D⁻²Jᵀ(J D⁻² Jᵀ + λI)⁻¹ r``. As ``λ → 0`` this is the minimum-norm Gauss–Newton step.

``"krylov"`` (``Krylov``): matrix-free. ``J`` is never formed: damped CGLS (``nlls.krylov``) on
    Jacobian–vector and vector–Jacobian products, stopped by an inexact-Newton forcing test or after
    ``max_steps`` iterations; memory O(m + n) per vector. Chosen by ``"auto"`` when the dense path's
    Jacobian and Gram matrix would exceed the memory budget (``least_squares(max_jacobian_bytes=)``).

``λ = 0`` (Gauss–Newton, the Gauss–Newton leg of a dogleg) gives the minimum-norm least-squares
solution: singular values (or Gram eigenvalues) below the rank cut-off are dropped, as ``numpy.linalg.
lstsq`` does. When a Cholesky factorisation fails (a singular Gram matrix at λ = 0, or rounding), the
solve falls back to an eigendecomposition of the same Gram matrix with the same cut-off.

The damping may also be a vector ``Λ`` of positive entries, the diagonal ``(JₛᵀJₛ + Λ) y = −Jₛᵀr`` of a
bounded step (``nlls.bounds``: ``λ`` plus the Coleman–Li curvature). The QR and Gram paths take it
as they take ``λI``; the minimum-norm path forms ``Jₛ Λ⁻¹ Jₛᵀ`` for each damping (the push-through
identity with ``Λ`` in place of ``λI``); CGLS weighs ``yᵀΛy``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Float

from . import sharding
from .krylov import damped_cgls

LINEAR_PATHS = ("auto", "normal", "min_norm", "krylov")
QR_MAX_N = 64


class Krylov(eqx.Module):
    """The matrix-free path, with its settings (``least_squares(linear=nlls.Krylov(...))``;
    ``linear="krylov"`` is ``Krylov()``).

    Args:
        max_steps: the most CGLS iterations per linear solve (each one JVP and one VJP); ``None``:
            ``min(max(10·min(m, n), 20), 200)``. In exact arithmetic CGLS ends after ``min(m, n)``
            iterations; in floating point an ill-conditioned J needs several times more (Watson's
            function with 12 parameters needs about 50 to match the dense path).
        tolerance: a fixed relative tolerance η on the normal-equation residual,
            ``‖(JₛᵀJₛ + λI)y + Jₛᵀr‖ ≤ η‖Jₛᵀr‖``; ``None``: the forcing term
            ``min(10⁻³, √‖Jₛᵀr‖)`` (see ``nlls.krylov`` for why the cap is not the classical ½).
        jacobi: Marquardt (Jacobi) scaling by default, i.e. when the solver's ``scaling`` is
            ``None``; ``None``: on when ``n ≤ max_steps``, where the ``n`` JVPs of the column norms
            cost no more than one Krylov solve.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]), linear="krylov")
        >>> sol.stats.linear, bool(jnp.allclose(sol.params, 1.0, atol=1e-4))
        ('krylov', True)
    """

    max_steps: int | None = eqx.field(default=None, static=True)
    tolerance: float | None = eqx.field(default=None, static=True)
    jacobi: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.max_steps is not None and not (
            isinstance(self.max_steps, int) and self.max_steps >= 1
        ):
            raise ValueError(f"Krylov max_steps must be a positive int, got {self.max_steps!r}")
        if self.tolerance is not None and not 0 <= self.tolerance < 1:
            raise ValueError(f"Krylov tolerance must be in [0, 1), got {self.tolerance!r}")

    def sized(self, m: int, n: int) -> Krylov:
        """These settings with the defaults resolved for an m×n Jacobian."""
        max_steps = self.max_steps or min(max(10 * min(m, n), 20), 200)
        jacobi = n <= max_steps if self.jacobi is None else self.jacobi
        return Krylov(max_steps, self.tolerance, jacobi)


def path_name(path) -> str:
    """``"normal"``, ``"min_norm"`` or ``"krylov"``."""
    return "krylov" if isinstance(path, Krylov) else path


def dense_bytes(path: str, m: int, n: int, itemsize: int) -> int:
    """The memory a dense path holds while a trial point is accepted: three m×n arrays (the current
    point's ``J``, kept until the trial is judged; the trial point's ``J``; the scaled copy
    ``J D⁻¹`` that the Gram product reads) and two Gram matrices (n×n, or m×m on the minimum-norm
    path: the current point's factorisation and the new one)."""
    side = min(m, n) if path == "min_norm" else n
    return itemsize * (3 * m * n + 2 * side * side)


def choose_path(linear, m: int, n: int):
    """``"normal"`` when ``n ≤ m``, ``"min_norm"`` when ``m < n``, unless named explicitly;
    ``"krylov"`` (or a ``Krylov``) becomes a ``Krylov`` with its iteration cap resolved. The memory
    budget (``least_squares``) may then replace a dense path chosen by ``"auto"`` with ``Krylov``."""
    if linear == "auto":
        return "normal" if n <= m else "min_norm"
    if linear == "krylov":
        linear = Krylov()
    if isinstance(linear, Krylov):
        return linear.sized(m, n)
    return linear


class QRStep(eqx.Module):
    """``Qᵀ[Jₛ r] = [R c]`` by one QR of the augmented matrix (``Q`` is never formed); each damping
    refactors the small ``[R c; √λ I 0]`` the same way."""

    exact = True  # the damped system is solved to rounding

    r: Float[Array, "n n"]
    projected: Float[Array, " n"]  # c = Qᵀr
    scale: Float[Array, " n"]

    def step(self, jac: Float[Array, "m n"], damping) -> Float[Array, " n"]:
        """``δ`` with ``(JᵀJ + λD²) δ = −Jᵀr`` for the factorised residual (minimum norm at λ = 0)."""
        del jac
        return self._solve_projected(self.projected, damping) / self.scale

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """The same for another right-hand side; ``Qᵀ rhs = R⁻ᵀ Jₛᵀ rhs`` (R must be regular)."""
        scaled_gradient = (jac.T @ rhs) / self.scale
        projected = solve_triangular(self.r, scaled_gradient, trans="T")
        return self._solve_projected(projected, damping) / self.scale

    def _solve_projected(self, projected, damping):
        if isinstance(damping, float | int) and damping == 0:
            return _triangular_least_squares(self.r, projected)
        n = self.r.shape[0]
        damped = jnp.block(
            [
                [self.r, projected[:, None]],
                [
                    jnp.sqrt(damping) * jnp.eye(n, dtype=self.r.dtype),
                    jnp.zeros((n, 1), self.r.dtype),
                ],
            ]
        )
        reduced = jnp.linalg.qr(damped, mode="r")
        return -solve_triangular(reduced[:n, :n], reduced[:n, n])


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

    exact = True  # the damped system is solved to rounding

    gram: Float[Array, "n n"]
    scaled_gradient: Float[Array, " n"]  # Jₛᵀr
    scale: Float[Array, " n"]

    def step(self, jac: Float[Array, "m n"], damping) -> Float[Array, " n"]:
        """``δ`` with ``(JᵀJ + λD²) δ = −Jᵀr`` for the factorised residual."""
        del jac
        return _damped_spd_solve(self.gram, -self.scaled_gradient, damping) / self.scale

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """``δ`` with ``(JᵀJ + λD²) δ = −Jᵀ rhs``."""
        y = _damped_spd_solve(self.gram, -(jac.T @ rhs) / self.scale, damping)
        return y / self.scale


class MinNormStep(eqx.Module):
    """Gram matrix ``K = JₛJₛᵀ`` (m×m); each solve factors ``K + λI`` by Cholesky."""

    exact = True  # the damped system is solved to rounding

    gram: Float[Array, "m m"]
    residual: Float[Array, " m"]
    scale: Float[Array, " n"]
    layout: sharding.Rows | None = eqx.field(static=True, default=None)

    def step(self, jac: Float[Array, "m n"], damping) -> Float[Array, " n"]:
        """``δ = −D⁻²Jᵀ (J D⁻² Jᵀ + λI)⁻¹ r`` for the factorised residual."""
        return self.solve(jac, self.residual, damping)

    def solve(self, jac: Float[Array, "m n"], rhs: Float[Array, " m"], damping) -> Array:
        """``δ = −D⁻²Jᵀ (J D⁻² Jᵀ + λI)⁻¹ rhs``; for a diagonal damping ``Λ`` (positive),
        ``y = −Λ⁻¹Jₛᵀ (Jₛ Λ⁻¹ Jₛᵀ + I)⁻¹ rhs``, which forms the m×m matrix anew."""
        if jnp.ndim(damping) == 1:
            scaled = jac / self.scale
            weighted = scaled / damping
            if self.layout is not None:
                scaled, weighted = (self.layout.by_columns(a) for a in (scaled, weighted))
            z = _damped_spd_solve(weighted @ scaled.T, rhs, 1.0)
            return -(weighted.T @ z) / self.scale
        z = _damped_spd_solve(self.gram, rhs, damping)
        return -(jac.T @ z) / self.scale**2


class KrylovStep(eqx.Module):
    """Nothing is factorised: each solve runs damped CGLS on ``Jₛ = J D⁻¹`` given by products
    (``jac`` is a ``MatrixFreeJacobian``, or a dense matrix: the same code runs on both)."""

    residual: Float[Array, " m"]
    scale: Float[Array, " n"]
    settings: Krylov = eqx.field(static=True)
    exact = False  # the step solves the damped system only to the forcing tolerance

    def step(self, jac, damping) -> Float[Array, " n"]:
        """``δ ≈ argmin ‖Jδ + r‖² + λ‖Dδ‖²`` for the point's residual."""
        return self.solve(jac, self.residual, damping)

    def solve(self, jac, rhs: Float[Array, " m"], damping) -> Float[Array, " n"]:
        """``δ ≈ argmin ‖Jδ + rhs‖² + λ‖Dδ‖²``."""
        y, _ = damped_cgls(
            scaled_operator(jac, self.scale),
            -rhs,
            damping,
            max_steps=self.settings.max_steps,
            tolerance=self.settings.tolerance,
        )
        return y / self.scale


def scaled_operator(jac, scale: Float[Array, " n"]) -> _Scaled:
    """``Jₛ = J D⁻¹`` as products (``@`` and ``.T @``), for a dense or a matrix-free ``J``."""
    return _Scaled(jac, scale)


class _Scaled:
    """``Jₛ = J D⁻¹`` as products."""

    def __init__(self, jac, scale):
        self.jac, self.scale = jac, scale
        self.shape = jac.shape

    def __matmul__(self, vector):
        return self.jac @ (vector / self.scale)

    @property
    def T(self):  # noqa: N802
        return _ScaledTranspose(self)


class _ScaledTranspose:
    def __init__(self, scaled: _Scaled):
        self.scaled = scaled

    def __matmul__(self, vector):
        return (self.scaled.jac.T @ vector) / self.scaled.scale


def factorize(path, jac, residual: Float[Array, " m"], scale: Float[Array, " n"], layout=None):
    """The factorisation of ``Jₛ = J D⁻¹`` (with the residual ``r``) that ``path`` uses; ``None``
    for ``path=None`` (a method that needs none, such as Steihaug's trust region). ``layout``: how
    the rows are sharded over devices (``nlls.sharding.Rows``), or ``None``."""
    if path is None:
        return None
    if isinstance(path, Krylov):
        return KrylovStep(residual=residual, scale=scale, settings=path)
    scaled = jac / scale
    if path == "min_norm":
        return MinNormStep(
            gram=sharding.gram_rows(scaled, layout), residual=residual, scale=scale, layout=layout
        )
    m, n = jac.shape
    if n <= QR_MAX_N:
        augmented = jnp.concatenate([scaled, residual[:, None]], axis=1)
        # Zero rows change neither JᵀJ nor Jᵀr; they make R square when J is wide.
        augmented = jnp.pad(augmented, ((0, max(n + 1 - m, 0)), (0, 0)))
        reduced = sharding.qr_r(augmented, layout)
        return QRStep(r=reduced[:n, :n], projected=reduced[:n, n], scale=scale)
    return NormalGramStep(gram=scaled.T @ scaled, scaled_gradient=scaled.T @ residual, scale=scale)


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
    # A diagonal damping (a vector) does not commute with G: decompose G + Λ itself.
    base, shift = (damped, 0.0) if jnp.ndim(damping) == 1 else (gram, damping)

    def eigen_solve():
        eigenvalues, vectors = jnp.linalg.eigh(base)
        cutoff = jnp.finfo(gram.dtype).eps * size * jnp.max(jnp.abs(eigenvalues), initial=0.0)
        shifted = eigenvalues + shift
        keep = shifted > cutoff
        inverse = jnp.where(keep, 1.0 / jnp.where(keep, shifted, 1.0), 0.0)
        return vectors @ (inverse * (vectors.T @ rhs))

    return jax.lax.cond(jnp.all(jnp.isfinite(solution)), lambda: solution, eigen_solve)
