"""The covariance of the fitted parameters, their standard errors and correlations.

Near the minimum θ̂ of ``½‖r(θ)‖²`` the residual is linear in the parameters, ``r(θ) ≈ r̂ + J(θ − θ̂)``.
If the residuals are independent errors of variance σ², the least-squares estimate has the covariance

    Cov(θ̂) = σ² (JᵀJ)⁻¹,

with ``J`` the Jacobian at the solution. ``σ²`` is estimated from the fit itself,
``s² = ‖r̂‖²/(m − n) = 2·cost/(m − n)`` (m residuals, n parameters), unless the residuals are already
divided by their true standard deviations (``absolute_sigma``, as scipy's ``curve_fit`` calls it;
``least_squares(..., covariance="absolute")``): then σ² = 1.

(JᵀJ)⁻¹ is computed from the singular value decomposition of the column-scaled Jacobian, never from
JᵀJ itself (which would square its condition number): with ``Jₛ = J D⁻¹``, ``D`` the column norms
rounded down to powers of two (exact, as the solvers' Marquardt scale), and ``Jₛ = U S Vᵀ``,

    (JᵀJ)⁺ = D⁻¹ V S⁻² Vᵀ D⁻¹,

keeping the singular values above ``max(m, n) · eps · s_max`` (the rank cut-off of ``lstsq``; on the
scaled matrix, so that the units of the parameters do not decide the rank). When one is dropped (J is
rank-deficient: some combination of parameters does not change the residual), or when ``m ≤ n`` and σ²
is estimated (no degrees of freedom are left), the covariance cannot be estimated and every entry is
``inf``, as scipy's ``curve_fit`` with ``method="lm"`` does; the accessors below then warn
(``CovarianceWarning``).

A ``Solution`` holds the covariance as one ``(n, n)`` matrix in the order of ``ravel_pytree(params)``
(``Solution.covariance``, set by ``least_squares(..., covariance=True)`` and by ``curve_fit``).
``covariance``, ``standard_errors`` and ``correlation`` lay it out like the parameters.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .jacobian import choose_mode
from .problem import FlatProblem
from .solvers.base import initial_scale

#: ``least_squares(covariance=...)``: σ² estimated from the fit, or taken as 1
KINDS = ("scaled", "absolute")


class CovarianceWarning(UserWarning):
    """The covariance of the parameters could not be estimated (it is ``inf``)."""


def covariance_matrix(
    jac: Float[Array, "m n"], cost: Float[Array, ""], absolute: bool
) -> Float[Array, "n n"]:
    """``s² (JᵀJ)⁺`` by the SVD of the column-scaled ``J`` (module docstring), with
    ``s² = 2·cost/(m − n)``, or ``(JᵀJ)⁺`` when ``absolute``; ``inf`` everywhere when ``J`` is
    rank-deficient or not finite, or ``m ≤ n`` and not ``absolute``."""
    m, n = jac.shape
    scale = initial_scale(jac, scaling=True)  # powers of two: J / scale is exact
    _, singular, vt = jnp.linalg.svd(jac / scale, full_matrices=False)
    cutoff = max(m, n) * jnp.finfo(jac.dtype).eps * singular[0]
    kept = singular > cutoff
    inverse_square = jnp.where(kept, 1.0 / jnp.where(kept, singular, 1.0) ** 2, 0.0)
    basis = vt.T / scale[:, None]  # D⁻¹V, (n, min(m, n))
    unscaled = (basis * inverse_square) @ basis.T
    unscaled = 0.5 * (unscaled + unscaled.T)  # symmetric to the bit (a product's halves may differ)
    if absolute:
        variance = jnp.ones((), jac.dtype)
    elif m > n:
        variance = 2.0 * cost / (m - n)
    else:
        variance = jnp.full((), jnp.inf, jac.dtype)
    estimable = (jnp.sum(kept) == n) & jnp.all(jnp.isfinite(unscaled)) & jnp.isfinite(variance)
    return jnp.where(estimable, variance * unscaled, jnp.inf)


def dense_jacobian(problem: FlatProblem, params: Float[Array, " n"]) -> Float[Array, "m n"]:
    """The Jacobian at ``params`` as a matrix, for a method or path that keeps none (matrix-free
    steps, first-order methods): the user's function, or forward mode when ``n ≤ m``, reverse
    mode otherwise, in the problem's blocks."""
    if problem.user_jac is not None:
        mode = "user"
    else:
        mode = choose_mode("auto", jax.eval_shape(problem, params).shape[0], params.size)
    dense = FlatProblem(
        problem.residual_fn,
        problem.args,
        problem.unravel_params,
        mode,
        problem.user_jac,
        chunk=problem.chunk,
    )
    return dense.jacobian(params)


