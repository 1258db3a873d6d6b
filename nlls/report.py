"""``fit_report``: the statistics of a fit and its parameters with their errors, as text.

The statistics, for m residuals, n parameters and χ² = ‖r‖² = 2·cost at the solution (the residuals
whitened by the errors of the data, so that χ² is a chi-square):

* reduced chi-square ``χ²/(m − n)``;
* Akaike's information criterion ``AIC = m·ln(χ²/m) + 2n`` and Schwarz's Bayesian one
  ``BIC = m·ln(χ²/m) + n·ln(m)``: −2 log-likelihood of Gaussian errors with the variance fitted, up
  to a constant, plus the penalty for the parameters; lower is better between models of the same
  data;
* ``R² = 1 − χ²/χ²₀`` against the best constant model (``nlls.curve_fitting``).

With a robust loss (``nlls.losses``) the report names it and gives the robust cost that was minimised,
``½ Σ C²ρ((rᵢ/C)²)``; χ² and the statistics above stay those of the residuals themselves,
``χ² = ‖r‖² = 2·plain_cost`` (outliers included), and the standard errors are those of the solve's
covariance (scipy's ``curve_fit``'s: the corrected Jacobian and the robust cost).
"""

from __future__ import annotations

import jax
import numpy as np

from . import uncertainty
from .result import Solution


