"""``least_squares``: the public entry point of the engine."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import loop
from .callbacks import StepInfo
from .driver import pack_snapshot, run_plan
from .jacobian import JAC_MODES, choose_mode
from .linear import LINEAR_PATHS, Krylov, path_name
from .memory import default_jacobian_bytes, plan_memory
from .problem import FlatProblem, describe_leaves
from .result import Solution, Stats
from .solvers import Dogleg, GaussNewton, LevenbergMarquardt, TrustRegion
from .solvers.base import point_at
from .termination import Tolerances, succeeded

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
) -> Solution:
    """Minimise ``½‖residual(params, *args)‖²`` over ``params``.

    Args:
        residual: ``residual(params, *args)`` returns an array or pytree of residuals, of the same
            floating dtype as the parameters.
        params0: the starting point, any pytree of floating arrays of one dtype (float32 or float64).
        args: extra arguments passed to ``residual`` (data, usually); arrays here are traced, not
            baked into the compiled program; other values (Python numbers, strings) are static, and
            a new value compiles anew.
        method: ``"lm"`` (Levenberg–Marquardt), ``"gn"`` (Gauss–Newton with line search),
            ``"dogleg"``, ``"trust_region"`` (Steihaug–Toint CG), or a configured solver object such as ``nlls.LevenbergMarquardt(geodesic=True)``.
        jac: ``"auto"`` (forward mode when ``n ≤ m``, reverse mode otherwise), ``"fwd"``, ``"rev"``, or
            a function ``jac(params, *args)`` returning the ``(m, n)`` Jacobian of the flattened residual
            with respect to the flattened parameters.
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

        Without callbacks, ``max_time`` and ``resume`` the solve is one compiled program and works
        under ``jax.jit``/``jax.vmap``; with them it runs from Python (a ``KeyboardInterrupt`` then
        returns the last point reached, with ``Status.INTERRUPTED``) and needs concrete inputs.

    Returns:
        A ``Solution``; ``Status(int(sol.status))`` names why it stopped.

    Raises:
        ValueError: a non-finite ``params0``, or residual or Jacobian non-finite at the start; a
            residual of the wrong dtype or shape; an unknown option. Under an outer ``jax.jit`` or
            ``jax.vmap`` the values are not known when tracing, so a non-finite start is reported as
            ``Status.NONFINITE_START`` (with ``params`` left at ``params0``) instead of raised.

    Example:
        >>> import jax.numpy as jnp, nlls
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> y = 2.0 * jnp.exp(-1.5 * x)
        >>> sol = nlls.least_squares(lambda p, x, y: p["a"] * jnp.exp(-p["k"] * x) - y,
        ...                          {"a": 1.0, "k": 1.0}, args=(x, y))
        >>> print(f"{float(sol.params['a']):.4f} {float(sol.params['k']):.4f}")
        2.0000 1.5000
    """
    params0 = jax.tree_util.tree_map(_as_array, params0)
    dynamic, static, treedef = split_args(args)
    key = (
        residual,
        _signature(params0),
        _signature(dynamic),
        treedef,
        static,
        method,
        jac,
        linear,
        None if max_jacobian_bytes is None else _budget(max_jacobian_bytes),
        float(ftol),
        float(xtol),
        float(gtol),
    )
    try:
        plan = _cached_plan(key)
    except TypeError:  # an unhashable option or argument: validate and compile without the cache
        plan = _Plan(key)
    plan.check(params0, dynamic)
    callbacks = _check_callbacks(callbacks, callback_every, max_time)
    return run_plan(
        plan,
        params0,
        dynamic,
        max_steps=max_steps,
        callbacks=callbacks,
        callback_every=callback_every,
        max_time=max_time,
        resume=resume,
    )


def split_args(args) -> tuple[list, tuple, Any]:
    """``(dynamic, static, treedef)`` of the leaves of ``args``. As equinox's ``filter_jit``: arrays
    are traced (``dynamic``, ``None`` in their place in ``static``); anything else (Python numbers,
    strings, functions) is static, part of the compiled program and of the cache key."""
    leaves, treedef = jax.tree_util.tree_flatten(tuple(args))
    dynamic = [leaf if eqx.is_array(leaf) else None for leaf in leaves]
    static = tuple(None if eqx.is_array(leaf) else leaf for leaf in leaves)
    return dynamic, static, treedef


def assemble_args(treedef, static: tuple, dynamic: list) -> tuple:
    """The inverse of ``split_args``."""
    leaves = [d if s is None else s for d, s in zip(dynamic, static, strict=True)]
    return tuple(jax.tree_util.tree_unflatten(treedef, leaves))


@functools.lru_cache(maxsize=128)
def _cached_plan(key):
    """Plans by call signature. The cache keeps the residual functions it has seen alive (at most
    128 of them); a residual defined anew for every call (a lambda in a loop) misses it and is
    validated and compiled every time."""
    return _Plan(key)


class _Plan:
    """Everything fixed by one call signature: the validated options, the chosen path and AD mode,
    and the compiled programs.

    ``solve`` is the whole solve as one program (a plain call without callbacks). The host driver of
    ``nlls.callbacks`` uses ``start``, ``advance`` (or ``advance_donating``) and ``finish`` instead:
    the same ``loop.init`` and ``loop.run`` split at optimisation barriers, so the iterates do not
    depend on how a solve is cut into segments. ``describe`` gives the snapshot of a given state.

    The key holds everything that fixes the compiled programs: the functions, the options, and the
    tree structure, shapes and dtypes of ``params0`` and ``args`` (non-array arguments by value).
    """

    def __init__(self, key):
        residual, _, _, args_treedef, static, method, jac, linear, budget, ftol, xtol, gtol = key
        self.residual = residual
        self.solver = _resolve_method(method)
        if not (isinstance(linear, Krylov) or linear in LINEAR_PATHS):
            raise ValueError(
                f"linear must be one of {LINEAR_PATHS} or an nlls.Krylov(...), got {linear!r}"
            )
        self.budget = budget
        if not (callable(jac) or jac in JAC_MODES):
            raise ValueError(f"jac must be one of {JAC_MODES} or a callable, got {jac!r}")
        self.jac, self.linear = jac, linear
        self.tolerances = Tolerances(ftol, xtol, gtol)
        self.args_treedef, self.static = args_treedef, static
        self.checked = {}
        self.solve = jax.jit(self._solve)
        self.start = jax.jit(self._start)
        self.advance = jax.jit(self._advance)
        # The same program with the incoming state's buffers reused for the outgoing state (no copy
        # of J and the factorisation per segment); the driver uses it when it can keep Ctrl-C from
        # interrupting a segment half-way, since the old state is gone once it is donated.
        self.advance_donating = jax.jit(self._advance, donate_argnums=0)
        self.finish = jax.jit(self._finish)
        self.describe = jax.jit(self._describe)

    def check(self, params0, dynamic) -> None:
        """Validate dtypes and shapes and choose path and AD mode; runs once per plan."""
        if self.checked:
            return
        args = self.assemble(dynamic)
        dtype = _check_params(params0)
        n = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params0))
        m = _check_residual(self.residual, params0, args, dtype)
        if callable(self.jac):
            _check_user_jac(self.jac, params0, args, m, n)
            jac_mode = "user"
        else:
            jac_mode = choose_mode(self.jac, m, n)
        budget = default_jacobian_bytes() if self.budget is None else self.budget
        probe = FlatProblem(self.residual, tuple(args), ravel_pytree(params0)[1], jac_mode)
        path, chunk = plan_memory(
            self.linear, jac_mode, probe, ravel_pytree(params0)[0], m, n, budget
        )
        if isinstance(path, Krylov):
            jac_mode = "fwd+rev"  # products of both kinds, from the residual itself
        self.checked.update(
            path=path,
            chunk=chunk,
            jac_mode=jac_mode,
            tol=self.tolerances.clipped(dtype),
            signature=_describe_problem(self.solver, path, jac_mode, self.tolerances, params0, m),
        )

    @property
    def signature(self) -> str:
        """A description of the problem and the solver that a checkpoint must match to be resumed."""
        return self.checked["signature"]

    def assemble(self, dynamic):
        return assemble_args(self.args_treedef, self.static, dynamic)

    def _setup(self, params0, dynamic):
        args = self.assemble(dynamic)
        user_jac = self.jac if callable(self.jac) else None
        flat0, unravel = ravel_pytree(params0)
        path = self.checked["path"]
        problem = FlatProblem(
            self.residual,
            tuple(args),
            unravel,
            self.checked["jac_mode"],
            user_jac,
            matrix_free=isinstance(path, Krylov),
            chunk=self.checked["chunk"],
        )
        return problem, flat0, unravel, args

    def _solve(self, params0, dynamic, max_steps) -> Solution:
        problem, flat0, unravel, args = self._setup(params0, dynamic)
        path, tol = self.checked["path"], self.checked["tol"]
        state = jax.lax.optimization_barrier(loop.init(self.solver, problem, path, flat0, tol))
        state = loop.run(self.solver, problem, path, tol, state, max_steps)
        state = jax.lax.optimization_barrier(state)
        return self._solution(state, state.point, params0, args, unravel)

    def _start(self, params0, dynamic):
        problem, flat0, unravel, _ = self._setup(params0, dynamic)
        path, tol = self.checked["path"], self.checked["tol"]
        state = jax.lax.optimization_barrier(loop.init(self.solver, problem, path, flat0, tol))
        return state, self._snapshot(state, unravel)

    def _advance(self, state, params0, dynamic, max_steps, pause_at):
        problem, _, unravel, _ = self._setup(params0, dynamic)
        path, tol = self.checked["path"], self.checked["tol"]
        state = loop.run(self.solver, problem, path, tol, state, max_steps, pause_at)
        state = jax.lax.optimization_barrier(state)
        return state, self._snapshot(state, unravel)

    def _finish(self, state, params0, dynamic, params=None) -> Solution:
        """The ``Solution`` at the state's point, or at ``params`` (flat) when given."""
        problem, _, unravel, args = self._setup(params0, dynamic)
        point = state.point if params is None else point_at(problem, params)
        return self._solution(state, point, params0, args, unravel)

    def _describe(self, state, params0):
        """The snapshot of a state obtained elsewhere (a checkpoint, or an interrupted segment)."""
        return self._snapshot(state, ravel_pytree(params0)[1])

    def _snapshot(self, state: loop.LoopState, unravel):
        return pack_snapshot(state, self.solver.damping_value(state.method_state), unravel)

    def _solution(self, state: loop.LoopState, point, params0, args, unravel) -> Solution:
        unravel_residual = _unraveler(eqx.filter_eval_shape(self.residual, params0, *args))
        status = state.status
        return Solution(
            params=unravel(point.params),
            cost=point.cost,
            residual=unravel_residual(point.residual),
            grad=point.grad,
            success=succeeded(status),
            status=status,
            stats=Stats(
                steps=state.steps,
                nfev=state.nfev,
                njev=state.njev,
                rejected=state.rejected,
                linear=path_name(self.checked["path"]),
                jac=self.checked["jac_mode"],
            ),
        )