def covariance(solution, *, flat: bool = False):
    """The covariance of the fitted parameters of ``solution``.

    Laid out as ``jax.hessian`` lays out a Hessian: a tree like ``params`` whose leaves are trees
    like ``params``, the block ``cov[a][b]`` of shape ``a.shape + b.shape`` (for a dict of scalars,
    ``cov["a"]["k"]`` is a scalar; for one 1-D array of parameters, it is the ``(n, n)`` matrix).
    ``flat=True`` gives the ``(n, n)`` matrix in the order of ``ravel_pytree(params)``
    (``solution.covariance``). A batch of solutions (``vmap``) gives a batch of each.

    Every entry is ``inf`` when the covariance could not be estimated (a rank-deficient Jacobian,
    or no more residuals than parameters): ``CovarianceWarning`` then says so.

    Raises:
        ValueError: the solve did not compute the covariance (``least_squares(...,
            covariance=True)`` and ``curve_fit`` do).

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> y = 2.0 * jnp.exp(-1.5 * x) + 0.01 * jnp.cos(40.0 * x)
        >>> sol = nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                          {"a": 1.0, "k": 1.0}, args=(x, y), covariance=True)
        >>> cov = nlls.covariance(sol)
        >>> bool(cov["a"]["k"] == cov["k"]["a"]), nlls.covariance(sol, flat=True).shape
        (True, (2, 2))
    """
    matrix = _checked(solution)
    if flat:
        return matrix
    return _as_tree(matrix, solution.params)


def standard_errors(solution):
    """The standard errors of the fitted parameters, ``√diag(cov)``, as a pytree like ``params``
    (``inf`` where the covariance could not be estimated; see ``covariance``).

    Examples:
        A straight line through 25 points with errors of about 0.007:

        >>> import jax.numpy as jnp, nlls
        >>> t = jnp.linspace(0.0, 2.0, 25)
        >>> line = nlls.least_squares(
        ...     lambda p, t, v: p["c"] + p["s"] * t - v,
        ...     {"c": 0.0, "s": 1.0},
        ...     args=(t, 0.5 + 2.0 * t + 0.01 * jnp.sin(30.0 * t)),
        ...     covariance=True,
        ... )
        >>> errors = nlls.standard_errors(line)
        >>> bool(0 < errors["c"] < 0.01), bool(0 < errors["s"] < 0.01)
        (True, True)
    """
    matrix = _checked(solution)
    diagonal = jnp.sqrt(jnp.diagonal(matrix, axis1=-2, axis2=-1))
    return _as_params(diagonal, solution.params)


def correlation(solution, *, flat: bool = False):
    """The correlation matrix ``cov[i, j] / √(cov[i, i] cov[j, j])`` of the fitted parameters, laid
    out as ``covariance`` lays out the covariance; ``NaN`` where the covariance could not be
    estimated.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> y = 2.0 * jnp.exp(-1.5 * x) + 0.01 * jnp.cos(40.0 * x)
        >>> sol = nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                          {"a": 1.0, "k": 1.0}, args=(x, y), covariance=True)
        >>> corr = nlls.correlation(sol)
        >>> round(float(corr["a"]["a"]), 12), bool(0 < corr["a"]["k"] < 1)
        (1.0, True)
    """
    matrix = correlation_matrix(_checked(solution))
    if flat:
        return matrix
    return _as_tree(matrix, solution.params)


