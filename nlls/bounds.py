"""Bounds on the parameters, ``lower ≤ θ ≤ upper``: the Coleman–Li scaling and the reflective step.

A bound-constrained minimum of the cost ``f = ½‖r‖²`` satisfies, for each parameter, ``g_j = 0``
inside the bounds, ``g_j ≥ 0`` at a lower bound and ``g_j ≤ 0`` at an upper one. Coleman and Li
(1996) write this as the square system ``v(θ) ⊙ g(θ) = 0`` with

    v_j = θ_j − l_j   when g_j > 0 and l_j is finite      (dv_j/dθ_j = +1)
    v_j = u_j − θ_j   when g_j < 0 and u_j is finite      (dv_j/dθ_j = −1)
    v_j = 1           otherwise                           (dv_j/dθ_j =  0),

the distance to the bound the gradient pushes toward. Newton's method on it, in the variables
``θ̂ = V^{-1/2} θ`` (``V = diag(v)``), is the step of the quadratic model

    ψ(p̂) = ĝᵀp̂ + ½‖Ĵp̂‖² + ½ p̂ᵀ C p̂,     Ĵ = J V^{1/2},  ĝ = V^{1/2} g,  C = diag(g ⊙ dv) ≥ 0,

and a Levenberg–Marquardt step of that model, ``(ĴᵀĴ + C + λI) p̂ = −ĝ``, is the linear path's
damped solve with the column scale ``V^{-1/2}`` and the diagonal damping ``λ + C``. As a parameter
nears the bound it is pushed to, its column of ``Ĵ`` vanishes with ``√v``: the step can only
approach the bound, never jump it, and the extra curvature ``C`` keeps the system regular there.
With Marquardt's scale ``D`` (``θ̃ = Dθ``) the distances are measured in the scaled units: the
column scale is ``(D/v)^{1/2}`` for a parameter with ``dv ≠ 0`` and ``D`` otherwise, and
``C = g ⊙ dv / D`` (``effective_scale``).

The step ``p`` so found may still leave the box. Branch, Coleman and Li (1999) then compare three
strictly feasible candidates by the model ``ψ`` and take the best (``reflective_step``):

* ``p`` cut at the first bound it meets and pulled back by the factor ``θ = max(0.995, 1 − ‖·‖)``
  of the optimality measure, which tends to one near a solution;
* the reflection: from the point where ``p`` meets the bound, the direction with the hit
  components' signs reversed, searched (the model is a quadratic in the step length) up to the
  next bound (times ``θ``) or the trust region's edge, whichever comes first;
* the scaled steepest-descent direction ``−ĝ``, searched up to the trust region's edge or the bound
  (times ``θ``).

The trust region is the one the LM step solves exactly: ``‖p̂‖`` itself. Iterates stay strictly
inside the box (``strictly_inside``): at a bound ``v = 0`` would freeze the parameter.

Stationarity at the bounds is measured by the projected gradient (``projected_gradient``): ``g_j``
limited to the distance to the bound that ``−g_j`` points to, times ``‖J_j‖²`` so that it keeps the
gradient's units. It is ``g`` when no bound is near and tends to 0 at a minimum on a bound; ``gtol``
tests its cosines (``nlls.termination``). The step's θ of Coleman–Li uses the plain form
``‖θ − P(θ − g)‖∞``, ``P`` the projection on the box, as scipy's ``trf`` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

#: how far inside the box a start on a bound is moved, relative to max(1, |bound|)
START_INSIDE = 1e-10


def flat_bounds(bounds, params0, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` as flat NumPy arrays in ``ravel_pytree(params0)``'s order, after checking
    them: each side a scalar or a pytree like ``params0`` (leaves broadcast to the leaf's shape),
    ``±inf`` for none, ``lower < upper``, no NaN, and ``params0`` inside.

    Raises:
        ValueError: a malformed pair, NaN, traced bounds, ``lower ≥ upper`` (a parameter fixed by
            equal bounds belongs in ``args``), or ``params0`` outside the bounds (named by leaf;
            a ``params0`` traced by a caller's ``jit`` cannot be checked, and is clipped into the
            box).
    """
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise ValueError(
            "bounds must be a pair (lower, upper), each a scalar or a pytree like params0, "
            f"got {type(bounds).__name__}"
        )
    flat0, _ = ravel_pytree(params0)
    sides = [
        _flat_side(side, params0, name, dtype)
        for side, name in zip(bounds, ("lower", "upper"), strict=True)
    ]
    lower, upper = sides
    for name, side in (("lower", lower), ("upper", upper)):
        if np.any(np.isnan(side)):
            raise ValueError(f"bounds: {name} has NaN entries; use -inf or inf for no bound")
    paths = _leaf_paths(params0)
    equal = lower == upper
    if np.any(equal):
        raise ValueError(
            f"bounds: lower == upper at {paths[int(np.argmax(equal))]}: a fixed parameter is "
            "not a parameter; pass its value in args and leave it out of params0"
        )
    crossed = lower > upper
    if np.any(crossed):
        raise ValueError(f"bounds: lower > upper at {paths[int(np.argmax(crossed))]}")
    if isinstance(flat0, jax.core.Tracer):  # traced by a caller's jit: clipped into the box
        return lower, upper
    start = np.asarray(flat0)
    outside = (start < lower) | (start > upper)
    if np.any(outside):
        j = int(np.argmax(outside))
        raise ValueError(
            f"params0 is outside the bounds at {paths[j]}: {start[j]} not in "
            f"[{lower[j]}, {upper[j]}]; start inside (on a bound is allowed)"
        )
    return lower, upper


