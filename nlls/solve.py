"""``least_squares``: the public entry point of the engine."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import numpy as np

from . import checks, choice, plan
from .callbacks import StepInfo
from .driver import Run
from .linear import Krylov
from .plan import Setup
from .result import Solution
from .solvers import Dogleg, GaussNewton, LevenbergMarquardt, TrustRegion
from .solvers.base import Method
from .termination import Tolerances

METHODS = {
    "lm": LevenbergMarquardt,
    "gn": GaussNewton,
    "dogleg": Dogleg,
    "trust_region": TrustRegion,
}


def least_squares(
    residual: Callable[..., Any],
    params0: Any,
    args: tuple = (),
    *,
    method: str | eqx.Module = "lm",
    jac: str | Callable[..., Any] = "auto",
    linear: str | Krylov = "auto",
    max_jacobian_bytes: int | None = None,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_steps: int = 1000,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
    resume: str | os.PathLike | None = None,
    covariance: bool | str = False,
    bounds: tuple | None = None,
    loss: str | Callable[[Any], Any] = "linear",
    f_scale: float = 1.0,
    check_jac: bool = True,
) -> Solution:
    """Minimise ``½‖residual(params, *args)‖²`` over ``params``, or a robust cost ``½ Σ C²ρ((rᵢ/C)²)``.

    Args:
        residual: ``residual(params, *args)`` returns an array or pytree of residuals, of the same
            floating dtype as the parameters.
        params0: the starting point, any pytree of floating arrays of one dtype (float32 or float64).
        args: extra arguments passed to ``residual`` (data, usually); arrays here are traced, not
            baked into the compiled program; other values (Python numbers, strings) are static, and
            a new value compiles anew.
        method: ``"auto"`` (chosen for the problem by measured rules, ``nlls.choice``; the reason
            is ``sol.stats.choice``), ``"lm"`` (Levenberg–Marquardt), ``"gn"`` (Gauss–Newton with line search),
            ``"dogleg"``, ``"trust_region"`` (Steihaug–Toint CG), or a configured solver object such as ``nlls.LevenbergMarquardt(geodesic=True)``.
        jac: ``"auto"`` (forward mode when ``n ≤ m``, reverse mode otherwise), ``"fwd"``, ``"rev"``, or
            a function ``jac(params, *args)`` returning the ``(m, n)`` Jacobian of the flattened residual
            with respect to the flattened parameters. Such a function is checked once (on the
            first call of its compiled plan) against the residual's own derivative along a random
            direction; a mismatch is a ``ValueError`` (``check_jac=False`` skips the check).
        linear: ``"auto"`` (``"normal"`` when ``n ≤ m``, ``"min_norm"`` when ``m < n``, ``"krylov"``
            when that dense path would not fit ``max_jacobian_bytes``), ``"normal"`` (n×n normal
            equations), ``"min_norm"`` (m×m system, no n×n matrix ever formed), or ``"krylov"`` /
            ``nlls.Krylov(...)`` (matrix-free: J is never formed, each step is a truncated CGLS
            solve on Jacobian–vector products). ``sol.stats.linear`` records the path that ran.
        max_jacobian_bytes: the memory budget of the Jacobian. A dense path holds three copies of J
            (the current point's, an accepted trial's, a scaled one) and two of its Gram
            matrix, and builds J in blocks of columns (forward mode) or rows (reverse mode) so that
            the intermediate values of one block fit what is left; ``"auto"`` switches to the
            matrix-free path when they do not fit. ``None``: a quarter of the memory available when
            the problem is first seen (device memory on an accelerator). A budget smaller than one
            row or one column of J raises ``ValueError``.
        ftol, xtol, gtol: termination tolerances, defined in ``nlls.termination``.
        max_steps: the most accepted steps.
        callbacks: functions ``callback(info: nlls.StepInfo)`` called between compiled segments of
            the loop; returning ``True`` stops the solve (``Status.CALLBACK``). Built-in ones:
            ``nlls.History``, ``Checkpoint``, ``EarlyStopping``, ``ProgressBar``, ``Metrics``; see
            ``nlls.callbacks`` for ``on_start``/``on_end``/``restore``.
        callback_every: iterations (trial steps, accepted or not) per segment. The iterates do not
            depend on it.
        max_time: seconds after which the solve ends with ``Status.TIME_LIMIT``, checked between
            segments; counted from the first iteration (compilation excluded).
        resume: a file written by ``nlls.Checkpoint``: continue that solve (same problem and solver;
            a solve that ran out of steps continues up to this call's ``max_steps``;
            a mismatched or damaged file raises ``nlls.CheckpointError``). ``params0`` gives the
            structure only.

        covariance: also compute the covariance of the parameters at the solution
            (``Solution.covariance``; ``nlls.covariance``, ``nlls.standard_errors``,
            ``nlls.correlation`` read it): ``True`` for ``s²(JᵀJ)⁻¹`` with the residuals' variance
            estimated by ``s² = 2·cost/(m − n)``, ``"absolute"`` for ``(JᵀJ)⁻¹`` when the residuals
            are already divided by their true standard deviations (scipy's ``absolute_sigma``).
            ``inf`` when it cannot be estimated (``nlls.uncertainty``). It costs the SVD of the
            final Jacobian (formed if the steps were matrix-free). With a robust loss it is that of
            scipy's ``curve_fit``: from the corrected Jacobian ``J̃`` and the robust cost.
        loss: ``"linear"`` (``½‖r‖²``), or a robust loss as ``scipy.optimize.least_squares``
            defines it: ``"soft_l1"``, ``"huber"``, ``"cauchy"``, ``"arctan"``, or a function
            ``loss(z)`` of the ``(m,)`` array ``z = (r/f_scale)²`` returning the ``(3, m)`` array
            ``[ρ(z), ρ'(z), ρ''(z)]`` (``jax.numpy``). The cost is then ``½ Σ f_scale² ρ(zᵢ)``
            (``Solution.cost``; ``Solution.plain_cost`` is ``½‖r‖²``), minimised by every method and
            linear path on the corrected Jacobian and residual of Triggs et al. (``nlls.losses``).
        f_scale: C, the size of residual beyond which the loss treats it as an outlier; finite
            and positive (ignored by the linear loss). A new value compiles anew.
        check_jac: compare a ``jac`` function with the residual's derivative once (see ``jac``).
        bounds: ``(lower, upper)``, each a scalar or a pytree like ``params0`` (leaves broadcast to
            the parameter's shape), ``-inf``/``inf`` for no bound; ``None`` for none. Taken by
            ``method="lm"`` (Coleman–Li affine scaling with reflective steps, ``nlls.bounds``) on
            every linear path; iterates stay strictly inside, a start on a bound is moved inside
            by ``1e-10·max(1, |bound|)``, and ``Solution.active_bounds`` says which bounds hold
            at the end. ``gtol`` then tests the projected gradient. ``params0`` outside, NaN in
            the bounds or ``lower ≥ upper`` raise ``ValueError``.

        Without callbacks, ``max_time`` and ``resume`` the solve is one compiled program and works
        under ``jax.jit``/``jax.vmap``; with them it runs from Python (a ``KeyboardInterrupt`` then
        returns the last point reached, with ``Status.INTERRUPTED``) and needs concrete inputs.

        Derivatives: ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.jacfwd`` and ``jax.jacrev`` of
        the ``Solution``'s ``params``, ``cost``, ``residual``, ``grad`` and ``covariance`` with
        respect to the arrays in ``args`` come from the implicit function theorem at the solution
        (``nlls.implicit``: the loop is not differentiated; the residual must allow reverse-mode
        differentiation). The derivative with respect to ``params0`` is zero; with respect to
        values the residual closes over (not passed in ``args``) it is not computed this way, so
        pass what is differentiated in ``args``. At a solve that did not converge
        (``sol.success`` false) it is the derivative of the linearisation at the point reached;
        with ``m < n`` the minimum-norm one. Callbacks, ``max_time`` and ``resume`` cannot be
        differentiated.

    Returns:
        A ``Solution``; ``Status(int(sol.status))`` names why it stopped.

    Raises:
        ValueError: a non-finite ``params0``, or residual or Jacobian non-finite at the start; a
            residual of the wrong dtype or shape; an unknown option (a loss not named above, an
            ``f_scale`` not finite and positive, a loss function not returning ``(3, m)``). Under an outer ``jax.jit`` or
            ``jax.vmap`` the values are not known when tracing, so a non-finite start is reported as
            ``Status.NONFINITE_START`` (with ``params`` left at ``params0``) instead of raised.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> y = 2.0 * jnp.exp(-1.5 * x)
        >>> sol = nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                          {"a": 1.0, "k": 1.0}, args=(x, y))
        >>> print(f"{float(sol.params['a']):.4f} {float(sol.params['k']):.4f}")
        2.0000 1.5000

        A robust fit: one gross outlier barely moves it.

        >>> y_bad = y.at[5].add(5.0)
        >>> sol = nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                          {"a": 1.0, "k": 1.0}, args=(x, y_bad),
        ...                          loss="cauchy", f_scale=0.1)
        >>> print(f"{float(sol.params['a']):.2f} {float(sol.params['k']):.2f}")
        2.00 1.50
        >>> import jax
        >>> def rate(y):  # the fitted rate as a function of the data
        ...     return nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                               {"a": 1.0, "k": 1.0}, args=(x, y)).params["k"]
        >>> jax.grad(rate)(y).shape
        (20,)
    """
    method, reason = _resolve_method(method)
    setup = Setup(
        method=method,
        jac=jac,
        linear=linear,
        max_jacobian_bytes=(
            None if max_jacobian_bytes is None else checks.byte_budget(max_jacobian_bytes)
        ),
        covariance=_covariance_kind(covariance),
        loss=checks.loss(loss, f_scale),
        check_jac=checks.flag("check_jac", check_jac),
        choice=reason,
    )
    max_steps = checks.step_limit("max_steps", max_steps)
    run = Run(max_steps, callbacks, callback_every, max_time, resume)
    tolerances = Tolerances(
        checks.tolerance("ftol", ftol),
        checks.tolerance("xtol", xtol),
        checks.tolerance("gtol", gtol),
    )
    args = checks.args_tuple(args)
    return plan.solve(residual, params0, args, setup, run, tolerances=tolerances, bounds=bounds)


def _covariance_kind(covariance) -> str | None:
    if isinstance(covariance, str) and covariance == "absolute":
        return "absolute"
    if isinstance(covariance, bool | np.bool_):
        return "scaled" if covariance else None
    raise ValueError(f"covariance must be True, False or 'absolute', got {covariance!r}")


@functools.cache
def _default(name: str):
    """The method ``name`` with its default options (made once: a plain call's overhead counts)."""
    return METHODS[name]()


def _resolve_method(method) -> tuple[Method, str]:
    """The solver object for ``method``, and why it was chosen when ``method="auto"`` (else "")."""
    if isinstance(method, str) and method == choice.AUTO:  # chosen by Plan.check from the shapes
        return choice.placeholder(), choice.PENDING
    if isinstance(method, str):
        if method in checks.FIRST_ORDER_METHODS:
            raise ValueError(
                f"method={method!r} is a first-order baseline, not a least-squares method: call "
                f"nlls.baselines.{method}(residual, params0, args) or "
                f"nlls.fit(..., method={method!r}); least_squares takes {tuple(METHODS)} or a "
                "solver object such as nlls.LevenbergMarquardt()"
            )
        checks.method_name(method, (choice.AUTO, *METHODS))
        return _default(method), ""
    if isinstance(method, LevenbergMarquardt | GaussNewton | Dogleg | TrustRegion):
        return method, ""
    raise TypeError(
        f"method must be a name or a solver object such as nlls.LevenbergMarquardt(), got {method!r}"
    )
