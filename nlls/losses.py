"""Robust losses: the cost ``½ Σ C² ρ((rᵢ/C)²)`` instead of ``½‖r‖²``, as ``scipy.optimize.least_squares``
defines it.

With the residual ``r`` (m entries), a scale ``C > 0`` (``f_scale``: residuals much larger than ``C``
count as outliers) and ``zᵢ = (rᵢ/C)²``, the cost is

    cost(θ) = ½ Σᵢ C² ρ(zᵢ),

for a loss ``ρ`` with ``ρ(0) = 0``, ``ρ'(0) = 1`` (so ``cost ≈ ½‖r‖²`` for small residuals):

| name | ρ(z) | ρ'(z) | ρ''(z) |
| --- | --- | --- | --- |
| ``"linear"`` | z | 1 | 0 |
| ``"soft_l1"`` | 2(√(1 + z) − 1) | (1 + z)^(−½) | −½(1 + z)^(−3/2) |
| ``"huber"`` | z if z ≤ 1, else 2√z − 1 | 1, else z^(−½) | 0, else −½z^(−3/2) |
| ``"cauchy"`` | ln(1 + z) | 1/(1 + z) | −1/(1 + z)² |
| ``"arctan"`` | arctan z | 1/(1 + z²) | −2z/(1 + z²)² |

A callable ``loss(z)`` takes the ``(m,)`` array ``z`` and returns the ``(3, m)`` array
``[ρ(z), ρ'(z), ρ''(z)]`` (scipy's contract), written with ``jax.numpy``; ``C`` is applied around it
as for the named losses.

The corrected Gauss–Newton model (Triggs, McLauchlan, Hartley & Fitzgibbon 2000, as scipy's ``trf``).
Per residual, ``d(½C²ρ(z))/drᵢ = ρ'rᵢ`` and ``d²(½C²ρ(z))/drᵢ² = ρ' + 2zρ''``, so the cost has the
gradient ``g = Jᵀ(ρ' ∘ r)`` and, without the terms in ``∇²rᵢ``, the Hessian ``Jᵀ diag(ρ' + 2zρ'') J``.
With

    sᵢ = √max(ρ'(zᵢ) + 2zᵢρ''(zᵢ), eps),    J̃ = diag(s) J,    r̃ = (ρ'/s) ∘ r,

the least-squares model ``½‖r̃ + J̃δ‖²`` has exactly that gradient (``J̃ᵀr̃ = Jᵀ(ρ'∘r)``) and that
Hessian (``J̃ᵀJ̃``; where ``ρ' + 2zρ''`` is negative or tiny, the outlier's curvature is taken as eps
instead). Every method and linear path solves its step on ``J̃`` and ``r̃`` as it would on ``J`` and
``r`` (matrix-free: ``J̃v = s ∘ (Jv)`` and ``J̃ᵀu = Jᵀ(s ∘ u)``, a row scaling of the products), and
judges it by the gain ratio of the actual reduction of the robust cost against the reduction that
model predicts. The ``"linear"`` loss is the plain problem: ``J̃ = J``, ``r̃ = r``, and the engine runs
the same code as without a loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

LOSS_NAMES = ("linear", "soft_l1", "huber", "cauchy", "arctan")


def linear(z: Float[Array, " m"]) -> Float[Array, "3 m"]:
    """``[z, 1, 0]``: the plain ``½‖r‖²``."""
    return jnp.stack([z, jnp.ones_like(z), jnp.zeros_like(z)])


def soft_l1(z: Float[Array, " m"]) -> Float[Array, "3 m"]:
    """``[2(√(1 + z) − 1), (1 + z)^(−½), −½(1 + z)^(−3/2)]``: a smooth ℓ₁ for large residuals."""
    t = 1.0 + z
    root = jnp.sqrt(t)
    return jnp.stack([2.0 * (root - 1.0), 1.0 / root, -0.5 / (t * root)])


def huber(z: Float[Array, " m"]) -> Float[Array, "3 m"]:
    """``z`` for ``z ≤ 1`` and ``2√z − 1`` beyond (quadratic inside ``C``, linear outside), with its
    derivatives ``1, 0`` and ``z^(−½), −½z^(−3/2)``."""
    inside = z <= 1.0
    outer = jnp.where(inside, 1.0, z)  # keeps the unused branch finite at z = 0
    root = jnp.sqrt(outer)
    return jnp.stack(
        [
            jnp.where(inside, z, 2.0 * root - 1.0),
            jnp.where(inside, 1.0, 1.0 / root),
            jnp.where(inside, 0.0, -0.5 / (outer * root)),
        ]
    )


def cauchy(z: Float[Array, " m"]) -> Float[Array, "3 m"]:
    """``[ln(1 + z), 1/(1 + z), −1/(1 + z)²]``: outliers weigh logarithmically."""
    t = 1.0 + z
    return jnp.stack([jnp.log1p(z), 1.0 / t, -1.0 / t**2])


def arctan(z: Float[Array, " m"]) -> Float[Array, "3 m"]:
    """``[arctan z, 1/(1 + z²), −2z/(1 + z²)²]``: every residual's cost is bounded by ``½C²·π/2``."""
    t = 1.0 + z**2
    return jnp.stack([jnp.arctan(z), 1.0 / t, -2.0 * z / t**2])