def _flat_side(side, params0, name: str, dtype) -> np.ndarray:
    """One side of the bounds, flat: a scalar broadcast to every parameter, or a pytree like
    ``params0`` whose leaves broadcast to their parameter's shape."""
    leaves0, treedef = jax.tree_util.tree_flatten(params0)
    if is_scalar(side):
        return np.full(sum(np.size(leaf) for leaf in leaves0), float(side), dtype=dtype)
    try:
        leaves = treedef.flatten_up_to(side)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"bounds: {name} must be a scalar or a pytree like params0 ({treedef}); got {side!r}"
        ) from error
    parts = []
    for leaf, leaf0 in zip(leaves, leaves0, strict=True):
        if isinstance(leaf, jax.core.Tracer):
            raise ValueError(
                "bounds must be concrete numbers or arrays, not traced values: pass them from "
                "outside jax.jit/jax.vmap (as constants of the solve)"
            )
        try:
            parts.append(np.broadcast_to(np.asarray(leaf, dtype), np.shape(leaf0)).ravel())
        except ValueError as error:
            raise ValueError(
                f"bounds: a {name} leaf of shape {np.shape(leaf)} does not broadcast to the "
                f"parameter's shape {np.shape(leaf0)}"
            ) from error
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def is_scalar(side) -> bool:
    """Whether one side of the bounds is a single number (for every parameter)."""
    return isinstance(side, int | float | np.number | np.ndarray | jax.Array) and np.ndim(side) == 0


def _leaf_paths(params0) -> list[str]:
    """The name of each flat parameter: its leaf's path and index."""
    names = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params0):
        key = jax.tree_util.keystr(path) or "params0"
        size = int(np.size(leaf))
        names += [key] if np.ndim(leaf) == 0 else [f"{key}[{i}]" for i in range(size)]
    return names


def strictly_inside(
    params: Float[Array, " n"], lower: Float[Array, " n"], upper: Float[Array, " n"], margin=0.0
) -> Float[Array, " n"]:
    """``params`` clipped to the box and moved off the bounds: by ``margin · max(1, |bound|)``
    (not past the middle of the box), or, for ``margin = 0``, to the next float inside."""
    clipped = jnp.clip(params, lower, upper)
    if margin:
        middle = 0.5 * (lower + upper)
        up = jnp.minimum(lower + margin * jnp.maximum(1.0, jnp.abs(lower)), middle)
        down = jnp.maximum(upper - margin * jnp.maximum(1.0, jnp.abs(upper)), middle)
    else:
        up = jnp.nextafter(lower, upper)
        down = jnp.nextafter(upper, lower)
    clipped = jnp.where(clipped <= lower, up, clipped)
    return jnp.where(clipped >= upper, down, clipped)


