"""The plan: everything one call signature fixes, and the compiled programs that run a method on it.

Every front end (``least_squares``, the first-order baselines, ``fit``, minibatch training, ``ode.fit``)
reaches the engine through ``solve``: it names the residual, the start, the arguments and a ``Setup``
(the method and the options that change the compiled program), and ``solve`` finds or builds the
``Plan`` for that signature and runs it, as one compiled program or through the host driver
(``nlls.driver``) when there are callbacks, a time limit or a checkpoint to resume.

A plan is cached by its key: the residual function, the ``Setup``, and the tree structure, shapes
and dtypes of ``params0``, of the array arguments and of the data (other arguments by value).
Python functions, the residual and those among the arguments (``curve_fit``'s model), are keyed by
what they compute (``nlls.fingerprint``): a notebook cell run again, or a ``lambda`` written anew
with the same code, closure values and globals, finds the plan compiled before. Array
arguments, data, a minibatch run's random key and the options of the method that are JAX arrays
(the learning rate of Adam, say) travel as traced inputs (``Inputs``), so new values do not
compile anew.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import checks, choice, implicit, loop, uncertainty
from .bounds import active, flat_bounds
from .driver import Run, pack_snapshot, refuse_traced, run_plan
from .fingerprint import digest, keyed, unkeyed
from .jacobian import JAC_MODES, choose_mode
from .linear import LINEAR_PATHS, Krylov, choose_path, path_name
from .losses import LINEAR, Loss
from .memory import default_jacobian_bytes, plan_memory
from .problem import FlatProblem, Samples
from .result import Solution, Stats
from .sharding import Rows, layout_of
from .solvers.base import Method
from .termination import Tolerances, succeeded

#: no ftol, xtol or gtol test (the baselines' default gtol is 0; minibatch runs have no tests)
NO_TOLERANCES = Tolerances(0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What, besides the shapes of the inputs, fixes a plan's programs.

    Attributes:
        method: the method (its array-valued options are traced, the rest compiled in).
        jac: ``"auto"``, ``"fwd"``, ``"rev"`` or a function giving the ``(m, n)`` Jacobian.
        linear: ``"auto"``, ``"normal"``, ``"min_norm"``, ``"krylov"`` or a ``Krylov``.
        max_jacobian_bytes: the Jacobian's memory budget, ``None`` for the default.
        batch_size: samples per batch of a minibatch run (then the plan has data); ``None``.
        covariance: the covariance of the parameters the ``Solution`` carries
            (``nlls.uncertainty``): ``"scaled"`` (σ² estimated from the fit), ``"absolute"``
            (σ² = 1) or ``None`` for none.
        loss: the cost ``½ Σ C²ρ((rᵢ/C)²)`` (``nlls.losses``; ``checks.loss`` builds it); the
            linear loss, ``½‖r‖²``, by default.
        check_jac: whether ``Plan.check`` compares a ``jac`` function with the residual's
            derivative (``checks.user_jacobian_values``; skipped for a function marked ``exact``).
        choice: why ``method`` was chosen, when ``method="auto"`` chose it (``nlls.choice``);
            ``Stats.choice``.
    """

    method: Method
    jac: str | Callable[..., Any] = "auto"
    linear: str | Krylov = "auto"
    max_jacobian_bytes: int | None = None
    batch_size: int | None = None
    covariance: str | None = None
    loss: Loss = LINEAR
    check_jac: bool = True
    choice: str = ""

    def __post_init__(self):
        if not (isinstance(self.linear, Krylov) or self.linear in LINEAR_PATHS):
            raise ValueError(
                f"linear must be one of {LINEAR_PATHS} or an nlls.Krylov(...), got {self.linear!r}"
            )
        if not (callable(self.jac) or self.jac in JAC_MODES):
            raise ValueError(f"jac must be one of {JAC_MODES} or a callable, got {self.jac!r}")
        if self.covariance is not None and self.covariance not in uncertainty.KINDS:
            raise ValueError(
                f"covariance must be one of {uncertainty.KINDS} or None, got {self.covariance!r}"
            )
        if self.covariance is not None and self.batch_size is not None:
            raise ValueError("the covariance is not computed for minibatch runs")
        if not self.loss.linear and (self.method.needs != "jacobian" or self.batch_size):
            raise ValueError(
                f"loss={self.loss.rho!r} needs a least-squares method (method='lm', 'gn', "
                "'dogleg' or 'trust_region') on the whole data set: the first-order and "
                "minibatch methods minimise the plain ½‖r‖²; use loss='linear' with them"
            )


