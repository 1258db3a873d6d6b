"""``curve_fit``: scipy's ``curve_fit`` interface, on the engine.

A model ``f(x, *params)`` is fitted to data ``y`` with known errors: the fit minimises

    χ²(θ) = (f(x, θ) − y)ᵀ Σ⁻¹ (f(x, θ) − y)

over the parameters θ, where Σ is the covariance of the measurement errors (``sigma``): the identity
when ``sigma`` is not given, ``diag(σ²)`` for standard deviations σ, or a full matrix. With the
Cholesky factor ``Σ = LLᵀ`` the residual is whitened, ``r = L⁻¹(f − y)`` (``r = (f − y)/σ`` for
standard deviations), so that ``χ² = ‖r‖² = 2·cost`` and ``least_squares`` does the rest, with the
covariance of the parameters computed at the solution (``nlls.uncertainty``). As in scipy, that
covariance is ``s²(JᵀJ)⁻¹`` with ``s² = χ²/(m − n)`` by default — only the relative sizes of the σ
matter — and ``(JᵀJ)⁻¹`` with ``absolute_sigma=True``, when σ are the errors in the units of y.

The coefficient of determination compares χ² with that of the best constant model,
``R² = 1 − χ²/χ²₀``, ``χ²₀ = min_c (y − c)ᵀ Σ⁻¹ (y − c)`` (the weighted mean): the usual
``1 − RSS/TSS`` when ``sigma`` is not given. ``curve_fit`` puts it in the ``Solution``
(``r_squared``), where ``fit_report`` finds it.

Inside, the parameters are an ordered dict named after ``f``'s arguments (``f(x, a, k)``: ``a``,
``k``; a variable argument list ``f(x, *b)``: ``b[0]``, ``b[1]``, …), so that the ``Solution`` and its
report name them; ``popt`` and ``pcov`` are the arrays scipy returns, in the order of the arguments.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular

from . import checks, uncertainty
from .solve import least_squares

#: The default tolerances: to working precision (the solve ends with ``Status.PRECISION`` or on a
#: relative change of 1e-15, raised to the dtype's eps), not scipy's 1.49e-8. The standard errors
#: need the minimum to more digits than the fit's own reading of it does, and a small fit costs
#: little more: on the NIST sets, 1.7× the evaluations of ``ftol = xtol = 1e-8``, which left the
#: parameters of 16 of the 38 fits with fewer than 6 correct digits.
TOLERANCES = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 0.0}


def curve_fit(
    f: Callable[..., Any],
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    *,
    bounds=(-np.inf, np.inf),
    method=None,
    jac=None,
    full_output: bool = False,
    **kwargs,
):
    """Fit ``f(xdata, *params)`` to ``ydata`` by least squares, as ``scipy.optimize.curve_fit``.

    Args:
        f: the model, ``f(x, *params)`` with the parameters as separate scalar arguments, written
            with ``jax.numpy``; it returns the predictions of ``ydata`` (or something that
            broadcasts to its shape).
        xdata: the independent variable: an array (lists, tuples and NumPy arrays are converted,
            and cast to the parameters' dtype, as scipy converts them to float) or any pytree,
            passed to ``f`` as it is (its floating arrays cast to the parameters' dtype).
        ydata: the data, an array of ``M`` values.
        p0: the starting parameters, ``n`` numbers; ``None``: all ones, with ``n`` read from
            ``f``'s signature.
        sigma: the errors of ``ydata``: ``None``; an array of ``ydata``'s shape (standard
            deviations σ, the residual is ``(f − y)/σ``); or an ``(M, M)`` array (the covariance
            of the errors, whitened by its Cholesky factor).
        absolute_sigma: ``sigma`` holds the errors in the units of ``ydata``: ``pcov`` is
            ``(JᵀJ)⁻¹``, not rescaled by the reduced χ².
        bounds: ``(lower, upper)``, each a scalar or ``n`` numbers, ``±inf`` for none (scipy's
            form); the fit runs Levenberg–Marquardt with Coleman–Li reflective steps inside them
            (``nlls.bounds``). With bounds and no ``p0`` the start is, as scipy's, the middle of
            finite bounds, one inside a one-sided bound, or 1.
        method: ``None`` (Levenberg–Marquardt) or anything ``least_squares`` takes (``"gn"``,
            ``"dogleg"``, ``"trust_region"``, a solver object).
        jac: ``None`` (automatic differentiation), ``"fwd"``/``"rev"``, or a function
            ``jac(x, *params)`` returning the ``(M, n)`` Jacobian of ``f``.
        full_output: also return the ``Solution``.
        kwargs: passed to ``least_squares`` (``ftol``, ``xtol``, ``gtol``, ``max_steps``,
            ``loss``, ``f_scale``, …). The tolerances default to ``TOLERANCES`` (to working
            precision); scipy's stopping is ``ftol=1.49e-8, xtol=1.49e-8, gtol=0``. A robust
            ``loss`` applies to the whitened residual, and ``pcov`` is then scipy's: from the
            corrected Jacobian ``J̃`` and the robust cost at the solution (``nlls.losses``); R² and
            the report's χ² are those of the residuals themselves.

    The parameters' dtype is ``p0``'s when it is a floating array, else ``ydata``'s when that is
    floating, else JAX's default float; float32 and float64 both work. ``jax.vmap`` over data sets
    (``ydata``, ``xdata``, ``sigma`` or ``p0``) fits them all in one program.

    Returns:
        ``(popt, pcov)``: the fitted parameters, shape ``(n,)``, and their covariance ``(n, n)``
        (``inf`` everywhere when it cannot be estimated: a singular Jacobian, or ``M ≤ n`` without
        ``absolute_sigma``; ``nlls.CovarianceWarning`` says so). With ``full_output=True``,
        ``(popt, pcov, solution)``: the ``Solution``, whose ``params`` name the parameters after
        ``f``'s arguments and whose ``r_squared`` is set, for ``nlls.fit_report``.

    Raises:
        RuntimeError: the fit did not converge (as scipy; not under ``jit``/``vmap``, where the
            ``Solution``'s status says it).
        ValueError: malformed bounds or ``p0`` outside them; ``sigma`` of another shape, not positive, or not positive definite;
            NaN or inf in the data; ``f``'s output not broadcasting to ``ydata``'s shape.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> def decay(x, a, k):
        ...     return a * jnp.exp(-k * x)
        >>> x = jnp.linspace(0.0, 2.0, 30)
        >>> y = decay(x, 3.0, 1.2) + 0.01 * jnp.sin(25.0 * x)
        >>> popt, pcov = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0])
        >>> print(jnp.round(popt, 3), jnp.sqrt(jnp.diag(pcov)) < 0.01)
        [3.002 1.201] [ True  True]
    """
    count = None if p0 is None else int(np.size(p0))
    names = parameter_names(f, count)
    dtype = _dtype(p0, ydata)
    bounds = _named_bounds(bounds, names)
    if p0 is not None:
        start = _flat_start(p0, dtype)
    elif bounds is None:
        start = jnp.ones(len(names), dtype)
    else:
        start = jnp.asarray(_feasible_start(*bounds, len(names)), dtype)
    params0 = collections.OrderedDict((name, jnp.asarray(start[i])) for i, name in enumerate(names))
    ydata = jnp.asarray(ydata, dtype)
    if ydata.size == 0:
        raise ValueError("ydata is empty: there is nothing to fit")
    checks.finite("ydata", ydata)
    xdata = _as_data(xdata, dtype)
    whitening = _whitening(sigma, ydata)
    if method is None:
        method = "lm"
    if callable(jac):
        jac, model_jacobian = _whitened_jacobian, jac
    else:
        jac, model_jacobian = ("auto" if jac is None else jac), None
    solution = least_squares(
        _residual,
        params0,
        args=(f, model_jacobian, xdata, ydata, whitening),
        method=method,
        jac=jac,
        covariance="absolute" if absolute_sigma else True,
        bounds=bounds,
        **{**TOLERANCES, **kwargs},
    )
    r_squared = _r_squared(solution.plain_cost, ydata, whitening)
    solution = dataclasses.replace(solution, r_squared=r_squared)
    popt = ravel_pytree(solution.params)[0]
    pcov = solution.covariance
    if not isinstance(solution.status, jax.core.Tracer):
        if not np.all(np.asarray(solution.success)):
            raise RuntimeError(f"Optimal parameters not found: {solution.message}")
        uncertainty.warn_if_unestimable(solution)
    return (popt, pcov, solution) if full_output else (popt, pcov)


def parameter_names(f: Callable[..., Any], count: int | None) -> list[str]:
    """The names of the ``count`` fitted parameters of ``f(x, *params)``: its positional arguments
    after the first, then ``name[i]`` for its variable argument list (``p[i]`` when the signature
    cannot be read). ``count=None``: as many as it has positional arguments after the first."""
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):  # a builtin or an object without a readable signature
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
    if count is None:
        if len(positional) < 2:
            raise ValueError(
                "the number of parameters cannot be read from f's signature (it needs f(x, a, "
                "b, ...)): give p0"
            )
        count = len(positional) - 1
    names = positional[1 : 1 + count]
    # The others come from *args, where x is args[0] when f has no positional argument.
    offset = 1 if varargs and not positional else 0
    base = varargs or "p"
    return names + [f"{base}[{offset + i}]" for i in range(count - len(names))]


def _named_bounds(bounds, names: list[str]):
    """scipy's ``(lower, upper)`` (scalars or ``n`` numbers each) as bounds of the named
    parameters, or ``None`` when there are none (``(-inf, inf)``)."""
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise ValueError(f"bounds must be a pair (lower, upper), got {bounds!r}")
    sides = []
    for side, name in zip(bounds, ("lower", "upper"), strict=True):
        values = np.asarray(side, dtype=float)
        if values.ndim == 0:
            values = np.full(len(names), float(values))
        if values.shape != (len(names),):
            raise ValueError(
                f"bounds: {name} must be a scalar or {len(names)} numbers (one per parameter "
                f"{names}), got shape {values.shape}"
            )
        sides.append(values)
    lower, upper = sides
    if np.all(lower == -np.inf) and np.all(upper == np.inf):
        return None
    return tuple(collections.OrderedDict(zip(names, side.tolist(), strict=True)) for side in sides)


def _feasible_start(lower, upper, count: int) -> np.ndarray:
    """Without ``p0``: the middle of two finite bounds, one inside a one-sided bound, else 1."""
    lower, upper = np.array(list(lower.values())), np.array(list(upper.values()))
    start = np.ones(count)
    both = np.isfinite(lower) & np.isfinite(upper)
    start[both] = 0.5 * (lower[both] + upper[both])
    only_lower = np.isfinite(lower) & ~np.isfinite(upper)
    start[only_lower] = lower[only_lower] + 1
    only_upper = ~np.isfinite(lower) & np.isfinite(upper)
    start[only_upper] = upper[only_upper] - 1
    return start


def _dtype(p0, ydata) -> np.dtype:
    """``p0``'s floating dtype, else ``ydata``'s, else JAX's default float (as JAX would hold
    them: float64 becomes float32 without 64-bit mode)."""
    for value in (p0, ydata):
        dtype = getattr(value, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return jax.dtypes.canonicalize_dtype(dtype)
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _as_data(xdata, dtype):
    """An array (or list, tuple, number) as an array of ``dtype``, as scipy casts it to float; in
    any other pytree, the floating arrays cast to ``dtype``."""
    if isinstance(xdata, list | tuple | np.ndarray | jax.Array | float | int):
        xdata = jnp.asarray(xdata)
        if jnp.issubdtype(xdata.dtype, jnp.integer) or jnp.issubdtype(xdata.dtype, jnp.floating):
            xdata = xdata.astype(dtype)
        checks.finite("xdata", xdata)
        return xdata

    def cast(leaf):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating):
            leaf = jnp.asarray(leaf, dtype)
            checks.finite("xdata", leaf)
        return leaf

    return jax.tree_util.tree_map(cast, xdata)


class _Whitening(eqx.Module):
    """How the residual is whitened: multiplied by ``1/σ`` (``kind="weights"``, an array of
    ``ydata``'s shape) or solved with the lower Cholesky factor ``L`` of the errors' covariance
    ``Σ = LLᵀ`` (``kind="cholesky"``, ``(M, M)``)."""

    array: Any
    kind: str = eqx.field(static=True)


def _whitening(sigma, ydata) -> _Whitening | None:
    if sigma is None:
        return None
    sigma = jnp.asarray(sigma, ydata.dtype)
    checks.finite("sigma", sigma)
    concrete = not isinstance(sigma, jax.core.Tracer)
    size = ydata.size
    if sigma.shape == ydata.shape:
        if concrete and not np.all(np.asarray(sigma) > 0):
            raise ValueError("sigma holds standard deviations: every entry must be positive")
        return _Whitening(1.0 / sigma, "weights")
    if sigma.shape == (size, size):
        factor = jnp.linalg.cholesky(sigma)
        if concrete and not np.all(np.isfinite(np.asarray(factor))):
            raise ValueError(
                "sigma, an (M, M) covariance matrix, must be symmetric positive definite: its "
                "Cholesky factorisation failed"
            )
        return _Whitening(factor, "cholesky")
    raise ValueError(
        f"sigma must have ydata's shape {tuple(ydata.shape)} (standard deviations) or be "
        f"({size}, {size}) (the covariance of the errors), got shape {tuple(sigma.shape)}"
    )


def _whiten(values, whitening: _Whitening | None):
    """``values`` (the flat residual ``(M,)``, or ``(M, k)`` columns) whitened: ``L⁻¹ values`` or
    ``values/σ``."""
    if whitening is None:
        return values
    if whitening.kind == "cholesky":
        return solve_triangular(whitening.array, values, lower=True)
    weights = whitening.array.reshape(-1)
    return weights.reshape((-1,) + (1,) * (values.ndim - 1)) * values


def _residual(params, f, model_jacobian, x, y, whitening):
    """``L⁻¹(f(x, *params) − y)`` (flat), or ``(f − y)/σ``, or ``f − y``."""
    del model_jacobian  # used by _whitened_jacobian only
    prediction = jnp.asarray(f(x, *params.values()))
    try:
        prediction = jnp.broadcast_to(prediction, y.shape)
    except ValueError as error:
        raise ValueError(
            f"f(xdata, *params) returns shape {prediction.shape}, which does not broadcast to "
            f"ydata's shape {y.shape}"
        ) from error
    return _whiten((prediction.astype(y.dtype) - y).reshape(-1), whitening)


def _whitened_jacobian(params, f, model_jacobian, x, y, whitening):
    """The Jacobian of ``_residual`` from the user's ``jac(x, *params)`` (the ``(M, n)`` Jacobian
    of ``f``)."""
    del f
    values = list(params.values())
    jacobian = jnp.asarray(model_jacobian(x, *values), y.dtype).reshape(y.size, len(values))
    return _whiten(jacobian, whitening)


def _flat_start(p0, dtype):
    """``p0`` as a flat array: in NumPy when its values are known (JAX would compile a small
    program for each operation on a list's first call), traced otherwise (``vmap`` over ``p0``)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(p0)):
        return jnp.asarray(p0, dtype).reshape(-1)
    return np.asarray(p0, dtype).reshape(-1)


@jax.jit  # one small program, where its operations one by one compiled one each (0.3 s at first)
def _r_squared(cost, y, whitening):
    """``1 − χ²/χ²₀`` with ``χ²₀`` the χ² of the best constant model (module docstring)."""
    target = _whiten(y.reshape(-1), whitening)
    ones = _whiten(jnp.ones(y.size, y.dtype), whitening)
    level = (ones @ target) / (ones @ ones)
    spread = jnp.sum((target - level * ones) ** 2)
    return jnp.where(spread > 0, 1.0 - 2.0 * cost / jnp.where(spread > 0, spread, 1.0), jnp.nan)