def coleman_li(
    params: Float[Array, " n"], grad: Float[Array, " n"], lower, upper
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """``(v, dv)``: the distance to the bound the gradient pushes toward (1 where that bound is
    infinite or the gradient is zero) and its derivative ``±1`` (0 there)."""
    to_lower = (grad > 0) & jnp.isfinite(lower)
    to_upper = (grad < 0) & jnp.isfinite(upper)
    v = jnp.where(to_lower, params - lower, jnp.where(to_upper, upper - params, 1.0))
    dv = jnp.where(to_lower, 1.0, jnp.where(to_upper, -1.0, 0.0)).astype(params.dtype)
    return v, dv


def effective_scale(
    params, grad, lower, upper, scale: Float[Array, " n"]
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """``(E, C)``: the column scale of the bounded step (``Jₛ = J E⁻¹``, steps ``ŝ = E s``) and the
    Coleman–Li curvature in those variables, from Marquardt's scale ``D`` (module docstring):
    ``E_j = √(D_j / v_j)`` where ``dv_j ≠ 0``, ``E_j = D_j`` elsewhere, and ``C = g ⊙ dv / D``."""
    v, dv = coleman_li(params, grad, lower, upper)
    bounded = dv != 0
    tiny = jnp.finfo(params.dtype).tiny
    column = jnp.where(bounded, jnp.sqrt(scale / jnp.maximum(v, tiny)), scale)
    return column, grad * dv / scale


def projected_gradient(params, grad, lower, upper, curvature=1.0) -> Float[Array, " n"]:
    """``g_j`` limited in size by ``curvature_j`` times the distance to the bound in the direction
    ``−g_j``: with ``curvature = 1``, ``θ − P(θ − g)``, ``P`` the projection on the box. With
    ``curvature = ‖J_j‖²`` the limit is in the units of the gradient (``termination``'s ``gtol``)."""
    distance = jnp.where(grad > 0, params - lower, upper - params)
    return jnp.sign(grad) * jnp.minimum(jnp.abs(grad), distance * curvature)


def active(params, lower, upper, rtol) -> Int[Array, " n"]:
    """``−1`` where a parameter is within ``rtol · max(1, |bound|)`` of its lower bound, ``+1`` of its
    upper bound, ``0`` elsewhere."""
    near_lower = jnp.isfinite(lower) & (params - lower <= rtol * jnp.maximum(1.0, jnp.abs(lower)))
    near_upper = jnp.isfinite(upper) & (upper - params <= rtol * jnp.maximum(1.0, jnp.abs(upper)))
    return jnp.where(near_lower, -1, jnp.where(near_upper, 1, 0)).astype(jnp.int32)


def step_to_bound(params, direction, lower, upper) -> tuple[Float[Array, ""], Bool[Array, " n"]]:
    """``(t, hits)``: the largest ``t ≥ 0`` with ``params + t·direction`` in the box (``inf`` when
    no bound is in the way), and the components that reach their bound at ``t``."""
    big = jnp.finfo(params.dtype).max
    moving = direction != 0
    safe = jnp.where(moving, direction, 1.0)
    room = jnp.where(direction > 0, upper - params, lower - params)
    steps = jnp.where(moving, room / safe, jnp.inf)
    steps = jnp.where(jnp.isnan(steps), jnp.inf, jnp.maximum(steps, 0.0))
    t = jnp.min(steps, initial=jnp.inf)
    return jnp.minimum(t, big), moving & (steps == t)


def _to_sphere(start: Float[Array, " n"], direction: Float[Array, " n"], radius) -> Array:
    """The largest ``s ≥ 0`` with ``‖start + s·direction‖ ≤ radius`` (``start`` inside the ball)."""
    a = direction @ direction
    b = start @ direction
    c = start @ start - radius**2
    root = jnp.sqrt(jnp.maximum(b**2 - a * c, 0.0))
    # (−b + root)/a without cancellation when b > 0
    s = jnp.where(
        b > 0, -c / jnp.where(b + root > 0, b + root, 1.0), (root - b) / jnp.where(a > 0, a, 1.0)
    )
    return jnp.where(a > 0, jnp.maximum(s, 0.0), jnp.inf)


class Model:
    """The bounded model ``ψ(ŝ) = ĝᵀŝ + ½‖Jₛŝ‖² + ½ ŝᵀCŝ`` in the scaled variables ``ŝ = E s``, with
    ``Jₛ = J E⁻¹`` given by products."""

    def __init__(self, jac, column, curvature, grad):
        self.jac, self.column, self.curvature = jac, column, curvature
        self.grad = grad / column

    def image(self, scaled: Float[Array, " n"]) -> Float[Array, " m"]:
        return self.jac @ (scaled / self.column)

    def value(self, scaled, image) -> Float[Array, ""]:
        return self.grad @ scaled + 0.5 * (image @ image) + 0.5 * (scaled * self.curvature) @ scaled

    def line(self, start, start_image, direction, low, high):
        """``(s, ψ(start + s·direction))`` minimising the model over ``s ∈ [low, high]``."""
        image = self.image(direction)
        slope = self.grad @ direction + start_image @ image + (start * self.curvature) @ direction
        bend = image @ image + (direction * self.curvature) @ direction
        base = self.value(start, start_image)

        def at(s):
            return base + s * slope + 0.5 * s**2 * bend

        inner = jnp.clip(-slope / jnp.where(bend > 0, bend, 1.0), low, high)
        candidates = jnp.stack([low, high, jnp.where(bend > 0, inner, low)])
        values = jax.vmap(at)(candidates)
        best = jnp.argmin(values)
        return candidates[best], values[best]


def reflective_step(model: Model, params, step, lower, upper, theta, radius):
    """``(step, predicted)``: the best of the three strictly feasible candidates of the module
    docstring by the model ``ψ``, and its predicted reduction ``−ψ``; ``step`` itself when it stays
    in the box."""
    column = model.column
    scaled = column * step
    image = model.image(scaled)
    inside = jnp.all((params + step >= lower) & (params + step <= upper))
    full_value = model.value(scaled, image)

    # 1. cut at the first bound, pulled back by θ
    t, hits = step_to_bound(params, step, lower, upper)
    t = jnp.minimum(t, 1.0)
    cut_value = model.value(theta * t * scaled, theta * t * image)

    # 2. the reflection from where the step meets the bound
    on_bound = t * scaled
    reflected = jnp.where(hits, -scaled, scaled)
    to_edge = _to_sphere(on_bound, reflected, radius)
    to_wall, _ = step_to_bound(params + t * step, reflected / column, lower, upper)
    reach = jnp.minimum(to_edge, to_wall)
    high = jnp.where(to_wall < to_edge, theta * to_wall, to_edge)
    low = (1.0 - theta) * reach
    possible = (reach > 0) & (low <= high) & jnp.isfinite(high)
    s, reflect_value = model.line(
        on_bound, t * image, reflected, low, jnp.where(possible, high, low)
    )
    reflect_value = jnp.where(possible, reflect_value, jnp.inf)
    reflect = on_bound + s * reflected

    # 3. scaled steepest descent
    descent = -model.grad
    size = jnp.linalg.norm(descent)
    to_edge = jnp.where(size > 0, radius / jnp.where(size > 0, size, 1.0), 0.0)
    to_wall, _ = step_to_bound(params, descent / column, lower, upper)
    high = jnp.where(to_wall < to_edge, theta * to_wall, to_edge)
    zeros = jnp.zeros_like(scaled)
    a, descent_value = model.line(zeros, jnp.zeros_like(image), descent, jnp.zeros_like(high), high)

    candidates = jnp.stack([theta * t * scaled, reflect, a * descent])
    values = jnp.stack([cut_value, reflect_value, descent_value])
    best = jnp.argmin(values)
    chosen = jnp.where(inside, scaled, candidates[best])
    value = jnp.where(inside, full_value, values[best])
    return chosen / column, -value