def fit_report(solution: Solution, *, ydata=None, min_correlation: float = 0.1) -> str:
    """A report of a fit in the manner of lmfit's: method, evaluations, data points, variables,
    chi-square, reduced chi-square, AIC, BIC, R²; each parameter by name with its value, standard
    error and relative error; the correlations above ``min_correlation`` in magnitude, largest
    first; warnings when the fit did not converge or the errors cannot be estimated; parameters
    at a bound (``Solution.active_bounds``) marked.

    Args:
        solution: one ``Solution`` (index a batch first) from ``curve_fit`` or from
            ``least_squares(..., covariance=True)`` (without the covariance, the report has no
            errors). Parameters are named by their path in the pytree (``a``, ``layer.weight``,
            ``w[2]``); ``curve_fit`` names them after ``f``'s arguments.
        ydata: the data, for R² of a solution that does not carry it (``curve_fit``'s does):
            ``R² = 1 − ‖r‖²/Σ(y − ȳ)²``, for a residual ``f − y``.
        min_correlation: the smallest ``|correlation|`` listed.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> def decay(x, a, k):
        ...     return a * jnp.exp(-k * x)
        >>> x = jnp.linspace(0.0, 2.0, 30)
        >>> y = decay(x, 3.0, 1.2) + 0.01 * jnp.sin(25.0 * x)
        >>> _, _, sol = nlls.curve_fit(decay, x, y, p0=[1.0, 1.0], full_output=True)
        >>> print(nlls.fit_report(sol))  # doctest: +ELLIPSIS
        [[Fit Statistics]]
            # fitting method   = LevenbergMarquardt
            # function evals   = ...
            # data points      = 30
            # variables        = 2
            chi-square         = 0.00144332...
            reduced chi-square = 5.15473...e-05
            Akaike info crit   = -294.260...
            Bayesian info crit = -291.457...
            R-squared          = 0.99992...
        [[Variables]]
            a:  3.00151... +/- 0.00393093... (0.13%)
            k:  1.20084... +/- 0.00248168... (0.21%)
        [[Correlations]] (unreported correlations are < 0.100)
            C(a, k) = +0.6980
    """
    if np.ndim(solution.cost) != 0:
        raise ValueError(
            "fit_report reports one solution: index a batch first, e.g. "
            "jax.tree_util.tree_map(lambda leaf: leaf[i], solutions)"
        )
    values = np.concatenate(
        [np.ravel(np.asarray(leaf)) for leaf in _leaves(solution.params)]
    ).astype(float)
    names = uncertainty.labels(solution.params)
    n = values.size
    m = sum(int(np.size(leaf)) for leaf in _leaves(solution.residual))
    plain_cost = solution.cost if solution.plain_cost is None else solution.plain_cost
    chi_square = 2.0 * float(plain_cost)
    with np.errstate(divide="ignore", invalid="ignore"):
        reduced = chi_square / (m - n) if m > n else np.nan
        log_likelihood_term = m * np.log(chi_square / m)
    aic = log_likelihood_term + 2 * n
    bic = log_likelihood_term + np.log(m) * n
    r_squared = _r_squared(solution, ydata, chi_square)

    lines = ["[[Fit Statistics]]"]
    rows = [
        ("# fitting method", solution.stats.method or "?"),
        ("# function evals", int(solution.stats.nfev)),
        ("# data points", m),
        ("# variables", n),
    ]
    if solution.stats.loss != "linear":
        rows += [("# loss", solution.stats.loss), ("robust cost", _number(solution.cost))]
    rows += [
        ("chi-square", _number(chi_square)),
        ("reduced chi-square", _number(reduced)),
        ("Akaike info crit", _number(aic)),
        ("Bayesian info crit", _number(bic)),
    ]
    if r_squared is not None:
        rows.append(("R-squared", _number(r_squared)))
    lines += [f"    {label:<18} = {value}" for label, value in rows]
    if not bool(solution.success):
        lines.append(f"    ## Warning: the fit did not converge: {solution.message}")

    lines.append("[[Variables]]")
    errors, correlation, warning = _errors(solution)
    if warning:
        lines.append(f"    ## Warning: {warning}")
    at_bound = np.zeros(n, int)
    if solution.active_bounds is not None:
        at_bound = np.concatenate(
            [np.ravel(np.asarray(leaf)) for leaf in _leaves(solution.active_bounds)]
        )
    if np.any(at_bound):
        lines.append(
            "    ## Warning: parameters at a bound: their errors assume the bound is not there"
        )
    width = max(len(name) for name in names) + 1
    for index, (name, value) in enumerate(zip(names, values, strict=True)):
        text = f"    {name + ':':<{width}}  {_number(value)}"
        if errors is not None and np.isfinite(errors[index]):
            text += f" +/- {_number(errors[index])}"
            if value != 0:
                text += f" ({100 * abs(errors[index] / value):.2f}%)"
        if at_bound[index]:
            text += " (at lower bound)" if at_bound[index] < 0 else " (at upper bound)"
        lines.append(text)

    if correlation is not None:
        pairs = [
            (correlation[i, j], names[i], names[j])
            for i in range(n)
            for j in range(i + 1, n)
            if abs(correlation[i, j]) > min_correlation
        ]
        if pairs:
            lines.append(f"[[Correlations]] (unreported correlations are < {min_correlation:.3f})")
            pairs.sort(key=lambda pair: -abs(pair[0]))
            labels = [f"C({a}, {b})" for _, a, b in pairs]
            label_width = max(len(label) for label in labels)
            lines += [
                f"    {label:<{label_width}} = {value:+.4f}"
                for label, (value, _, _) in zip(labels, pairs, strict=True)
            ]
    return "\n".join(lines)


def _leaves(tree) -> list:
    return jax.tree_util.tree_leaves(tree)


def _number(value) -> str:
    """Eight significant digits, as lmfit shows them."""
    return f"{float(value):.8g}"


def _r_squared(solution: Solution, ydata, chi_square: float) -> float | None:
    if solution.r_squared is not None:
        return float(solution.r_squared)
    if ydata is None:
        return None
    y = np.ravel(np.asarray(ydata, dtype=float))
    spread = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - chi_square / spread if spread > 0 else np.nan


def _errors(solution: Solution):
    """``(standard errors, correlation matrix, warning)``, flat; ``None`` for what is missing."""
    if solution.covariance is None:
        return (
            None,
            None,
            "uncertainties were not computed: solve with least_squares(..., covariance=True)",
        )
    matrix = np.asarray(solution.covariance, dtype=float)
    reason = uncertainty.unestimable_reason(solution)
    if reason is not None:
        return None, None, f"uncertainties could not be estimated: {reason}"
    errors = np.sqrt(np.diag(matrix))
    correlation = np.asarray(uncertainty.correlation_matrix(matrix))
    return errors, correlation, None
