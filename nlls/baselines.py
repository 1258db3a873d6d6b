"""First-order baselines: Adam, SGD and L-BFGS (from optax) on the same residual, with the same
callbacks, ``History`` and ``Solution`` as ``nlls.least_squares``.

What they are for: a fair comparison of Levenberg–Marquardt with the optimisers people would otherwise
train the model with. ``adam``, ``sgd`` and ``lbfgs`` take ``residual(params, *args)``, ``params0`` and
``args`` exactly as ``least_squares`` does, run the optimiser in one compiled loop, and report what LM
reports, in the same units, so that two ``History`` objects (cost against step or against wall time)
can be drawn on one plot.

The loss and what is reported. The optimisers minimise the mean squared residual

    loss(θ) = mean(r(θ)²) = (2/m) · ½‖r(θ)‖²,        ∇loss = (2/m) Jᵀr,

which is what an optax user writes, so learning rates from the literature carry over. Everything
reported is in least-squares units, like every nlls solve: ``cost`` (``StepInfo.cost``,
``Solution.cost``) is ``½‖r‖²``, ``grad`` and ``grad_norm`` are ``Jᵀr`` and ``‖Jᵀr‖∞`` (the gradient
of ``½‖r‖²``), and ``gtol`` tests ``‖Jᵀr‖∞ ≤ gtol`` as in ``nlls.termination``. Adam and SGD evaluate
``r`` and ``Jᵀr`` at each new point with one VJP; L-BFGS takes the value and gradient of the loss at
the new point from its zoom line search (``optax.value_and_grad_from_state``) and rescales them.

Counts (``Solution.stats``): ``steps`` is the number of optimiser updates made; ``nfev`` and
``njev`` count evaluations of the residual and of its gradient, one each at the start and then one
each per Adam or SGD update, or one each per line-search trial of L-BFGS (``num_linesearch_steps`` in
optax's state); ``rejected`` is 0, or 1 when the solve ended at a non-finite point (below);
``linear`` is ``"none"`` and ``jac`` is ``"rev"``. ``StepInfo.damping`` is the learning rate (Adam,
SGD) or the step size of the last line search (L-BFGS; 1, its first guess, at the start).

Statuses: ``GTOL``; ``MAX_STEPS`` after ``max_steps`` updates; ``NONFINITE_TRIALS`` when an update
reaches a point where the loss or its gradient is not finite: that update is discarded and the
solve ends at the last finite point (not a success, and never a NaN result); ``CALLBACK``,
``TIME_LIMIT`` and ``INTERRUPTED`` as with ``least_squares``. A non-finite start raises
``ValueError``. ``gtol = 0`` (the Adam and SGD default) stops only at an exactly zero gradient.

Segments. The updates run in a compiled ``lax.while_loop`` that can pause after any update. Without
callbacks or ``max_time`` one call of it does the whole run (between a compiled start, which
evaluates ``params0``, and a compiled finish): no Python per update. With them, the host driver of
``least_squares`` (``nlls.driver``) runs the same program ``callback_every`` updates at a time and
calls the callbacks in between (``on_start``, ``on_end``, ``restore``, ``History`` returned as
``Solution.history``, Ctrl-C ending the run after the current segment), at the cost of two small
transfers to the host per segment. Since both ways run the same compiled loop, the iterates are the
same, bit for bit, with any ``callback_every`` or without callbacks. ``StepInfo.solver_state`` is the
baseline's ``nlls.loop.LoopState`` (optax's state inside) and ``StepInfo.signature`` is empty:
``nlls.Checkpoint`` and ``resume`` are for ``least_squares`` only. Without callbacks and ``max_time``
the baselines also run under ``jax.jit`` and ``jax.vmap`` (a non-finite start is then reported as
``Status.NONFINITE_START``, not raised).

Compilation. Programs are cached by call signature, as in ``least_squares``: the residual function,
the tree structure, shapes and dtypes of ``params0`` and ``args`` (non-array arguments by value), and
the structural options (``momentum`` given or not, ``nesterov``, ``memory_size``). The numerical
options (learning rate, ``b1``, ``b2``, ``eps``, ``momentum``, ``gtol``) are traced, so a sweep over
learning rates compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .callbacks import Checkpoint, StepInfo
from .driver import HostPlan, pack_snapshot, run_plan
from .loop import LoopState
from .problem import FlatProblem
from .result import Solution, Stats
from .solve import (
    _as_array,
    _check_callbacks,
    _check_params,
    _check_residual,
    _signature,
    assemble_args,
    split_args,
)
from .solve import _unraveler as _residual_unraveler
from .solvers.base import cost_of
from .termination import Status, succeeded


def adam(
    residual: Callable[..., Any],
    params0: Any,
    args: tuple = (),
    *,
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    max_steps: int = 1000,
    gtol: float = 0.0,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
) -> Solution:
    """Minimise ``mean(residual(params, *args)²)`` with Adam (``optax.adam``); report as
    ``least_squares`` does (cost ``½‖r‖²``, gradient ``Jᵀr``; see the module docstring).

    Args:
        residual, params0, args: as for ``nlls.least_squares``.
        learning_rate, b1, b2, eps: Adam's step size, moment decay rates and denominator offset
            (optax's defaults, except the learning rate).
        max_steps: the number of updates, unless another test ends the run first.
        gtol: stop when ``‖Jᵀr‖∞ ≤ gtol`` (``Status.GTOL``); the default 0 only at an exactly zero
            gradient.
        callbacks, callback_every, max_time: as for ``nlls.least_squares``; ``callback_every``
            counts updates. ``nlls.Checkpoint`` is refused.

    Returns:
        An ``nlls.Solution`` (``stats.steps`` updates made, ``stats.nfev = stats.njev`` evaluations).

    Raises:
        ValueError: a non-finite start, a residual of another dtype than the parameters, a bad
            option, or a ``Checkpoint`` among the callbacks.

    Example:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> sol = baselines.adam(lambda p, x, y: p[0] * x + p[1] - y, jnp.zeros(2), (x, 2 * x + 1),
        ...                      learning_rate=0.05, max_steps=2000)
        >>> print(f"{float(sol.params[0]):.3f} {float(sol.params[1]):.3f} {int(sol.stats.steps)}")
        2.000 1.000 2000
    """
    hyper = {
        "learning_rate": _positive("learning_rate", learning_rate),
        "b1": _decay("b1", b1),
        "b2": _decay("b2", b2),
        "eps": _non_negative("eps", eps),
    }
    return _minimise(
        _Kind("adam"),
        hyper,
        residual,
        params0,
        args,
        gtol=gtol,
        max_steps=max_steps,
        callbacks=callbacks,
        callback_every=callback_every,
        max_time=max_time,
    )


def sgd(
    residual: Callable[..., Any],
    params0: Any,
    args: tuple = (),
    *,
    learning_rate: float = 1e-2,
    momentum: float | None = None,
    nesterov: bool = False,
    max_steps: int = 1000,
    gtol: float = 0.0,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
) -> Solution:
    """Minimise ``mean(residual(params, *args)²)`` with gradient descent (``optax.sgd``), with
    heavy-ball or Nesterov momentum if asked; report as ``least_squares`` does.

    Args:
        residual, params0, args: as for ``nlls.least_squares``.
        learning_rate: the step size on the mean-squared loss.
        momentum: the decay of the momentum trace, in ``[0, 1)``; ``None`` for plain gradient
            descent.
        nesterov: Nesterov momentum (needs ``momentum``).
        max_steps, gtol, callbacks, callback_every, max_time: as for ``adam``.

    Returns:
        An ``nlls.Solution``.

    Raises:
        ValueError: as for ``adam``; also ``nesterov=True`` without ``momentum``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> f = lambda p, x, y: p[0] * x + p[1] - y
        >>> sol = baselines.sgd(f, jnp.zeros(2), (x, 2 * x + 1), learning_rate=0.5, momentum=0.9,
        ...                     max_steps=300)
        >>> print(f"{float(sol.params[0]):.3f} {float(sol.params[1]):.3f}")
        2.000 1.000
    """
    if not isinstance(nesterov, bool | np.bool_):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum (e.g. momentum=0.9)")
    hyper = {"learning_rate": _positive("learning_rate", learning_rate)}
    if momentum is not None:
        hyper["momentum"] = _decay("momentum", momentum)
    kind = _Kind("sgd", momentum=momentum is not None, nesterov=bool(nesterov))
    return _minimise(
        kind,
        hyper,
        residual,
        params0,
        args,
        gtol=gtol,
        max_steps=max_steps,
        callbacks=callbacks,
        callback_every=callback_every,
        max_time=max_time,
    )


def lbfgs(
    residual: Callable[..., Any],
    params0: Any,
    args: tuple = (),
    *,
    memory_size: int = 10,
    max_steps: int = 1000,
    gtol: float = 1e-8,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
) -> Solution:
    """Minimise ``mean(residual(params, *args)²)`` with L-BFGS (``optax.lbfgs``, its default zoom
    line search); report as ``least_squares`` does.

    The value and gradient at each new point come from the line search's last trial
    (``optax.value_and_grad_from_state``), so an update costs one evaluation per line-search trial,
    all counted in ``nfev`` and ``njev``.

    Args:
        residual, params0, args: as for ``nlls.least_squares``.
        memory_size: the number of past updates kept to approximate the inverse Hessian.
        max_steps: the number of updates (each one line search), unless another test ends the run.
        gtol: stop when ``‖Jᵀr‖∞ ≤ gtol`` (``Status.GTOL``), as ``least_squares``' ``gtol``. In
            float32 the gradient of a problem with a non-zero residual rarely gets that small: give
            a larger ``gtol`` or fewer ``max_steps`` there.
        callbacks, callback_every, max_time: as for ``adam``.

    Returns:
        An ``nlls.Solution``.

    Raises:
        ValueError: as for ``adam``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> rosenbrock = lambda p: jnp.array([1.0 - p[0], 10.0 * (p[1] - p[0] ** 2)])
        >>> sol = baselines.lbfgs(rosenbrock, jnp.array([-1.2, 1.0]))
        >>> print(sol.message.split(":")[0], jnp.round(sol.params, 6))
        gtol [1. 1.]
    """
    if isinstance(memory_size, bool) or not (
        isinstance(memory_size, int | np.integer) and memory_size >= 1
    ):
        raise ValueError(f"memory_size must be a positive int, got {memory_size!r}")
    kind = _Kind("lbfgs", memory_size=int(memory_size))
    return _minimise(
        kind,
        {},
        residual,
        params0,
        args,
        gtol=gtol,
        max_steps=max_steps,
        callbacks=callbacks,
        callback_every=callback_every,
        max_time=max_time,
    )


class _Kind(NamedTuple):
    """The options that change the compiled program (part of the cache key)."""

    name: str
    momentum: bool = False
    nesterov: bool = False
    memory_size: int = 0


def _optimiser(kind: _Kind, hyper: dict) -> optax.GradientTransformationExtraArgs:
    """The optax optimiser, built from traced hyperparameters inside the compiled program."""
    if kind.name == "adam":
        return optax.adam(hyper["learning_rate"], hyper["b1"], hyper["b2"], hyper["eps"])
    if kind.name == "sgd":
        return optax.sgd(hyper["learning_rate"], hyper.get("momentum"), kind.nesterov)
    return optax.lbfgs(memory_size=kind.memory_size)


def _minimise(
    kind: _Kind,
    hyper: dict,
    residual,
    params0,
    args,
    *,
    gtol,
    max_steps,
    callbacks,
    callback_every,
    max_time,
) -> Solution:
    """Validate the shared options, find or build the plan, and run it: in one call of the
    compiled loop, or through the host driver when there are callbacks or a time limit."""
    hyper = {**hyper, "gtol": _non_negative("gtol", gtol)}
    if isinstance(max_steps, bool) or not (
        isinstance(max_steps, int | np.integer) and 0 <= max_steps <= np.iinfo(np.int32).max
    ):
        raise ValueError(f"max_steps must be a non-negative int (below 2**31), got {max_steps!r}")
    callbacks = _check_callbacks(callbacks, callback_every, max_time)
    if any(isinstance(callback, Checkpoint) for callback in callbacks):
        raise ValueError(
            "Checkpoint/resume is for least_squares solves; the baselines do not save their "
            "optimiser state. Record a baseline's run with nlls.History instead."
        )
    params0 = jax.tree_util.tree_map(_as_array, params0)
    dynamic_args, static, treedef = split_args(args)  # as in least_squares
    key = (residual, _signature(params0), _signature(dynamic_args), treedef, static, kind)
    try:
        plan = _cached_plan(key)
    except TypeError:  # an unhashable argument: validate and compile without the cache
        plan = _Plan(key)
    plan.check(params0, dynamic_args)
    # The numerical options travel as traced scalars of the parameters' dtype (no promotion, and
    # no recompilation when they change).
    hyper = {name: jnp.asarray(value, plan.dtype) for name, value in hyper.items()}
    dynamic = (dynamic_args, hyper)
    return run_plan(
        plan,
        params0,
        dynamic,
        max_steps=max_steps,
        callbacks=callbacks,
        callback_every=callback_every,
        max_time=max_time,
    )


@functools.lru_cache(maxsize=128)
def _cached_plan(key):
    """Plans by call signature (see ``nlls.solve._cached_plan``)."""
    return _Plan(key)


class _Plan(HostPlan):
    """The compiled programs of one call signature, with the interface ``nlls.driver.drive`` uses:
    ``start``, ``advance`` (and ``advance_donating``), ``describe`` and ``finish``. ``dynamic`` is
    ``(array arguments, hyperparameters)``.

    A run without callbacks (``solve``) is ``start``, one call of ``advance_donating`` that never
    pauses, and ``finish``: the very loop program the driver runs in segments (in the main thread),
    so the iterates are the same by construction. (Two programs holding the same loop body may be
    fused differently by XLA, which changes the last bit of some iterates.) An L-BFGS loop, long to
    compile, is also compiled once for both uses.
    """

    def __init__(self, key):
        self.residual, _, _, self.args_treedef, self.static, self.kind = key
        self.m = None
        self.dtype = None
        self._compile()

    def check(self, params0, dynamic_args) -> None:
        """Validate the dtypes and count the residuals; runs once per plan."""
        if self.m is not None:
            return
        args = self._assemble(dynamic_args)
        dtype = _check_params(params0)
        self.m = _check_residual(self.residual, params0, args, dtype)
        self.dtype = dtype

    def _assemble(self, dynamic_args):
        return assemble_args(self.args_treedef, self.static, dynamic_args)

    def _setup(self, params0, dynamic):
        dynamic_args, hyper = dynamic
        args = self._assemble(dynamic_args)
        flat0, unravel = ravel_pytree(params0)
        problem = FlatProblem(self.residual, args, unravel, "rev")
        return problem, hyper, flat0, unravel, args

    def _start(self, params0, dynamic):
        problem, hyper, flat0, unravel, _ = self._setup(params0, dynamic)
        state = jax.lax.optimization_barrier(_init(self.kind, problem, hyper, flat0))
        return state, _snapshot(state, unravel)

    def _advance(self, state, params0, dynamic, max_steps, pause_at):
        problem, hyper, _, unravel, _ = self._setup(params0, dynamic)
        state = _run(self.kind, problem, self.m, hyper, state, max_steps, pause_at)
        state = jax.lax.optimization_barrier(state)
        return state, _snapshot(state, unravel)

    def _describe(self, state, params0):
        return _snapshot(state, ravel_pytree(params0)[1])

    def _finish(self, state, params0, dynamic, params=None) -> Solution:
        """The ``Solution`` at the state's point, or at ``params`` (flat) when given."""
        problem, _, _, _, args = self._setup(params0, dynamic)
        if params is None:
            point, residual = state.point, problem(state.point.params)
        else:
            point, residual = _evaluate(problem, params)
        return self._solution(state, point, residual, params0, args)

    def _solution(self, state: LoopState, point, residual, params0, args) -> Solution:
        unravel_residual = _residual_unraveler(eqx.filter_eval_shape(self.residual, params0, *args))
        return Solution(
            params=ravel_pytree(params0)[1](point.params),
            cost=point.cost,
            residual=unravel_residual(residual),
            grad=point.grad,
            success=succeeded(state.status),
            status=state.status,
            stats=Stats(
                steps=state.steps,
                nfev=state.nfev,
                njev=state.njev,
                rejected=state.rejected,
                linear="none",
                jac="rev",
            ),
        )


class _Point(eqx.Module):
    """An iterate with the cost ``½‖r‖²`` and the gradient ``Jᵀr`` there."""

    params: Float[Array, " n"]
    cost: Float[Array, ""]
    grad: Float[Array, " n"]


class _OptimiserState(eqx.Module):
    """``LoopState.method_state`` of a baseline: the point, optax's state, and the step size
    reported as ``StepInfo.damping``."""

    point: _Point
    opt_state: Any
    damping: Float[Array, ""]


def _evaluate(problem: FlatProblem, params: Float[Array, " n"]) -> tuple[_Point, Array]:
    """``r``, ``½‖r‖²`` and ``Jᵀr`` at ``params``: one residual evaluation and one VJP."""
    residual, pullback = jax.vjp(problem, params)
    return _Point(params, cost_of(residual), pullback(residual)[0]), residual


def _finite(point: _Point):
    return jnp.isfinite(point.cost) & jnp.all(jnp.isfinite(point.grad))


def _gradient_small(point: _Point, gtol):
    return jnp.max(jnp.abs(point.grad), initial=0.0) <= gtol


def _init(kind: _Kind, problem: FlatProblem, hyper: dict, params) -> LoopState:
    point, _ = _evaluate(problem, params)
    opt_state = _optimiser(kind, hyper).init(params)
    damping = _damping(kind, hyper, opt_state, point.cost.dtype)
    finite = jnp.all(jnp.isfinite(params)) & _finite(point)
    status = jnp.where(
        finite,
        jnp.where(_gradient_small(point, hyper["gtol"]), Status.GTOL, Status.RUNNING),
        Status.NONFINITE_START,
    )
    zero, one = jnp.asarray(0, jnp.int32), jnp.asarray(1, jnp.int32)
    state = LoopState(
        method_state=_OptimiserState(point, opt_state, damping),
        iterations=zero,
        steps=zero,
        nfev=one,
        njev=one,
        rejected=zero,
        status=status.astype(jnp.int32),
        step_norm=jnp.zeros((), params.dtype),
        accepted=jnp.asarray(False),
    )
    # optax starts some fields as weakly typed scalars, which the loop makes strong: without this
    # the first segment's program would not fit the second segment's state and would compile twice.
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, leaf.dtype), state)


