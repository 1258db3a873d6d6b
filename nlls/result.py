"""The result of a solve."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .termination import Status


class Stats(eqx.Module):
    """Counts and the paths taken.

    ``steps``: accepted steps (optimiser updates for a first-order method); ``rejected``: trial steps
    that were not accepted (rejected LM or trust-region trials, failed line-search trials), counted
    apart; ``nfev``/``njev``: residual and Jacobian (or gradient) evaluations; ``linear``: the path
    of the step, ``"normal"``, ``"min_norm"``, ``"krylov"``, or ``"none"`` for a first-order method;
    ``jac``: how the Jacobian was obtained, ``"fwd"``, ``"rev"``, ``"user"`` (a Jacobian function,
    e.g. ``fit``'s per-sample one) or ``"fwd+rev"`` (matrix-free products of both kinds); ``method``:
    the method that ran (``"LevenbergMarquardt"``, ``"adam"``, …); ``loss``: the loss of the cost
    (``"linear"``, or a robust one with its scale, ``"huber (f_scale=0.1)"``; ``nlls.losses``);
    ``choice``: why ``method="auto"`` ran this method (``nlls.choice``), empty otherwise.
    """

    steps: Int[Array, ""]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    rejected: Int[Array, ""]
    linear: str = eqx.field(static=True)
    jac: str = eqx.field(static=True)
    method: str = eqx.field(static=True, default="")
    loss: str = eqx.field(static=True, default="linear")
    choice: str = eqx.field(static=True, default="")


class Solution(eqx.Module):
    """What ``least_squares`` (and every other front end) returns; a pytree, so it passes through ``jit`` and ``vmap``.

    ``params`` has the structure of ``params0``; ``residual`` that of the residual function's output;
    ``cost = ½‖r‖²``; ``grad = Jᵀr`` (flat); ``status`` says why the solve ended: an ``nlls.Status``
    when the solve's values are known (a plain call), the integer array of ``Status`` values
    otherwise (inside ``jit``, or one per problem after ``vmap``); ``success`` is true when a
    tolerance was met; ``history`` is the ``nlls.History`` passed in ``callbacks``, if any.
    ``mse = 2·cost/m`` and ``rmse = √mse`` are the mean and root mean square of the ``m``
    residuals.

    With a robust loss (``least_squares(..., loss=...)``, ``nlls.losses``), ``cost`` is the robust
    cost ``½ Σ C²ρ((rᵢ/C)²)`` that was minimised and ``grad`` its gradient ``Jᵀ(ρ' ∘ r)``;
    ``plain_cost`` is ``½‖r‖²`` at the same parameters (equal to ``cost`` for the linear loss), and
    ``residual`` is ``r`` itself.

    ``covariance``: the ``(n, n)`` covariance of the parameters in the order of
    ``ravel_pytree(params)`` (``inf`` when it cannot be estimated; ``nlls.uncertainty``), when the
    solve was asked for it (``least_squares(..., covariance=True)``, ``curve_fit``); ``None``
    otherwise. ``nlls.covariance``, ``nlls.standard_errors`` and ``nlls.correlation`` lay it out
    like the parameters. ``r_squared``: the coefficient of determination of a ``curve_fit``
    (``nlls.curve_fitting``), ``None`` otherwise. ``active_bounds``: for a solve with bounds, a
    pytree like ``params`` of ``−1`` (at the lower bound), ``+1`` (at the upper) or ``0``, a
    parameter counting as at a bound within ``xtol · max(1, |bound|)`` (``nlls.bounds``);
    ``None`` without bounds.

    ``print(sol)`` shows the values: status by name and in words, cost, parameters (small leaves
    in full, large ones by shape and range) and the counts; a batch of solves is summarised.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]))
        >>> bool(sol.success), sol.status in (nlls.Status.GTOL, nlls.Status.XTOL)
        (True, True)
        >>> print(sol)  # doctest: +ELLIPSIS
        Solution: converged (...)
          params:   [1. 1.]
          cost:     ...
          mse:      ...
          stats:    ... steps, ... rejected, nfev=..., njev=..., method LevenbergMarquardt, linear normal, jac fwd
    """

    params: Any
    cost: Float[Array, "*batch"]
    residual: Any
    grad: Float[Array, "*batch n"]
    success: Bool[Array, "*batch"]
    status_code: Int[Array, "*batch"]
    stats: Stats
    history: Any = eqx.field(static=True, default=None)
    covariance: Float[Array, "*batch n n"] | None = None
    r_squared: Float[Array, "*batch"] | None = None
    active_bounds: Any = None
    plain_cost: Float[Array, "*batch"] | None = None

    def __init__(
        self,
        params,
        cost,
        residual,
        grad,
        success,
        status=None,
        stats: Stats | None = None,
        history=None,
        covariance=None,
        r_squared=None,
        active_bounds=None,
        plain_cost=None,
        *,
        status_code=None,
    ):
        # ``status`` is the argument; ``status_code`` is the field's name (``dataclasses.replace``).
        if (status is None) == (status_code is None):
            raise TypeError("give a Solution its status (once)")
        self.params = params
        self.cost = cost
        self.residual = residual
        self.grad = grad
        self.success = success
        self.status_code = status if status_code is None else status_code
        self.stats = stats
        self.history = history
        self.covariance = covariance
        self.r_squared = r_squared
        self.active_bounds = active_bounds
        self.plain_cost = plain_cost

    @property
    def status(self) -> Status | Int[Array, "*batch"]:
        """Why the solve ended: a ``Status`` when known and single; else the integer array
        (traced under ``jit``, or one value per problem after ``vmap``)."""
        code = self.status_code
        if _concrete(code) and np.ndim(code) == 0:
            return Status(int(code))
        return code

    @property
    def message(self) -> str | list[str]:
        """The status in words (a list of them for a batch of solves)."""
        codes = np.asarray(self.status_code)
        if codes.ndim == 0:
            return Status(int(codes)).message
        return [Status(int(c)).message for c in codes.ravel()]

    @property
    def mse(self) -> Float[Array, "*batch"]:
        """The mean square of the residuals, ``2·cost/m`` (for ``nlls.fit``: of the weighted
        errors ``wᵢ(model(xᵢ) − yᵢ)``, over every output of every sample)."""
        leaves = jax.tree_util.tree_leaves(self.residual)
        m = sum(int(np.size(leaf)) for leaf in leaves) // max(int(np.size(self.cost)), 1)
        return 2.0 * self.cost / m

    @property
    def rmse(self) -> Float[Array, "*batch"]:
        """The root mean square of the residuals, ``√mse``."""
        return self.mse**0.5

    def replace(self, **changes) -> Solution:
        """A copy with some fields changed (``status`` for ``status_code``)."""
        fields = {
            "params": self.params,
            "cost": self.cost,
            "residual": self.residual,
            "grad": self.grad,
            "success": self.success,
            "status": self.status_code,
            "stats": self.stats,
            "history": self.history,
            "covariance": self.covariance,
            "r_squared": self.r_squared,
            "active_bounds": self.active_bounds,
            "plain_cost": self.plain_cost,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Solution has no field {sorted(unknown)}")
        return Solution(**{**fields, **changes})

    def __repr__(self) -> str:
        leaves = jax.tree_util.tree_leaves((self.cost, self.status_code, self.params))
        if not all(_concrete(leaf) for leaf in leaves):
            return super().__repr__()  # traced: the structure, as equinox shows it
        return _describe(self)

    __str__ = __repr__


def _concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _number(value) -> str:
    """Seven significant digits, a float kept looking like one (``2.0``, not ``2``)."""
    text = f"{float(value):.7g}"
    return text if any(c in text for c in ".einf") else text + ".0"


class _Text(str):
    """A string that prints without quotes (a formatted leaf inside a printed pytree)."""

    def __repr__(self) -> str:
        return str(self)


def _leaf_text(leaf) -> _Text:
    """A small leaf in full (7 digits), a large one by dtype, shape and range."""
    array = np.asarray(leaf)
    if array.ndim == 0:
        return _Text(_number(array))
    if array.size <= 8:
        return _Text(np.array2string(array, precision=7, separator=" "))
    kind = f"{array.dtype.name}{list(array.shape)}"
    if array.size and np.issubdtype(array.dtype, np.number):
        return _Text(f"{kind} in [{_number(array.min())}, {_number(array.max())}]")
    return _Text(kind)


def _params_text(params) -> str:
    """A pytree of a few leaves in full (``{'a': 2.0, 'k': 1.5}``); a model or a larger pytree as
    its type, size and range."""
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    if len(leaves) <= 8 and not isinstance(params, eqx.Module):
        return repr(jax.tree_util.tree_map(_leaf_text, params))
    size = sum(leaf.size for leaf in leaves)
    dtypes = "/".join(sorted({leaf.dtype.name for leaf in leaves}))
    text = f"{type(params).__name__} of {size} parameters in {len(leaves)} arrays ({dtypes})"
    if size:
        low = min(leaf.min() for leaf in leaves if leaf.size)
        high = max(leaf.max() for leaf in leaves if leaf.size)
        text += f" in [{_number(low)}, {_number(high)}]"
    return text


def _describe(sol: Solution) -> str:
    stats = sol.stats
    codes = np.asarray(sol.status_code)
    if codes.ndim == 0:
        status = Status(int(codes))
        verdict = "converged" if status.converged else "not converged"
        lines = [
            f"Solution: {verdict} ({status.name}: {status.message})",
            f"  params:   {_params_text(sol.params)}",
            f"  cost:     {_number(sol.cost)}",
            f"  mse:      {_number(sol.mse)}",
        ]
        if sol.r_squared is not None:
            lines.append(f"  R²:       {_number(sol.r_squared)}")
        lines.append(
            f"  stats:    {int(stats.steps)} steps, {int(stats.rejected)} rejected, "
            f"nfev={int(stats.nfev)}, njev={int(stats.njev)}, method {stats.method or '?'}, "
            f"linear {stats.linear}, jac {stats.jac}"
        )
        if stats.choice:
            lines.append(f"  choice:   {stats.choice}")
        return "\n".join(lines)
    # A batch of solves (after vmap): counts of each status and the spread of the values.
    names, counts = np.unique(codes.ravel(), return_counts=True)
    tally = ", ".join(f"{Status(int(c)).name} {k}" for c, k in zip(names, counts, strict=True))
    cost = np.asarray(sol.cost)
    converged = int(np.count_nonzero(np.asarray(sol.success)))
    return "\n".join(
        [
            f"Solution of {codes.size} solves {tuple(codes.shape)}: {converged} converged ({tally})",
            f"  cost:     min {_number(cost.min())}, median {_number(np.median(cost))}, "
            f"max {_number(cost.max())}",
            f"  steps:    min {int(np.min(stats.steps))}, max {int(np.max(stats.steps))}; "
            f"method {stats.method or '?'}, linear {stats.linear}, jac {stats.jac}",
        ]
    )
