"""Derivatives of a solve's results with respect to its arguments, by the implicit function theorem.

A solve returns ``θ*(a)``, a minimiser of the cost ``C(θ, a) = ½‖r(θ, a)‖²`` for the arguments ``a``
(the array leaves of ``args``: data, weights, hyperparameters, a network's frozen parts). The loop
that finds it is not differentiated (reverse mode cannot go through ``lax.while_loop``, and forward
mode through it would differentiate the iterates, not the answer). The answer is characterised
instead by the optimality condition

    F(θ, a) = ∇_θ C(θ, a) = J(θ, a)ᵀ r(θ, a) = 0

at ``θ = θ*(a)``. Differentiating ``F(θ*(a), a) = 0`` along a tangent ``ȧ`` of the arguments gives
the tangent system

    H θ̇ = −b,    H = ∂F/∂θ = ∇²_θ C = JᵀJ + Σᵢ rᵢ ∇²rᵢ,    b = (∂F/∂a) ȧ,

with ``H`` the full Hessian of the cost (its second term vanishes only for a zero residual, so it is
kept: the derivative of a fit to noisy data needs it), computed by forward-over-reverse
differentiation of the residual: the derivative needs reverse mode of the residual even when the
solve used forward mode. ``b`` is one forward-over-reverse product too. The derivatives of the other
results follow by the chain rule: ``ṙ = J θ̇ + (∂r/∂a) ȧ``, ``Ċ = rᵀṙ``, the gradient's
``(∂F/∂θ) θ̇ + b`` (zero up to rounding when the system is solved exactly), and the covariance's
``d(s²(JᵀJ)⁻¹) = ṡ²(JᵀJ)⁻¹ − s²(JᵀJ)⁻¹(J̇ᵀJ + JᵀJ̇)(JᵀJ)⁻¹`` with ``J̇`` the derivative of the
Jacobian along ``(θ̇, ȧ)``. Only the arguments carry derivatives: ``params0`` only picks which
minimum is found, and its derivative is zero, as is that of the tolerances and of a method's options.

The tangent system is solved on the linear path the solve used (``Stats.linear``):

* ``"normal"``: ``H`` formed by ``n`` Hessian–vector products, scaled by powers of two near its
  diagonal, ``Hₛ = D⁻¹HD⁻¹``, and inverted by Cholesky; when that is numerically singular
  (``(min Lᵢᵢ / max Lᵢᵢ)² ≤ n·eps``: the minimum is not locally unique, e.g. a rank-deficient ``J``)
  the pseudo-inverse of ``Hₛ`` from its eigendecomposition, eigenvalues below ``n·eps·max|λ|``
  dropped: the derivative is then the minimum-norm solution of the tangent system in the scaled
  parameters.
* ``"min_norm"``: with ``m ≥ n`` (the path named explicitly for a tall ``J``) as ``"normal"``. With
  ``m < n`` a solve with fewer residuals than parameters ends on a manifold of
  minimisers, and ``θ̇`` is not unique. Where ``J`` has full row rank every minimiser interpolates,
  ``r = 0``, so the second-order terms vanish and the tangent system is ``J θ̇ = −(∂r/∂a) ȧ``; the
  derivative reported is its minimum-norm solution, ``θ̇ = −Jᵀ(JJᵀ)⁻¹(∂r/∂a) ȧ`` (the m×m system;
  the pseudo-inverse as above when ``JJᵀ`` is singular). For a linear residual ``Aθ − y`` started
  anywhere this is the exact derivative of the solve, ``A⁺ = Aᵀ(AAᵀ)⁻¹``, since the iterates move
  only in the row space of ``A``. Where ``r ≠ 0`` (a solve stopped early) it is the Gauss–Newton
  linearisation, which leaves out the ``Σᵢ rᵢ∇²rᵢ`` term.
* ``"krylov"`` (and ``"none"``, the first-order methods): matrix-free. Conjugate gradients
  (``krylov.conjugate_gradient``) on ``D⁻¹HD⁻¹`` with one Hessian–vector product per iteration
  (``D`` the Jacobi scale when the path uses one), to a relative residual ``eps^(2/3)`` or the
  path's ``max_steps`` products, inside ``lax.custom_linear_solve`` so that reverse mode transposes
  the solve instead of differentiating the loop. No matrix is formed.

The JVP rule calls the solve again (the same ``custom_jvp``) for its primal value, so
differentiating the rule once more (``jax.hessian``, ``jax.jacfwd(jax.grad(...))``) treats the
inner solve by the same theorem: second derivatives come out right, at the cost of third
derivatives of the residual.

Edges: at a solve that did not converge (``Solution.success`` false) the derivative is that of the
linearisation at the final point, the same formulas; it is the derivative of the solution only where
``F = 0``. A Hessian or Jacobian that is not finite at the solution raises an error (through
``equinox.error_if``, also under ``jit``) instead of returning NaN derivatives (matrix-free, the
Hessian is probed by one product with the vector of ones). Runs with callbacks,
a time limit or a checkpoint (``nlls.driver``) cannot be differentiated, nor minibatch runs (their
answer depends on the random batches, not on a condition ``F = 0``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve
from jaxtyping import Array, Float

from .driver import run_plan
from .jacobian import map_basis
from .krylov import conjugate_gradient
from .linear import Krylov
from .problem import FlatProblem
from .solvers.base import norm_scale
from .uncertainty import covariance_matrix, dense_jacobian


def traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a tracer (inside ``jit``, ``vmap`` or a derivative)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def solve(plan, run, params0, inputs):
    """``driver.run_plan(plan, params0, inputs, run)``, with derivatives with respect to the
    arguments (``inputs.args``) by the implicit function theorem (module docstring)."""
    return run_plan(plan, params0, inputs, run)


@solve.defjvp
def _solve_jvp(plan, run, primals, tangents):
    params0, inputs = primals
    if plan.checked["samples"] is not None:
        raise ValueError(
            "a minibatch run cannot be differentiated: its answer depends on the random batches; "
            "fit without batch_size to differentiate through the solve"
        )
    solution = solve(plan, run, params0, inputs)
    arg_tangents = [
        tangent if is_differentiable(arg) else None
        for arg, tangent in zip(inputs.args, tangents[1].args, strict=True)
    ]
    changes = plan.tangent(solution, params0, inputs, arg_tangents)
    return solution, _solution_tangent(solution, *changes)


def is_differentiable(leaf) -> bool:
    return eqx.is_inexact_array(leaf)


def _solution_tangent(solution, params, cost, residual, grad, covariance):
    """A tangent of ``solution``: the given ones, and ``float0`` zeros for its integer and boolean
    leaves (status, counters)."""

    def zero(leaf):
        if eqx.is_inexact_array(leaf):
            return jnp.zeros_like(leaf)
        return np.zeros(np.shape(leaf), jax.dtypes.float0)

    zeros = jax.tree_util.tree_map(zero, solution)
    return dataclasses.replace(
        zeros, params=params, cost=cost, residual=residual, grad=grad, covariance=covariance
    )


def tangents(
    problem_at: Callable[[list], FlatProblem],
    args: list,
    arg_tangents: list,
    params: Float[Array, " n"],
    residual: Float[Array, " m"],
    path,
    covariance: str | None,
    free: Float[Array, " n"] | None = None,
):
    """``(θ̇, Ċ, ṙ, Ḟ, Σ̇)`` at the solution ``params`` (flat, with its flat ``residual``) along the
    tangents of the differentiable ``args`` (``None`` elsewhere in both lists); ``problem_at(args)``
    is the problem with those arguments, ``path`` the solve's linear path, ``covariance`` the kind
    the solution carries (``Σ̇ = None`` for none). ``free``: 1 for a parameter free to move, 0 for
    one held by an active bound (``θ̇ = 0`` there), ``None`` without bounds."""

    loss = problem_at(args).loss

    def residual_and_gradient(params, args):
        """``r`` and the gradient of the cost, ``F = Jᵀr`` (``Jᵀ(ρ'(z) ∘ r)`` for a robust loss,
        ``nlls.losses``): the optimality condition is ``F = 0``."""
        value, pullback = jax.vjp(problem_at(args), params)
        return value, pullback(_weighted(loss, value))[0]

    problem = problem_at(args)
    still = jnp.zeros_like(params)
    _, (residual_change, gradient_change) = jax.jvp(
        residual_and_gradient, (params, args), (still, arg_tangents)
    )

    def gradient(params):
        return residual_and_gradient(params, args)[1]

    params_change = -_tangent_solve(
        problem, path, gradient, params, residual_change, gradient_change, free
    )
    _, (residual_tangent, gradient_tangent) = jax.jvp(
        residual_and_gradient, (params, args), (params_change, arg_tangents)
    )
    cost_tangent = _weighted(loss, residual) @ residual_tangent
    covariance_tangent = None
    if covariance is not None:
        covariance_tangent = _covariance_tangent(
            problem_at, args, arg_tangents, params, params_change, residual, cost_tangent,
            covariance == "absolute",
        )  # fmt: skip
    return params_change, cost_tangent, residual_tangent, gradient_tangent, covariance_tangent


def _weighted(loss, residual):
    """``ρ'(z) ∘ r``, the residual the gradient of a robust cost pulls back (``r`` itself for the
    linear loss)."""
    return residual if loss.linear else loss.values(residual)[1] * residual


def _tangent_solve(problem, path, gradient, params, residual_change, gradient_change, free=None):
    """``−θ̇``: ``H⁺b`` (``b`` = ``gradient_change``) on the normal and matrix-free paths,
    ``Jᵀ(JJᵀ)⁺(∂r/∂a)ȧ`` (``residual_change``) on the minimum-norm path. With ``free`` (bounds), the
    parameters at an active bound keep ``θ̇ = 0``: their rows and columns of ``H`` become those of
    the identity, their entries of ``b`` zero (their columns of ``J`` zero on the min-norm path)."""
    n = params.size
    if free is not None:
        held = 1.0 - free
        gradient_change = free * gradient_change
        plain_gradient = gradient

        def gradient(p):  # the masked system's gradient map: free rows only, identity on the held
            return free * plain_gradient(params + free * (p - params)) + held * (p - params)

    if path == "min_norm" and residual_change.size < n:
        jac = problem.jacobian(params)
        if free is not None:
            jac = jac * free[None, :]
        jac = eqx.error_if(jac, ~jnp.all(jnp.isfinite(jac)), _NONFINITE.format("Jacobian"))
        return jac.T @ (symmetric_inverse(jac @ jac.T) @ residual_change)
    _, hessian_product = jax.linearize(gradient, params)
    if not isinstance(path, Krylov) and path != "none":  # dense: "normal", or "min_norm" with m ≥ n
        hessian = map_basis(hessian_product, n, params.dtype, problem.chunk or n)
        hessian = 0.5 * (hessian + hessian.T)
        hessian = eqx.error_if(
            hessian, ~jnp.all(jnp.isfinite(hessian)), _NONFINITE.format("Hessian of the cost")
        )
        return symmetric_inverse(hessian) @ gradient_change
    settings = path if isinstance(path, Krylov) else Krylov().sized(problem(params).size, n)
    if settings.jacobi:
        scale = norm_scale(problem.operator(params).column_norms())
    else:
        scale = jnp.ones(n, params.dtype)
    # One product on a fixed vector stands in for the Hessian's entries: a non-finite second
    # derivative shows there (the CG loop would otherwise carry it into the tangents).
    probe = hessian_product(jnp.ones(n, params.dtype))
    finite = jnp.all(jnp.isfinite(scale)) & jnp.all(jnp.isfinite(probe))
    scale = eqx.error_if(scale, ~finite, _NONFINITE.format("Hessian of the cost"))
    tolerance = float(np.finfo(params.dtype).eps) ** (2 / 3)

    def scaled_product(y):
        return hessian_product(y / scale) / scale

    def cg(matvec, rhs):
        return conjugate_gradient(
            matvec, rhs, max_steps=settings.max_steps, tolerance=tolerance
        )  # fmt: skip

    scaled = jax.lax.custom_linear_solve(
        scaled_product, gradient_change / scale, cg, symmetric=True
    )
    return scaled / scale


_NONFINITE = (
    "the {} is not finite at the solution, so its derivative is not defined: check the "
    "residual's derivatives there (or the solve's status)"
)


def symmetric_inverse(matrix: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """The inverse of a symmetric matrix ``A``, or its pseudo-inverse when it is numerically
    singular (module docstring), computed on ``D⁻¹AD⁻¹`` with ``D`` the square roots of ``|diag A|``
    rounded down to powers of two (exact)."""
    size = matrix.shape[0]
    eps = jnp.finfo(matrix.dtype).eps
    scale = norm_scale(jnp.sqrt(jnp.abs(jnp.diagonal(matrix))))
    scaled = matrix / scale[:, None] / scale[None, :]
    factor = jnp.linalg.cholesky(scaled)
    diagonal = jnp.abs(jnp.diagonal(factor))
    regular = jnp.all(jnp.isfinite(factor)) & (
        jnp.min(diagonal, initial=jnp.inf) ** 2 > size * eps * jnp.max(diagonal, initial=0.0) ** 2
    )

    def cholesky_inverse():
        return cho_solve((factor, True), jnp.eye(size, dtype=matrix.dtype))

    def pseudo_inverse():
        eigenvalues, vectors = jnp.linalg.eigh(scaled)
        cutoff = size * eps * jnp.max(jnp.abs(eigenvalues), initial=0.0)
        keep = jnp.abs(eigenvalues) > cutoff
        inverse = jnp.where(keep, 1.0 / jnp.where(keep, eigenvalues, 1.0), 0.0)
        return (vectors * inverse) @ vectors.T

    inverse = jax.lax.cond(regular, cholesky_inverse, pseudo_inverse)
    return inverse / scale[:, None] / scale[None, :]


def _covariance_tangent(
    problem_at, args, arg_tangents, params, params_change, residual, cost_tangent, absolute
):
    """``Σ̇`` for ``Σ = s²(JᵀJ)⁻¹`` (module docstring); zero where ``Σ`` is ``inf`` (not
    estimable). With a robust loss ``J`` is the model's ``J̃`` and the cost the robust one, as the
    covariance itself (``FlatProblem.model``)."""

    def model_jacobian(p, a):
        problem = problem_at(a)
        return problem.model(problem(p), dense_jacobian(problem, p))[1]

    jac, jac_tangent = jax.jvp(model_jacobian, (params, args), (params_change, arg_tangents))
    cost = problem_at(args).loss.cost(residual)
    inverse = covariance_matrix(jac, cost, absolute=True)  # (JᵀJ)⁻¹, or inf
    estimable = jnp.all(jnp.isfinite(inverse))
    inverse = jnp.where(estimable, inverse, 0.0)
    gram_tangent = jac_tangent.T @ jac + jac.T @ jac_tangent
    change = -(inverse @ gram_tangent @ inverse)
    if not absolute:
        m, n = jac.shape
        if m <= n:
            return jnp.zeros_like(change)
        variance = 2.0 * cost / (m - n)
        change = (2.0 * cost_tangent / (m - n)) * inverse + variance * change
    return jnp.where(estimable, change, 0.0)