def _damping(kind: _Kind, hyper: dict, opt_state, dtype):
    if kind.name == "lbfgs":
        return jnp.asarray(optax.tree.get(opt_state, "learning_rate"), dtype)
    return hyper["learning_rate"]


def _update(kind: _Kind, problem: FlatProblem, m: int, hyper: dict, state: _OptimiserState):
    """One optimiser update from ``state.point``: the new point, optax's new state, the update,
    and the evaluations it took."""
    optimiser = _optimiser(kind, hyper)
    point = state.point
    # The optimiser sees the mean squared residual: loss = (2/m)·cost, ∇loss = (2/m)·Jᵀr.
    loss, loss_grad = (2.0 / m) * point.cost, (2.0 / m) * point.grad
    if kind.name == "lbfgs":

        def loss_fn(params):
            return jnp.mean(problem(params) ** 2)

        updates, opt_state = optimiser.update(
            loss_grad, state.opt_state, point.params, value=loss, grad=loss_grad, value_fn=loss_fn
        )
        params = optax.apply_updates(point.params, updates)
        # The line search ends with the value and gradient at the new point; optax recomputes
        # them (one more evaluation) only when they are not finite.
        stored = optax.tree.get(opt_state, "value")
        new_loss, new_loss_grad = optax.value_and_grad_from_state(loss_fn)(params, state=opt_state)
        new_point = _Point(params, (m / 2.0) * new_loss, (m / 2.0) * new_loss_grad)
        trials = optax.tree.get(opt_state, "info").num_linesearch_steps
        evaluations = trials.astype(jnp.int32) + (~jnp.isfinite(stored)).astype(jnp.int32)
    else:
        updates, opt_state = optimiser.update(loss_grad, state.opt_state, point.params)
        params = optax.apply_updates(point.params, updates)
        new_point, _ = _evaluate(problem, params)
        evaluations = jnp.asarray(1, jnp.int32)
    damping = _damping(kind, hyper, opt_state, point.cost.dtype)
    return _OptimiserState(new_point, opt_state, damping), updates, evaluations