class Inputs(NamedTuple):
    """A plan's traced inputs besides ``params0``."""

    args: list  # the array leaves of args (None where a leaf is static)
    tol: Tolerances  # ftol, xtol, gtol as arrays of the parameters' dtype
    data: Any = None  # a minibatch run's samples
    method: Any = None  # the array-valued options of the method
    key: Any = None  # a minibatch run's random key
    bounds: Any = None  # (lower, upper), flat, or None (nlls.bounds)


class PlanKey(NamedTuple):
    residual: Callable[..., Any]
    setup: Setup  # with the method's array-valued options taken out
    params: Any  # signature(params0)
    args: Any  # signature of the array arguments
    args_treedef: Any
    static_args: tuple
    data: Any  # signature of the data
    bounded: bool = False
    layout: Rows | None = None  # how the arguments' rows are sharded (nlls.sharding)


def solve(
    residual,
    params0,
    args,
    setup: Setup,
    run: Run,
    *,
    tolerances: Tolerances = NO_TOLERANCES,
    data=None,
    key=None,
    bounds=None,
) -> Solution:
    """Run ``setup.method`` on ``½‖residual(params, *args)‖²`` (with ``data``, minibatches of it,
    drawn from permutations seeded by ``key``; within ``bounds = (lower, upper)``, scalars or
    pytrees like ``params0``, checked by ``nlls.bounds.flat_bounds``) as ``run`` says, through the
    plan of this call signature."""
    params0 = jax.tree_util.tree_map(as_array, params0)
    dynamic, static, treedef = split_args(args)
    method_arrays, static_setup = _split_setup(setup)
    plan_key = PlanKey(
        keyed(residual),
        static_setup,
        signature(params0),
        signature(dynamic),
        treedef,
        tuple(keyed(leaf) for leaf in static),
        None if data is None else signature(data),
        bounds is not None,
        layout_of((dynamic, data)),
    )
    try:
        plan = _cached_plan(plan_key)
    except TypeError:  # an unhashable option or argument: validate and compile without the cache
        plan = Plan(plan_key)
    plan.check(params0, dynamic, data)
    # Traced options travel in the parameters' dtype (no promotion, no recompilation).
    method_arrays = jax.tree_util.tree_map(lambda a: np.asarray(a, plan.dtype), method_arrays)
    tol = _device_tolerances(tolerances, np.dtype(plan.dtype))
    if bounds is not None:
        bounds = tuple(jnp.asarray(side) for side in flat_bounds(bounds, params0, plan.dtype))
    inputs = Inputs(dynamic, tol, data, method_arrays, key, bounds)
    if implicit.traced((params0, dynamic, data)):
        refuse_traced(run)
        return implicit.solve(plan, run, params0, inputs)  # differentiable in the arguments
    return run_plan(plan, params0, inputs, run)


def _split_setup(setup: Setup) -> tuple[Any, Setup]:
    """The method's array-valued options (traced), and the setup without them (the cache key's)."""
    if not any(eqx.is_array(leaf) for leaf in jax.tree_util.tree_leaves(setup.method)):
        return None, setup
    arrays, static = eqx.partition(setup.method, eqx.is_array)
    return arrays, dataclasses.replace(setup, method=static)


@functools.lru_cache(maxsize=64)
def _device_tolerances(tolerances: Tolerances, dtype: np.dtype) -> Tolerances:
    """The tolerances as device arrays of ``dtype``, made once per value: a plain call then
    transfers nothing for them (converting three scalars every call cost about 100 µs, a fifth of
    a small fit's time)."""
    # Concrete arrays even when first asked for inside a caller's jit: a traced value cached here
    # would leak into later calls.
    with jax.ensure_compile_time_eval():
        return jax.tree_util.tree_map(lambda t: jnp.asarray(t, dtype), tolerances)


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int