def _describe_problem(solver, path, jac_mode, tolerances, params0, m) -> str:
    treedef = jax.tree_util.tree_structure(params0)
    leaves = [
        f"{jnp.result_type(x)}{list(np.shape(x))}" for x in jax.tree_util.tree_leaves(params0)
    ]
    return (
        f"method={solver!r}; linear={path}; jac={jac_mode}; {tolerances!r}; "
        f"params={treedef} {leaves}; residuals={m}"
    )


def _unraveler(shapes):
    """The inverse of ``ravel_pytree`` for a tree of ``ShapeDtypeStruct``."""
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    offsets = np.cumsum([0, *sizes])

    def unravel(flat):
        parts = [
            flat[start:stop].reshape(leaf.shape)
            for start, stop, leaf in zip(offsets[:-1], offsets[1:], leaves, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, parts)

    return unravel


def _resolve_method(method):
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(
                f"method must be one of {tuple(METHODS)} or a solver object, got {method!r}"
            )
        return METHODS[method]()
    if isinstance(method, LevenbergMarquardt | GaussNewton | Dogleg | TrustRegion):
        return method
    raise TypeError(
        f"method must be a name or a solver object such as nlls.LevenbergMarquardt(), got {method!r}"
    )


def _check_callbacks(callbacks, callback_every, max_time) -> tuple:
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks or ())
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(
                f"a callback must be callable (it is given a StepInfo), got {callback!r}"
            )
    if isinstance(callback_every, bool) or not (
        isinstance(callback_every, int | np.integer) and callback_every >= 1
    ):
        raise ValueError(f"callback_every must be a positive int, got {callback_every!r}")
    if max_time is not None and not (isinstance(max_time, int | float) and max_time >= 0):
        raise ValueError(f"max_time must be a non-negative number of seconds, got {max_time!r}")
    return callbacks