def correlation_matrix(matrix: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """``C[i, j] = cov[i, j] / √(cov[i, i] cov[j, j])`` (``NaN`` for an ``inf`` covariance)."""
    deviation = jnp.sqrt(jnp.diagonal(matrix, axis1=-2, axis2=-1))
    corr = matrix / (deviation[..., :, None] * deviation[..., None, :])
    return jnp.where(jnp.isfinite(corr), corr, jnp.nan)


def unestimable_reason(solution) -> str | None:
    """Why the covariance of a (single, concrete) solution is ``inf``, or ``None`` when it is
    finite."""
    matrix = np.asarray(solution.covariance)
    if np.all(np.isfinite(matrix)):
        return None
    n = matrix.shape[-1]
    m = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(solution.residual))
    if m <= n:
        return f"{m} residuals for {n} parameters leave no degrees of freedom (m ≤ n)"
    if not np.all(np.isfinite(np.asarray(solution.grad))):
        return "the residual or its Jacobian is not finite at the solution"
    return (
        "the Jacobian at the solution is rank-deficient (singular): some combination of the "
        "parameters does not change the residual"
    )


def warn_if_unestimable(solution, stacklevel: int = 3) -> None:
    """``CovarianceWarning`` when a concrete solution's covariance is ``inf`` (for any of a
    batch)."""
    matrix = solution.covariance
    if isinstance(matrix, jax.core.Tracer):
        return
    matrix = np.asarray(matrix)
    if np.all(np.isfinite(matrix)):
        return
    if matrix.ndim == 2:
        reason = unestimable_reason(solution)
    else:
        bad = int(np.sum(~np.all(np.isfinite(matrix), axis=(-2, -1))))
        count = int(np.prod(matrix.shape[:-2]))
        reason = f"for {bad} of the {count} solutions in the batch"
    warnings.warn(
        f"the covariance of the parameters could not be estimated: {reason}; it is set to inf",
        CovarianceWarning,
        stacklevel=stacklevel,
    )


def _checked(solution):
    if solution.covariance is None:
        raise ValueError(
            "this Solution has no covariance: solve with nlls.least_squares(..., "
            "covariance=True) (or covariance='absolute'), or fit with nlls.curve_fit"
        )
    warn_if_unestimable(solution, stacklevel=4)
    return solution.covariance


def _leaf_shapes(batch: tuple, params) -> tuple[list[tuple[int, ...]], object]:
    """The shapes of the parameter leaves without the leading ``batch`` axes, and the tree."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [tuple(np.shape(leaf))[len(batch) :] for leaf in leaves]
    return shapes, treedef


def _as_params(vector: Float[Array, "*batch n"], params):
    """A flat vector (in ``ravel_pytree`` order) as a tree like ``params``."""
    batch = tuple(vector.shape[:-1])
    shapes, treedef = _leaf_shapes(batch, params)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    parts = [
        vector[..., start:stop].reshape(batch + shape)
        for start, stop, shape in zip(offsets[:-1], offsets[1:], shapes, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, parts)


def _as_tree(matrix: Float[Array, "*batch n n"], params):
    """An ``(n, n)`` matrix in ``ravel_pytree`` order as a tree of trees like ``params``
    (``jax.hessian``'s layout)."""
    batch = tuple(matrix.shape[:-2])
    shapes, treedef = _leaf_shapes(batch, params)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    spans = list(zip(offsets[:-1], offsets[1:], shapes, strict=True))

    def block(row, column):
        (r0, r1, row_shape), (c0, c1, column_shape) = row, column
        return matrix[..., r0:r1, c0:c1].reshape(batch + row_shape + column_shape)

    rows = [
        jax.tree_util.tree_unflatten(treedef, [block(row, column) for column in spans])
        for row in spans
    ]
    return jax.tree_util.tree_unflatten(treedef, rows)


def labels(params) -> list[str]:
    """A label for every parameter in the order of ``ravel_pytree(params)``: the leaf's path
    (``a``, ``layer.weight``, ``w[1]``), with the element's index for an array leaf (``w[0, 2]``);
    a lone array is ``p`` (``p[0]``, ``p[1]``, …), a list or tuple ``p[0]``, ``p[1]``, …"""
    names = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = _path_name(path)
        name = "p" + name if name[:1] in ("", "[") else name
        shape = np.shape(leaf)
        if shape == ():
            names.append(name)
            continue
        for index in np.ndindex(*shape):
            names.append(f"{name}[{', '.join(str(i) for i in index)}]")
    return names


def _path_name(path) -> str:
    name = ""
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            name += f".{key.key}" if name else str(key.key)
        elif isinstance(key, jax.tree_util.GetAttrKey):
            name += f".{key.name}" if name else key.name
        elif isinstance(key, jax.tree_util.SequenceKey):
            name += f"[{key.idx}]"
        else:
            name += str(key)
    return name