class _PlanCache:
    """Plans by call signature, least recently used first out. The cache keeps the residual
    functions it has seen alive (at most ``maxsize`` of them); a residual defined anew with the same
    code, closure values and globals finds its plan (``nlls.fingerprint``), one that closes over new
    arrays is compiled anew.

    Besides the count, the cache is bounded by what its compiled programs hold: each XLA CPU
    program maps memory (about 180 mappings for a curve fit's solve, over a thousand for a neural
    ODE's), and Linux refuses a process more than ``vm.max_map_count`` mappings (65,530 by
    default), after which XLA cannot compile at all. When a new plan is made and the process holds
    more than ``MAPPINGS_KEPT``, the older half of the plans is let go (their programs with them);
    they compile again if they are used again."""

    MAPPINGS_KEPT = 40_000

    def __init__(self, maxsize: int = 128):
        self.maxsize = maxsize
        self._plans: dict[PlanKey, Plan] = {}
        self._hits = self._misses = 0

    def __call__(self, key: PlanKey) -> Plan:
        plan = self._plans.pop(key, None)
        if plan is not None:
            self._hits += 1
            self._plans[key] = plan  # most recently used last
            return plan
        self._misses += 1
        if len(self._plans) >= self.maxsize:
            del self._plans[next(iter(self._plans))]
        if self._plans and mapped_regions() > self.MAPPINGS_KEPT:
            for old in list(self._plans)[: (len(self._plans) + 1) // 2]:
                del self._plans[old]
            gc.collect()
        plan = self._plans[key] = Plan(key)
        return plan

    def cache_clear(self) -> None:
        self._plans.clear()
        self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, self.maxsize, len(self._plans))


