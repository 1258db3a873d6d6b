"""Dense Jacobians by automatic differentiation, and the second directional derivative.

The residual is seen as a function ``r: Rⁿ → Rᵐ`` of the flat parameter vector. Its Jacobian costs

* forward mode: ``n`` Jacobian–vector products (one per column, vmapped), best when ``n ≤ m``;
* reverse mode: ``m`` vector–Jacobian products (one per row, vmapped), best when ``m < n``.

Both come with the residual value at the same point, from the linearisation itself
(``FlatProblem.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jaxtyping import Array, Float

JAC_MODES = ("auto", "fwd", "rev")


def choose_mode(jac: str, m: int, n: int) -> str:
    """``"fwd"`` for tall or square Jacobians (``n ≤ m``), ``"rev"`` for wide ones."""
    if jac == "auto":
        return "fwd" if n <= m else "rev"
    return jac


def second_directional_derivative(
    fn: Callable[[Array], Array], params: Float[Array, " n"], direction: Float[Array, " n"]
) -> Float[Array, " m"]:
    """``r''(θ)[v, v] = d²/dt² r(θ + t v)`` at ``t = 0``, exactly, by a JVP of a JVP."""

    def directional_derivative(point):
        return jax.jvp(fn, (point,), (direction,))[1]

    return jax.jvp(directional_derivative, (params,), (direction,))[1]