def _step(kind: _Kind, problem: FlatProblem, m: int, hyper: dict, s: LoopState) -> LoopState:
    """One update; a new point with a non-finite loss or gradient is discarded and ends the run."""
    trial, updates, evaluations = _update(kind, problem, m, hyper, s.method_state)
    finite = _finite(trial.point)
    method_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), trial, s.method_state
    )
    status = jnp.where(
        finite,
        jnp.where(_gradient_small(trial.point, hyper["gtol"]), Status.GTOL, Status.RUNNING),
        Status.NONFINITE_TRIALS,
    )
    return LoopState(
        method_state=method_state,
        iterations=s.iterations + 1,
        steps=s.steps + finite.astype(jnp.int32),
        nfev=s.nfev + evaluations,
        njev=s.njev + evaluations,
        rejected=s.rejected + (~finite).astype(jnp.int32),
        status=status.astype(jnp.int32),
        step_norm=jnp.linalg.norm(updates).astype(s.step_norm.dtype),
        accepted=finite,
    )


def _run(kind, problem, m, hyper, state: LoopState, max_steps, pause_at) -> LoopState:
    """Update until a test ends the run, ``max_steps`` updates are done, or the iteration count
    reaches ``pause_at`` (then the status stays ``RUNNING``). Pausing never changes the iterates."""

    def keep_going(s: LoopState):
        return (s.status == Status.RUNNING) & (s.steps < max_steps) & (s.iterations < pause_at)

    state = jax.lax.while_loop(keep_going, functools.partial(_step, kind, problem, m, hyper), state)
    exhausted = (state.status == Status.RUNNING) & (state.steps >= max_steps)
    return eqx.tree_at(
        lambda s: s.status,
        state,
        jnp.where(exhausted, Status.MAX_STEPS, state.status).astype(jnp.int32),
    )


def _snapshot(state: LoopState, unravel):
    """What a callback sees (``nlls.driver.pack_snapshot``); the damping is the step size."""
    return pack_snapshot(state, state.method_state.damping, unravel)


def _number(name: str, value) -> float:
    if callable(value):
        raise ValueError(f"{name} must be a number (schedules are not supported), got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _positive(name: str, value) -> float:
    number = _number(name, value)
    if not number > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return number


def _non_negative(name: str, value) -> float:
    number = _number(name, value)
    if not number >= 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return number


def _decay(name: str, value) -> float:
    number = _number(name, value)
    if not 0 <= number < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return number