def mapped_regions() -> int:
    """The number of memory mappings this process holds (Linux); 0 where it cannot be read."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


_cached_plan = _PlanCache()


class Plan:
    """The validated options, the chosen path and AD mode, and the compiled programs of one call
    signature.

    ``solve`` runs a whole solve from a plain call. The host driver (``nlls.driver``) uses
    ``start``, ``advance`` (or ``advance_donating``) and ``finish`` instead: ``loop.init`` and
    ``loop.run`` split at optimisation barriers, so the iterates do not depend on how a solve is
    cut into segments. ``describe`` gives the snapshot of a given state (a checkpoint's).
    """

    def __init__(self, key: PlanKey):
        self.key = key
        self.residual = unkeyed(key.residual)
        self.static_args = tuple(unkeyed(leaf) for leaf in key.static_args)
        self.setup = key.setup
        self.dtype = None
        self.checked: dict = {}
        self.start = jax.jit(self._start)
        self.advance = jax.jit(self._advance)
        # The same program with the incoming state's buffers reused for the outgoing state (no copy
        # of J and the factorisation per segment); the driver uses it when it can keep Ctrl-C from
        # interrupting a segment half-way, since the old state is gone once it is donated.
        self.advance_donating = jax.jit(self._advance, donate_argnums=0)
        self.finish = jax.jit(self._finish)
        self.describe = jax.jit(self._describe)
        self.tangent = jax.jit(self._tangent)
        self._one_program = jax.jit(self._solve)

    @property
    def method(self) -> Method:
        """The method with its traced options left out (``None``)."""
        return self.setup.method

    def signature(self, inputs: Inputs, fingerprint: bool = False) -> str:
        """A description of the problem, the method and the tolerances that a checkpoint must
        match; empty for a method that cannot be checkpointed. With ``fingerprint``, also digests
        (``nlls.fingerprint.digest``) of the residual's code and constants and of the data: the
        array arguments, the other arguments (a model function's code among them), the bounds and
        a minibatch run's samples, so that a checkpoint of the same shapes but another residual or
        other data is refused."""
        if not self.method.checkpointable:
            return ""
        tol = Tolerances(*(float(t) for t in (inputs.tol.ftol, inputs.tol.xtol, inputs.tol.gtol)))
        text = self.checked["signature"].replace("{tolerances}", repr(tol))
        if fingerprint:
            data = (inputs.args, self.static_args, inputs.bounds, inputs.data)
            text += f"; residual={digest(self.residual)}; data={digest(data)}"
        return text

    def check(self, params0, dynamic, data) -> None:
        """Validate dtypes and shapes and choose path and AD mode; runs once per plan."""
        if self.checked:
            return
        setup, method = self.setup, self.method
        if self.key.bounded and (reason := method.bounds_refused()) is not None:
            raise ValueError(reason)
        args = self.assemble(dynamic)
        dtype = checks.params_dtype(params0)
        n = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params0))
        samples = None
        if data is None:
            rows = m = checks.residual_size(self.residual, params0, args, dtype)
            checks.loss_output(setup.loss, m, dtype)
            call_args, where = args, "(params, *args)"
        else:
            samples = _batch_shape(self.residual, params0, args, data, setup.batch_size, dtype)
            rows, m = samples.batch_residuals, samples.residuals
            call_args, where = (
                (*args, *_batch_like(data, setup.batch_size)),
                "(params, *args, *batch)",
            )
        if method.needs == "gradient":
            path, chunk, jac_mode = "none", None, "rev"
        elif callable(setup.jac):
            checks.user_jacobian_shape(setup.jac, params0, call_args, rows, n, f"jac{where}")
            if setup.check_jac and data is None and not getattr(setup.jac, "exact", False):
                checks.user_jacobian_values(self.residual, setup.jac, params0, args)
            jac_mode = "user"
        else:
            jac_mode = choose_mode(setup.jac, rows, n)
        if method.needs == "jacobian" and samples is not None:
            path, chunk = choose_path(setup.linear, rows, n), None
        elif method.needs == "jacobian":
            budget = setup.max_jacobian_bytes or default_jacobian_bytes()
            probe = FlatProblem(self.residual, tuple(args), ravel_pytree(params0)[1], jac_mode)
            flat0 = ravel_pytree(params0)[0]
            path, chunk = plan_memory(setup.linear, jac_mode, probe, flat0, m, n, budget)
            if isinstance(path, Krylov):
                jac_mode = "fwd+rev"  # products of both kinds, from the residual itself
        if setup.choice == choice.PENDING:  # method="auto": chosen now that the shapes are known
            method, reason = choice.automatic(self.key.bounded, m, n, path)
            self.setup = setup = dataclasses.replace(setup, method=method, choice=reason)
        self.checked.update(path=path, chunk=chunk, jac_mode=jac_mode, samples=samples)
        if method.checkpointable:
            self.checked["signature"] = _describe_problem(
                method, path, jac_mode, params0, m, setup.loss
            )
        self.dtype = dtype

    def assemble(self, dynamic) -> tuple:
        return assemble_args(self.key.args_treedef, self.static_args, dynamic)

    def _setup(self, params0, inputs: Inputs):
        """The problem on flat parameters, the method with its traced options, and the unraveller."""
        checked = self.checked
        flat0, unravel = ravel_pytree(params0)
        samples = checked["samples"]
        if samples is not None:
            layout = self.key.layout
            shards = 1 if layout is None else layout.count
            per_shard = samples.count % shards == 0 and samples.batch % shards == 0
            samples = dataclasses.replace(
                samples, data=inputs.data, key=inputs.key, layout=layout if per_shard else None
            )
        problem = FlatProblem(
            self.residual,
            tuple(self.assemble(inputs.args)),
            unravel,
            checked["jac_mode"],
            self.setup.jac if callable(self.setup.jac) else None,
            matrix_free=isinstance(checked["path"], Krylov),
            chunk=checked["chunk"],
            samples=samples,
            bounds=inputs.bounds,
            loss=self.setup.loss,
            layout=self.key.layout,
        )
        method = eqx.combine(inputs.method, self.method)
        return problem, method, inputs.tol.clipped(self.dtype), flat0, unravel

    def solve(self, params0, inputs: Inputs, max_steps) -> Solution:
        """A whole solve from a plain call: one program, or (for a method that asks for it) the
        driver's three programs in a row, with a loop that never pauses."""
        if self.method.one_program:
            return self._one_program(params0, inputs, max_steps)
        state, _ = self.start(params0, inputs)
        never = np.int32(checks.INT32_MAX)
        state, _ = self.advance_donating(state, params0, inputs, max_steps, never)
        return self.finish(state, params0, inputs)

    def _solve(self, params0, inputs: Inputs, max_steps) -> Solution:
        problem, method, tol, flat0, unravel = self._setup(params0, inputs)
        path = self.checked["path"]
        state = jax.lax.optimization_barrier(loop.init(method, problem, path, flat0, tol))
        state = loop.run(method, problem, path, tol, state, max_steps)
        state = jax.lax.optimization_barrier(state)
        return self._solution(state, method.final_point(problem, state.method_state), problem, tol)

    def _start(self, params0, inputs: Inputs):
        problem, method, tol, flat0, unravel = self._setup(params0, inputs)
        path = self.checked["path"]
        state = jax.lax.optimization_barrier(loop.init(method, problem, path, flat0, tol))
        return state, self._snapshot(method, state, unravel)

    def _advance(self, state, params0, inputs: Inputs, max_steps, pause_at):
        problem, method, tol, _, unravel = self._setup(params0, inputs)
        path = self.checked["path"]
        state = _with_method_state(state, method.open_segment(state.method_state))
        state = loop.run(method, problem, path, tol, state, max_steps, pause_at)
        state = jax.lax.optimization_barrier(state)
        state = _with_method_state(state, method.close_segment(problem, state.method_state))
        return state, self._snapshot(method, state, unravel)

    def _finish(self, state, params0, inputs: Inputs, params=None) -> Solution:
        """The ``Solution`` at the state's point, or at ``params`` (flat) when given."""
        problem, method, tol, _, _ = self._setup(params0, inputs)
        return self._solution(
            state, method.final_point(problem, state.method_state, params), problem, tol
        )

    def _tangent(self, solution: Solution, params0, inputs: Inputs, arg_tangents: list):
        """The tangents of ``solution``'s parameters (a pytree like them), cost, residual (like
        it), gradient and covariance along ``arg_tangents``, the tangents of the differentiable
        arguments (``None`` elsewhere), by the implicit function theorem (``nlls.implicit``)."""
        problem = self._setup(params0, inputs)[0]
        differentiable = [
            a if t is not None else None for a, t in zip(inputs.args, arg_tangents, strict=True)
        ]
        fixed = [
            None if t is not None else a for a, t in zip(inputs.args, arg_tangents, strict=True)
        ]

        def problem_at(args):
            merged = [a if f is None else f for a, f in zip(args, fixed, strict=True)]
            return dataclasses.replace(problem, args=tuple(self.assemble(merged)))

        params, unravel_params = ravel_pytree(solution.params)
        residual, unravel_residual = ravel_pytree(solution.residual)
        free = None
        if solution.active_bounds is not None:  # parameters held by a bound do not move
            active = jnp.concatenate(
                [jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(solution.active_bounds)]
            )
            free = (active == 0).astype(params.dtype)
        params_change, cost, residual_change, grad, covariance = implicit.tangents(
            problem_at,
            differentiable,
            arg_tangents,
            params,
            residual,
            self.checked["path"],
            self.setup.covariance,
            free,
        )
        return (
            unravel_params(params_change),
            cost,
            unravel_residual(residual_change),
            grad,
            covariance,
        )

    def _describe(self, state, params0):
        """The snapshot of a state obtained elsewhere (a checkpoint, or an interrupted segment)."""
        return self._snapshot(self.method, state, ravel_pytree(params0)[1])

    def _snapshot(self, method, state: loop.LoopState, unravel):
        return pack_snapshot(state, method.damping_value(state.method_state), unravel)

    def _solution(self, state: loop.LoopState, point, problem: FlatProblem, tol) -> Solution:
        samples = problem.samples
        full_args = problem.args if samples is None else (*problem.args, *samples.data)
        shapes = eqx.filter_eval_shape(
            self.residual, problem.unravel_params(point.params), *full_args
        )
        status = state.status
        covariance = None
        if self.setup.covariance is not None:
            jac = point.jac  # the model's J̃ (J for the linear loss), as scipy's curve_fit uses
            if jac is None:  # matrix-free steps, first-order methods
                dense = uncertainty.dense_jacobian(problem, point.params)
                jac = problem.model(point.plain, dense)[1]
            absolute = self.setup.covariance == "absolute"
            covariance = uncertainty.covariance_matrix(jac, point.cost, absolute)
        active_bounds = None
        if problem.bounds is not None:
            flags = active(point.params, *problem.bounds, tol.xtol)
            active_bounds = jax.tree_util.tree_map(
                lambda leaf: leaf.astype(jnp.int32),
                problem.unravel_params(flags.astype(point.params.dtype)),
            )
        plain = point.plain
        return Solution(
            params=problem.unravel_params(point.params),
            cost=point.cost,
            residual=_unraveler(shapes)(plain),
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
                method=self.method.label,
                loss=self.setup.loss.label,
                choice=self.setup.choice,
            ),
            covariance=covariance,
            active_bounds=active_bounds,
            plain_cost=point.cost if problem.loss.linear else 0.5 * jnp.sum(plain**2),
        )


def _with_method_state(state: loop.LoopState, method_state) -> loop.LoopState:
    if method_state is state.method_state:
        return state
    return eqx.tree_at(lambda s: s.method_state, state, method_state)


def _batch_like(data, batch_size: int):
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct((batch_size, *leaf.shape[1:]), leaf.dtype), data
    )


