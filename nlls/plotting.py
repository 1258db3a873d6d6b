"""Pictures of a fit: the data with the fitted model, its confidence band, and the residuals.

``plot_fit`` draws one output against one input: the data (with error bars when ``sigma`` is
given), the model on a fine grid across the data, and, when the solve carries the covariance ``C``
of its parameters θ (``curve_fit``, ``least_squares(..., covariance=True)``), the pointwise
confidence band of the model by the delta method:

    f(x; θ̂) ± z · √(∇θf(x)ᵀ C ∇θf(x)),      z = Φ⁻¹(½ + confidence/2)

(``z ≈ 1.96`` for 95%), the first-order propagation of the parameters' uncertainty to the curve. For
a model linear in its parameters, f = a + b·x, this is exactly ``√(C_aa + 2x C_ab + x² C_bb)``.
A second panel shows the residuals ``y − f(x)`` (divided by ``sigma`` when given).

matplotlib is imported only when a picture is drawn (``pip install matplotlib``).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .result import Solution


def prediction_band(
    predict: Callable[[Any], jax.Array], params, covariance, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's values ``predict(params)`` (one per point) and the half-width
    ``z·√(∇θfᵀ C ∇θf)`` of their confidence band at each point, with ``C`` the flat ``(n, n)``
    covariance in ``ravel_pytree(params)`` order; ``None`` for the width when there is no
    covariance or it is not finite (``inf``: the parameters are not determined).

    Example (a straight line, whose band is ``z·√(C_aa + 2x C_ab + x² C_bb)``):
        >>> import jax.numpy as jnp, numpy as np
        >>> from nlls.plotting import prediction_band
        >>> x = jnp.array([0.0, 1.0, 2.0])
        >>> C = jnp.array([[0.04, 0.01], [0.01, 0.09]])
        >>> value, width = prediction_band(lambda p: p[0] + p[1] * x, jnp.array([1.0, 2.0]), C)
        >>> np.allclose(width, 1.959964 * np.sqrt(0.04 + 2 * x * 0.01 + x**2 * 0.09))
        True
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    flat, unravel = ravel_pytree(params)
    value = np.asarray(predict(params)).reshape(-1)
    if covariance is None or not np.all(np.isfinite(np.asarray(covariance))):
        return value, None
    gradient = jax.jacfwd(lambda f: jnp.reshape(predict(unravel(f)), (-1,)))(flat)  # (points, n)
    variance = jnp.einsum("pi,ij,pj->p", gradient, jnp.asarray(covariance, flat.dtype), gradient)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return value, z * np.sqrt(np.maximum(np.asarray(variance), 0.0))


def plot_fit(
    fitted,
    x,
    y,
    *,
    f: Callable[..., Any] | None = None,
    sigma=None,
    confidence: float = 0.95,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    points: int = 200,
):
    """Draw the data, the fitted model with its confidence band, and the residuals.

    Args:
        fitted: what the fit returned: a ``FitResult`` of ``nlls.fit`` (its model is applied to
            each sample), or a ``Solution`` with ``f``: for ``curve_fit``'s (parameters named
            after ``f``'s arguments) the model is ``f(x, *params.values())``, for others
            ``f(x, params)``. The band is drawn when the solution carries a finite covariance
            (``curve_fit``; ``least_squares`` or ``fit`` with ``covariance=True``).
        x, y: the data, one input and one output per point (shape ``(N,)`` or ``(N, 1)``).
        f: the model function for a ``Solution`` (see above).
        sigma: the standard deviations of ``y``: error bars, and residuals divided by them.
        confidence: the band's coverage (0.95: ±1.96 standard errors of the curve).
        path: write the figure there (PNG, PDF, … by the suffix).
        title: the figure's title; by default the method, status and RMSE of the fit.
        xlabel, ylabel: the axes' labels.
        points: the number of points of the model's curve, evenly spread across the data.

    Returns:
        The matplotlib ``Figure`` (two panels: data and model; residuals).

    Raises:
        ValueError: ``x`` or ``y`` is not one value per point, a ``Solution`` comes without
            ``f``, or ``confidence`` is not in (0, 1).
        ImportError: matplotlib is not installed.

    Examples:
        >>> import jax, jax.numpy as jnp, nlls
        >>> decay = lambda x, amplitude, rate: amplitude * jnp.exp(-rate * x)
        >>> x = jnp.linspace(0.0, 3.0, 25)
        >>> y = decay(x, 2.0, 1.2) + 0.02 * jax.random.normal(jax.random.key(0), (25,))
        >>> popt, pcov, sol = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0], full_output=True)
        >>> figure = nlls.plot_fit(sol, x, y, f=decay, sigma=0.02)
        >>> [axes.get_ylabel() for axes in figure.axes]
        ['y', 'residual / σ']
    """
    plt = _pyplot()
    solution, predict, params = _model_of(fitted, f)
    x_column = np.asarray(x)
    x_line, y_line = _one_per_point("x", x_column), _one_per_point("y", np.asarray(y))
    if x_line.shape[0] != y_line.shape[0]:
        raise ValueError(f"x has {x_line.shape[0]} points but y has {y_line.shape[0]}")
    order = np.argsort(x_line)
    grid_line = np.linspace(x_line.min(), x_line.max(), points)
    grid = grid_line.reshape((points, *x_column.shape[1:])).astype(x_column.dtype)
    curve, width = prediction_band(
        lambda p: predict(p, jnp.asarray(grid)), params, solution.covariance, confidence
    )
    at_data = np.asarray(predict(params, jnp.asarray(x_column))).reshape(-1)
    residual = y_line - at_data
    scaled = sigma is not None
    if scaled:
        sigma_line = np.broadcast_to(np.asarray(sigma, float).reshape(-1), y_line.shape)
        residual = residual / sigma_line

    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(7, 5.5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        layout="constrained",
    )
    data_colour, model_colour = "0.2", "tab:blue"
    if scaled:
        top.errorbar(x_line, y_line, yerr=sigma_line, fmt="o", ms=3.5, color=data_colour,
                     elinewidth=0.8, label="data")  # fmt: skip
    else:
        top.plot(x_line, y_line, "o", ms=3.5, color=data_colour, label="data")
    top.plot(grid_line, curve, color=model_colour, linewidth=1.8, label="fit")
    if width is not None:
        top.fill_between(grid_line, curve - width, curve + width, color=model_colour, alpha=0.25,
                         linewidth=0, label=f"{confidence:.0%} confidence band")  # fmt: skip
    top.set_ylabel(ylabel)
    top.grid(True, alpha=0.3)
    top.legend()
    bottom.axhline(0.0, color=model_colour, linewidth=1.0)
    bottom.plot(x_line[order], residual[order], "o", ms=3.5, color=data_colour)
    bottom.set_ylabel("residual / σ" if scaled else "residual")
    bottom.set_xlabel(xlabel)
    bottom.grid(True, alpha=0.3)
    if title is None:
        status = solution.status
        named = status.name if hasattr(status, "name") else "?"
        title = (
            f"{solution.stats.method or 'fit'}: {named}, {len(y_line)} points, "
            f"RMSE {float(np.sqrt(np.mean((y_line - at_data) ** 2))):.3g}"
        )
    top.set_title(title)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _pyplot():
    try:
        import matplotlib

        if "matplotlib.pyplot" not in __import__("sys").modules:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plot_fit needs matplotlib: pip install matplotlib") from error
    return plt


def _one_per_point(name: str, values: np.ndarray) -> np.ndarray:
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return values.reshape(-1)
    raise ValueError(
        f"plot_fit draws one output against one input: {name} has shape {values.shape}; pass one "
        f"column ({name}[:, i]) of shape (N,) or (N, 1)"
    )


def _model_of(fitted, f):
    """The solution, ``predict(params, x)`` giving the model's value at each point of ``x``, and
    the parameters the covariance refers to."""
    solution = getattr(fitted, "solution", None)
    if solution is not None and hasattr(fitted, "model"):  # a FitResult
        model = fitted.model
        if isinstance(model, tuple):  # (fn, params): the parameters as the solution has them
            fn = model[0]
            return solution, lambda p, x: jax.vmap(lambda xi: fn(p, xi))(x), solution.params
        # A module: the solution's parameters are its trainable partition (None elsewhere).
        params = solution.params
        frozen = jax.tree_util.tree_map(
            lambda held, leaf: leaf if held is None else None,
            params,
            model,
            is_leaf=lambda leaf: leaf is None,
        )
        return (
            solution,
            lambda p, x: jax.vmap(eqx.combine(p, frozen))(x),
            params,
        )
    if isinstance(fitted, Solution):
        if f is None:
            raise ValueError(
                "plot_fit needs the model function for a Solution: plot_fit(sol, x, y, f=f) with "
                "f(x, *params) as curve_fit's, or f(x, params)"
            )
        params = fitted.params
        if isinstance(params, Mapping):
            return fitted, lambda p, x: f(x, *p.values()), params
        return fitted, lambda p, x: f(x, p), params
    raise TypeError(
        f"plot_fit takes a FitResult (nlls.fit) or a Solution with f=, got {type(fitted).__name__}"
    )
