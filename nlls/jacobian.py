"""Dense Jacobians by automatic differentiation, and the second directional derivative.

The residual is seen as a function ``r: Rⁿ → Rᵐ`` of the flat parameter vector. Its Jacobian costs

* forward mode: ``n`` Jacobian–vector products (one per column, vmapped), best when ``n ≤ m``;
* reverse mode: ``m`` vector–Jacobian products (one per row, vmapped), best when ``m < n``.

Both come with the residual value at the same point, from the linearisation itself
(``FlatProblem.evaluate``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import jax
import jax.numpy as jnp
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


def value_and_second_directional(
    fn: Callable[[Array], Array], params: Float[Array, " n"], direction: Float[Array, " n"]
) -> tuple[Float[Array, " m"], Float[Array, " m"]]:
    """``(r(θ), r''(θ)[v, v])`` from the same nested JVP (its inner primal is the value)."""

    def value_and_derivative(point):
        return jax.jvp(fn, (point,), (direction,))

    (value, _), (_, second) = jax.jvp(value_and_derivative, (params,), (direction,))
    return value, second


class MatrixFreeJacobian:
    """The Jacobian of ``fn`` at ``params`` seen only through products: ``J @ v`` is a JVP of the
    linearisation (``jax.linearize``, one evaluation of ``fn`` that keeps what the JVPs need) and
    ``J.T @ u`` its transpose (``jax.linear_transpose`` of the same linearisation: a VJP without another
    forward pass). It lives inside one traced step; it is not a pytree and is never stored.
    """

    def __init__(self, fn: Callable[[Array], Array], params: Float[Array, " n"], chunk: int):
        self.residual, self._jvp = jax.linearize(fn, params)
        self._vjp = jax.linear_transpose(self._jvp, params)
        self.shape = (self.residual.shape[0], params.shape[0])
        self.dtype = params.dtype
        self._chunk = chunk
        self._rows = None  # a row scaling diag(s) of J (``row_scaled``), or None

    def row_scaled(self, rows: Float[Array, " m"]) -> MatrixFreeJacobian:
        """``diag(rows) J`` as products, on the same linearisation: ``(sJ)v = s ∘ (Jv)``,
        ``(sJ)ᵀu = Jᵀ(s ∘ u)`` (a robust loss's corrected Jacobian, ``nlls.losses``)."""
        scaled = copy.copy(self)
        scaled._rows = rows if self._rows is None else self._rows * rows
        return scaled

    def __matmul__(self, vector: Float[Array, " n"]) -> Float[Array, " m"]:
        image = self._jvp(vector)
        return image if self._rows is None else self._rows * image

    @property
    def T(self) -> _Transposed:  # noqa: N802 (the matrix convention)
        if self._rows is None:
            return _Transposed(self._vjp, (self.shape[1], self.shape[0]))
        rows = self._rows
        return _Transposed(lambda u: self._vjp(rows * u), (self.shape[1], self.shape[0]))

    def column_norms(self) -> Float[Array, " n"]:
        """``‖J[:, j]‖`` for every column: ``n`` JVPs, ``chunk`` at a time."""
        n = self.shape[1]
        return map_basis(lambda e: jnp.linalg.norm(self @ e), n, self.dtype, self._chunk)


class _Transposed:
    def __init__(self, vjp, shape):
        self._vjp, self.shape = vjp, shape

    def __matmul__(self, vector):
        return self._vjp(vector)[0]


def map_basis(fn: Callable[[Array], Array], size: int, dtype, chunk: int) -> Array:
    """``[fn(e₀), …, fn(e_{size−1})]`` over the unit vectors of ``R^size``, stacked on the first axis,
    evaluated ``chunk`` at a time (``jax.lax.map`` with a batch size): the unit vectors are built inside
    each batch, so neither the identity matrix nor more than ``chunk`` results of ``fn``'s intermediate
    values are ever held at once."""

    def at(index):
        return fn(jax.nn.one_hot(index, size, dtype=dtype))

    indices = jnp.arange(size)
    if chunk >= size:
        return jax.vmap(at)(indices)
    return jax.lax.map(at, indices, batch_size=chunk)


def chunked_jacobian(
    product: Callable[[Array], Array], mode: str, shape: tuple[int, int], dtype, chunk: int
) -> Float[Array, "m n"]:
    """The dense ``(m, n)`` Jacobian from ``product``: a JVP (``mode="fwd"``, columns) or a VJP
    (``mode="rev"``, rows), ``chunk`` columns or rows at a time.

    Without chunking (``chunk`` at least the number of columns or rows) this is one vmap over the unit
    vectors. With it, a ``fori_loop`` writes each block of ``chunk`` columns (rows) into the
    preallocated ``J`` in place; the last block starts at ``size − chunk`` so that it stays inside
    (a few columns are computed twice). Only one block of intermediate values exists at a time.
    """
    m, n = shape
    size = n if mode == "fwd" else m
    axis = 1 if mode == "fwd" else 0
    if chunk >= size:
        basis = jnp.eye(size, dtype=dtype)
        return jax.vmap(product, out_axes=axis)(basis)

    blocks = -(-size // chunk)

    def fill(index, jac):
        start = jnp.minimum(index * chunk, size - chunk)
        units = jax.nn.one_hot(start + jnp.arange(chunk), size, dtype=dtype)
        block = jax.vmap(product, out_axes=axis)(units)
        corner = (0, start) if mode == "fwd" else (start, 0)
        return jax.lax.dynamic_update_slice(jac, block, corner)

    return jax.lax.fori_loop(0, blocks, fill, jnp.zeros(shape, dtype))