def _check_params(params0) -> np.dtype:
    leaves = jax.tree_util.tree_leaves(params0)
    if not leaves:
        raise ValueError("params0 has no array leaves: there is nothing to fit")
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    if not all(jnp.issubdtype(d, jnp.floating) for d in dtypes):
        raise ValueError(
            f"params0 must hold floating-point arrays, got {describe_leaves(params0)}; "
            "convert integer starting values with jnp.asarray(x, dtype=float)"
        )
    if len(dtypes) > 1:
        raise ValueError(
            f"params0 mixes dtypes ({describe_leaves(params0)}); use one floating dtype for all"
        )
    return dtypes.pop()


def _check_residual(residual, params0, args, dtype) -> int:
    try:
        shape = eqx.filter_eval_shape(residual, params0, *args)
    except Exception as error:  # the user's function failed to trace: say where
        raise ValueError(f"calling residual(params0, *args) failed: {error}") from error
    leaves = jax.tree_util.tree_leaves(shape)
    if not leaves:
        raise ValueError("residual returned no arrays")
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                f"residual must return floating-point values, got {leaf.dtype}{leaf.shape}"
            )
        if leaf.dtype != dtype:
            raise ValueError(
                f"residual returns {leaf.dtype} but params0 is {dtype}: the dtypes must match "
                f"(cast the data or the parameters so both are {dtype} or both {leaf.dtype})"
            )
    m = sum(int(np.prod(leaf.shape)) for leaf in leaves)
    if m == 0:
        raise ValueError("residual returned an empty array: there is nothing to fit")
    return m


def _check_user_jac(jac, params0, args, m, n) -> None:
    shape = eqx.filter_eval_shape(jac, params0, *args)
    if not hasattr(shape, "shape") or tuple(shape.shape) != (m, n):
        got = getattr(shape, "shape", type(shape).__name__)
        raise ValueError(
            f"jac(params, *args) must return the (m, n) = ({m}, {n}) Jacobian of the flattened "
            f"residual with respect to the flattened parameters, got shape {got}"
        )


def _budget(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"max_jacobian_bytes must be a number of bytes, got {value!r}")
    if not value > 0:
        raise ValueError(f"max_jacobian_bytes must be positive, got {value!r}")
    return int(value)


def _as_array(leaf):
    return leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)


def _signature(tree):
    """Tree structure, shapes and dtypes: what a compiled program depends on."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (type(leaf), np.shape(leaf), getattr(leaf, "dtype", None), getattr(leaf, "weak_type", 0))
        for leaf in leaves
    )