def _batch_shape(residual, params0, args, data, batch_size: int, dtype) -> Samples:
    """The sizes of a minibatch run (``Samples`` without its data and key), after checking that the
    residual of a batch is one 1-D array with the same number of entries per sample."""
    count = checks.sample_count(data)
    try:
        shape = eqx.filter_eval_shape(residual, params0, *args, *_batch_like(data, batch_size))
    except Exception as error:  # the user's function failed to trace: say where
        raise ValueError(f"calling residual(params0, *args, *batch) failed: {error}") from error
    if not (hasattr(shape, "shape") and len(shape.shape) == 1):
        raise ValueError(
            "with batch_size the residual must return one 1-D array (the residuals of the "
            f"batch's samples, sample-major), got {shape}"
        )
    if shape.dtype != dtype:
        raise ValueError(
            f"residual returns {shape.dtype} but params0 is {dtype}: the dtypes must match"
        )
    if shape.shape[0] == 0 or shape.shape[0] % batch_size:
        raise ValueError(
            f"the residual of a batch of {batch_size} samples has {shape.shape[0]} entries: "
            "it must have the same number (k ≥ 1) per sample"
        )
    return Samples(None, None, count, batch_size, shape.shape[0] // batch_size)


def _describe_problem(method, path, jac_mode, params0, m, loss: Loss) -> str:
    treedef = jax.tree_util.tree_structure(params0)
    leaves = [
        f"{jnp.result_type(x)}{list(np.shape(x))}" for x in jax.tree_util.tree_leaves(params0)
    ]
    robust = "" if loss.linear else f"; loss={loss.label}"
    return (
        f"method={method!r}; linear={path}; jac={jac_mode}; {{tolerances}}; "
        f"params={treedef} {leaves}; residuals={m}{robust}"
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


def as_array(leaf):
    return leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)


def signature(tree):
    """Tree structure, shapes and dtypes: what a compiled program depends on. A JAX array and a
    tracer of the same shape and dtype have one signature, so a solve traced under ``jit`` or a
    derivative shares its plan with plain calls."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (
            jax.Array if isinstance(leaf, jax.Array) else type(leaf),
            np.shape(leaf),
            getattr(leaf, "dtype", None),
            getattr(leaf, "weak_type", 0),
        )
        for leaf in leaves
    )