LOSSES: dict[str, Callable[[Array], Array]] = {
    "linear": linear,
    "soft_l1": soft_l1,
    "huber": huber,
    "cauchy": cauchy,
    "arctan": arctan,
}


@dataclasses.dataclass(frozen=True)
class Loss:
    """The loss of a solve: ``rho``, a name of ``LOSS_NAMES`` or a function ``rho(z) -> (3, m)``, and
    the scale ``f_scale`` = C (module docstring). Part of the compiled program (a new ``f_scale``
    compiles anew); ``nlls.checks.loss`` builds it from a front end's options."""

    rho: str | Callable[[Array], Array] = "linear"
    f_scale: float = 1.0

    @property
    def linear(self) -> bool:
        """The plain ``½‖r‖²``: no correction, the engine's plain code."""
        return isinstance(self.rho, str) and self.rho == "linear"

    @property
    def label(self) -> str:
        """How a report names it: ``"linear"``, ``"huber (f_scale=0.1)"``."""
        if self.linear:
            return "linear"
        name = self.rho if isinstance(self.rho, str) else getattr(self.rho, "__name__", "callable")
        return f"{name} (f_scale={self.f_scale:g})"

    def values(self, residual: Float[Array, " m"]) -> Float[Array, "3 m"]:
        """``[ρ(z), ρ'(z), ρ''(z)]`` at ``z = (r/C)²``."""
        z = (residual / self.f_scale) ** 2
        function = LOSSES[self.rho] if isinstance(self.rho, str) else self.rho
        return jnp.asarray(function(z), residual.dtype)

    def cost(self, residual: Float[Array, " m"]) -> Float[Array, ""]:
        """``½ Σ C² ρ(zᵢ)`` (``½‖r‖²`` for the linear loss), ``+∞`` when it is not finite."""
        if self.linear:
            cost = 0.5 * jnp.sum(residual**2)
        else:
            cost = 0.5 * self.f_scale**2 * jnp.sum(self.values(residual)[0])
        return jnp.where(jnp.isfinite(cost), cost, jnp.inf)

    def reduction(
        self, residual: Float[Array, " m"], trial_residual: Float[Array, " m"]
    ) -> Float[Array, ""]:
        """``cost(r) − cost(r_trial)`` as ``½C² Σᵢ (ρ(zᵢ) − ρ(z_trial,ᵢ))``: a sum of per-residual
        differences, not the difference of two rounded sums; ``−∞`` when the trial is not finite.
        (The linear loss has its own cancellation-free form, ``nlls.solvers.base.reduction``.)"""
        change = self.values(residual)[0] - self.values(trial_residual)[0]
        actual = 0.5 * self.f_scale**2 * jnp.sum(change)
        return jnp.where(jnp.all(jnp.isfinite(trial_residual)), actual, -jnp.inf)

    def correction(
        self, residual: Float[Array, " m"]
    ) -> tuple[Float[Array, " m"], Float[Array, " m"]]:
        """``(ρ'/s, s)`` with ``s = √max(ρ' + 2zρ'', eps)``: the factors of the corrected residual
        ``r̃ = (ρ'/s) ∘ r`` and of the rows of the corrected Jacobian ``J̃ = diag(s) J`` (module
        docstring)."""
        _, slope, curvature = self.values(residual)
        z = (residual / self.f_scale) ** 2
        eps = jnp.finfo(residual.dtype).eps
        rows = jnp.sqrt(jnp.maximum(slope + 2.0 * z * curvature, eps))
        return slope / rows, rows


#: the plain ``½‖r‖²``
LINEAR = Loss()
