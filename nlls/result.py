"""The result of a solve."""

from __future__ import annotations

from typing import Any

import equinox as eqx
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
    (``"linear"``, or a robust one with its scale, ``"huber (f_scale=0.1)"``; ``nlls.losses``).
    """

    steps: Int[Array, ""]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    rejected: Int[Array, ""]
    linear: str = eqx.field(static=True)
    jac: str = eqx.field(static=True)
    method: str = eqx.field(static=True, default="")
    loss: str = eqx.field(static=True, default="linear")


class Solution(eqx.Module):
    """What ``least_squares`` (and every other front end) returns; a pytree, so it passes through ``jit`` and ``vmap``.

    ``params`` has the structure of ``params0``; ``residual`` that of the residual function's output;
    ``cost = ½‖r‖²``; ``grad = Jᵀr`` (flat); ``status`` is a ``Status`` value (an integer array, one per
    problem under ``vmap``); ``success`` is true when a tolerance was met; ``history`` is the
    ``nlls.History`` passed in ``callbacks``, if any.

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
    """

    params: Any
    cost: Float[Array, "*batch"]
    residual: Any
    grad: Float[Array, "*batch n"]
    success: Bool[Array, "*batch"]
    status: Int[Array, "*batch"]
    stats: Stats
    history: Any = eqx.field(static=True, default=None)
    covariance: Float[Array, "*batch n n"] | None = None
    r_squared: Float[Array, "*batch"] | None = None
    active_bounds: Any = None
    plain_cost: Float[Array, "*batch"] | None = None

    @property
    def message(self) -> str | list[str]:
        """The status in words (a list of them for a batch of solves)."""
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return Status(int(codes)).message
        return [Status(int(c)).message for c in codes.ravel()]
