"""The problem as the solvers see it: a residual of a flat parameter vector, and its Jacobian.

Users write ``residual(params, *args)`` for any pytree ``params`` returning any pytree of residuals.
Inside the solver both are flattened (``jax.flatten_util.ravel_pytree``) so the linear algebra works on
plain vectors ``θ ∈ Rⁿ`` and ``r ∈ Rᵐ``; the result is unflattened at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .bounds import projected_gradient
from .jacobian import (
    MatrixFreeJacobian,
    chunked_jacobian,
    second_directional_derivative,
    value_and_second_directional,
)
from .losses import LINEAR, Loss
from .sharding import Rows


class Samples(eqx.Module):
    """The data of a minibatch run: ``count`` samples along the leading axis of every leaf of
    ``data``, ``per_sample`` residuals each, drawn ``batch`` at a time from permutations seeded by
    ``key`` (a ``jax.random`` key). ``layout``: the samples are sharded over devices
    (``nlls.sharding.Rows``, its count dividing ``count`` and ``batch``) and each device draws
    its part of a batch from its own samples; ``None`` otherwise."""

    data: Any
    key: Any
    count: int = eqx.field(static=True)
    batch: int = eqx.field(static=True)
    per_sample: int = eqx.field(static=True)
    layout: Rows | None = eqx.field(static=True, default=None)

    @property
    def shards(self) -> int:
        return 1 if self.layout is None else self.layout.count

    @property
    def residuals(self) -> int:  # m
        return self.count * self.per_sample

    @property
    def batch_residuals(self) -> int:  # m_𝓑
        return self.batch * self.per_sample

    @property
    def batches_per_epoch(self) -> int:
        return self.count // self.batch

    def take(self, indices):
        """The samples at ``indices`` (every leaf indexed alike): global indices ``(B,)``, or per
        shard ``(D, B/D)`` indices into each shard's own samples (the batch then stays sharded,
        each device gathering from its own rows)."""
        if indices.ndim == 1:
            return jax.tree_util.tree_map(lambda leaf: leaf[indices], self.data)
        layout = self.layout

        def local(leaf):
            blocks = layout.by_rows(leaf.reshape(layout.count, -1, *leaf.shape[1:]))
            picked = jax.vmap(lambda block, rows: block[rows])(blocks, indices)
            return layout.by_rows(picked.reshape(-1, *leaf.shape[1:]))

        return jax.tree_util.tree_map(local, self.data)


class FlatProblem(eqx.Module):
    """``r(θ)`` on flat vectors, with the Jacobian evaluated in the chosen AD mode.

    ``jac_mode`` is ``"fwd"``, ``"rev"`` or ``"user"`` (then ``user_jac(params, *args)`` returns the
    ``(m, n)`` Jacobian of the flattened residual with respect to the flattened parameters).
    ``matrix_free``: the Jacobian is never formed; ``jacobian`` gives a ``MatrixFreeJacobian``
    (products only). ``chunk``: the most columns (forward mode) or rows (reverse mode) of the
    Jacobian built at once, from the memory budget; ``None`` builds them all in one vmap.
    ``samples``: the data of a minibatch run, which ``residual_fn`` takes after ``args``
    (``residual_fn(params, *args, *batch)``); ``on(batch)`` is the problem of one batch.
    ``bounds``: ``(lower, upper)`` flat arrays (``±inf`` for none), or ``None`` (``nlls.bounds``).
    ``layout``: how the rows are sharded over devices (``nlls.sharding.Rows``), or ``None``.
    ``loss``: the cost is ``½ Σ C² ρ((rᵢ/C)²)`` (``nlls.losses``); ``model`` gives the corrected
    residual and Jacobian a step is solved on, and ``operator`` and ``second_directional`` are those
    of the corrected model. ``evaluate``, ``linearize`` and ``jacobian`` give ``r`` and ``J``
    themselves.
    """

    residual_fn: Callable[..., Any]
    args: tuple
    unravel_params: Callable[[Array], Any]
    jac_mode: str = eqx.field(static=True)
    user_jac: Callable[..., Any] | None = None
    matrix_free: bool = eqx.field(static=True, default=False)
    chunk: int | None = eqx.field(static=True, default=None)
    samples: Samples | None = None
    bounds: tuple[Array, Array] | None = None
    loss: Loss = eqx.field(static=True, default=LINEAR)
    layout: Rows | None = eqx.field(static=True, default=None)

    def stationarity(
        self, params: Float[Array, " n"], grad: Float[Array, " n"], curvature=1.0
    ) -> Array:
        """What ``gtol`` tests: the gradient, or with bounds the projected gradient
        (``nlls.bounds.projected_gradient``, with ``curvature`` the squared column norms of J),
        which vanishes at a minimum on a bound."""
        if self.bounds is None:
            return grad
        return projected_gradient(params, grad, *self.bounds, curvature)

    def __call__(self, params: Float[Array, " n"]) -> Float[Array, " m"]:
        tree = self.residual_fn(self.unravel_params(params), *self.args)
        return ravel_pytree(tree)[0]

    def linearize(self, params: Float[Array, " n"]):
        """The residual and the Jacobian at ``params`` (dense, or a ``MatrixFreeJacobian``)."""
        residual, jacobian = self.evaluate(params)
        return residual, jacobian()

    def evaluate(self, params: Float[Array, " n"]):
        """The residual at ``params`` and a function that gives the Jacobian there.

        The residual comes from the linearisation itself (``jax.linearize`` or ``jax.vjp``), so a
        trial point is evaluated once: if it is accepted, its Jacobian costs only the JVPs or VJPs,
        not another evaluation of the residual (which can dominate, e.g. for trigonometric models).
        Matrix-free, a trial is one plain evaluation, and the linearisation is made only for an
        accepted point.
        """
        if self.matrix_free:
            chunk = self.chunk or params.size
            return self(params), lambda: MatrixFreeJacobian(self, params, chunk)
        if self.jac_mode == "fwd":
            residual, jvp = jax.linearize(self, params)
            shape = (residual.size, params.size)
            chunk = self.chunk or params.size
            return residual, lambda: chunked_jacobian(jvp, "fwd", shape, params.dtype, chunk)
        if self.jac_mode == "rev":
            residual, vjp = jax.vjp(self, params)
            shape = (residual.size, params.size)
            chunk = self.chunk or residual.size
            rows = lambda u: vjp(u)[0]  # noqa: E731
            return residual, lambda: chunked_jacobian(rows, "rev", shape, params.dtype, chunk)
        user = lambda: jnp.asarray(  # noqa: E731
            self.user_jac(self.unravel_params(params), *self.args), dtype=params.dtype
        )
        return self(params), user

    def model(self, residual: Float[Array, " m"], jac):
        """``(r̃, J̃)``: the residual and Jacobian of the Gauss–Newton model of the cost at a point
        of residual ``residual`` and Jacobian ``jac`` (dense, or a ``MatrixFreeJacobian``). For a
        robust loss, ``r̃ = (ρ'/s) ∘ r`` and ``J̃ = diag(s) J`` (``nlls.losses``: the model's gradient
        ``J̃ᵀr̃`` is the robust cost's); for the linear loss, ``r`` and ``J`` themselves."""
        if self.loss.linear:
            return residual, jac
        residual_factor, rows = self.loss.correction(residual)
        if isinstance(jac, MatrixFreeJacobian):
            return residual_factor * residual, jac.row_scaled(rows)
        return residual_factor * residual, rows[:, None] * jac

    def on(self, batch) -> FlatProblem:
        """The problem of the samples ``batch`` (a minibatch run's data indexed alike), with the
        same AD mode and loss."""
        return FlatProblem(
            self.residual_fn,
            (*self.args, *batch),
            self.unravel_params,
            self.jac_mode,
            self.user_jac,
            loss=self.loss,
            layout=self.layout,
        )

    def operator(self, params: Float[Array, " n"]) -> MatrixFreeJacobian:
        """The Jacobian of the model at ``params`` as products only (``J̃ @ v``, ``J̃.T @ u``;
        ``J`` itself for the linear loss)."""
        jac = MatrixFreeJacobian(self, params, self.chunk or params.size)
        return self.model(jac.residual, jac)[1]

    def jacobian(self, params: Float[Array, " n"]):
        return self.linearize(params)[1]

    def second_directional(
        self, params: Float[Array, " n"], direction: Float[Array, " n"]
    ) -> Float[Array, " m"]:
        """``r''(θ)[v, v]``, for geodesic acceleration; for a robust loss, with the rows of the
        corrected Jacobian scaled alike, ``s ∘ r''(θ)[v, v]`` (the curvature of the model's
        residual, as ``J̃ = diag(s) J`` is its slope)."""
        if self.loss.linear:
            return second_directional_derivative(self, params, direction)
        residual, second = value_and_second_directional(self, params, direction)
        return self.loss.correction(residual)[1] * second


def describe_leaves(tree) -> str:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return ", ".join(
        f"{jax.tree_util.keystr(path) or 'params'}: {jnp.result_type(leaf)}{jnp.shape(leaf)}"
        for path, leaf in leaves
    )


def raise_non_finite_start(params0):
    """Raise the ``ValueError`` for a solve that reported ``Status.NONFINITE_START``, naming the
    first non-finite leaf of ``params0`` if there is one."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params0):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(
                f"params0 is not finite at {jax.tree_util.keystr(path) or 'params0'}: "
                "nlls needs a finite starting point"
            )
    raise ValueError(
        "the residual or its Jacobian is not finite at params0: nlls needs a finite "
        "starting point (check the initial parameters and the data for NaN or inf)"
    )
