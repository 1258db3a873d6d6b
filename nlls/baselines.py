"""First-order baselines: Adam, SGD and L-BFGS (from optax) on the same residual, with the same
callbacks, ``History`` and ``Solution`` as ``nlls.least_squares``.

What they are for: a fair comparison of Levenberg–Marquardt with the optimisers people would otherwise
train the model with. ``adam``, ``sgd`` and ``lbfgs`` take ``residual(params, *args)``, ``params0`` and
``args`` exactly as ``least_squares`` does, run the optimiser in one compiled loop, and report what LM
reports, in the same units, so that two ``History`` objects (cost against step or against wall time)
can be drawn on one plot.

The loss and what is reported. The step is ``nlls.solvers.first_order.FirstOrder`` (optax on
``mean(r²)``, whose gradient is ``(2/m) Jᵀr``: learning rates from the literature carry over), run by
the same plan, loop and driver as ``least_squares``. Everything reported is in least-squares units:
``cost`` (``StepInfo.cost``, ``Solution.cost``) is ``½‖r‖²``, ``grad`` and ``grad_norm`` are ``Jᵀr``
and ``‖Jᵀr‖∞``, and ``gtol`` tests ``‖Jᵀr‖∞ ≤ gtol`` as in ``nlls.termination``.

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

Segments and compilation: as ``least_squares`` (``nlls.plan``, ``nlls.driver``). Without callbacks
or ``max_time`` a run is one call of the compiled loop between a compiled start and finish (and
works under ``jax.jit`` and ``jax.vmap``, where a non-finite start is reported as
``Status.NONFINITE_START``); with them the driver runs the same loop ``callback_every`` updates at a
time, so the iterates are the same bit for bit. ``Checkpoint`` and ``resume`` are for
``least_squares`` only (``StepInfo.signature`` is empty). Programs are cached by call signature and
by the structural options (``momentum`` given or not, ``nesterov``, ``memory_size``); the numerical
options (learning rate, ``b1``, ``b2``, ``eps``, ``momentum``) and ``gtol`` are traced, so a sweep
over learning rates compiles once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import checks, plan
from .callbacks import Checkpoint, StepInfo
from .driver import Run
from .plan import Setup
from .result import Solution
from .solvers.first_order import FirstOrder
from .termination import Tolerances


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
            (optax's defaults, except the learning rate). ``learning_rate`` may be an optax
            schedule (a function of the update count; ``StepInfo.damping`` then reports its
            value); a number is traced (a sweep compiles once), a schedule is static.
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

    Examples:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> sol = baselines.adam(lambda p, x, y: p[0] * x + p[1] - y, jnp.zeros(2), (x, 2 * x + 1),
        ...                      learning_rate=0.05, max_steps=2000)
        >>> print(f"{float(sol.params[0]):.3f} {float(sol.params[1]):.3f} {int(sol.stats.steps)}")
        2.000 1.000 2000
    """
    run = Run(checks.step_limit("max_steps", max_steps), callbacks, callback_every, max_time)
    return _run(adam_method(learning_rate, b1, b2, eps), residual, params0, args, gtol, run)


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
        learning_rate: the step size on the mean-squared loss, or an optax schedule.
        momentum: the decay of the momentum trace, in ``[0, 1)``; ``None`` for plain gradient
            descent.
        nesterov: Nesterov momentum (needs ``momentum``).
        max_steps, gtol, callbacks, callback_every, max_time: as for ``adam``.

    Returns:
        An ``nlls.Solution``.

    Raises:
        ValueError: as for ``adam``; also ``nesterov=True`` without ``momentum``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> f = lambda p, x, y: p[0] * x + p[1] - y
        >>> sol = baselines.sgd(f, jnp.zeros(2), (x, 2 * x + 1), learning_rate=0.5, momentum=0.9,
        ...                     max_steps=300)
        >>> print(f"{float(sol.params[0]):.3f} {float(sol.params[1]):.3f}")
        2.000 1.000
    """
    run = Run(checks.step_limit("max_steps", max_steps), callbacks, callback_every, max_time)
    return _run(sgd_method(learning_rate, momentum, nesterov), residual, params0, args, gtol, run)


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

    Examples:
        >>> import jax.numpy as jnp
        >>> from nlls import baselines
        >>> rosenbrock = lambda p: jnp.array([1.0 - p[0], 10.0 * (p[1] - p[0] ** 2)])
        >>> sol = baselines.lbfgs(rosenbrock, jnp.array([-1.2, 1.0]))
        >>> print(sol.message.split(":")[0], jnp.round(sol.params, 6))
        gtol [1. 1.]
    """
    method = FirstOrder("lbfgs", memory_size=checks.positive_int("memory_size", memory_size))
    run = Run(checks.step_limit("max_steps", max_steps), callbacks, callback_every, max_time)
    return _run(method, residual, params0, args, gtol, run)


def optax_optimiser(
    residual: Callable[..., Any],
    params0: Any,
    args: tuple = (),
    optimiser: Any = None,
    *,
    max_steps: int = 1000,
    gtol: float = 0.0,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
) -> Solution:
    """Minimise ``mean(residual(params, *args)²)`` with any optax ``GradientTransformation``
    (``optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))``, an optimiser with a
    schedule, ``optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)``); report as
    ``least_squares`` does. ``fit(..., method=transformation)`` comes here.

    The optimiser's ``update`` is given the gradient of ``mean(r²)`` and, when it takes extra
    arguments (``GradientTransformationExtraArgs``: a line search), ``value``, ``grad`` and
    ``value_fn`` too. ``nfev``/``njev`` count the evaluations nlls makes (one each per update), not
    those inside the optimiser's own line search. ``StepInfo.damping`` is the optimiser's
    ``learning_rate`` when its state holds one (``optax.inject_hyperparams``), NaN otherwise. The
    transformation is part of the compiled program: the same object compiles once.

    Args:
        residual, params0, args: as for ``nlls.least_squares``.
        optimiser: the ``optax.GradientTransformation``.
        max_steps, gtol, callbacks, callback_every, max_time: as for ``adam``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from nlls import baselines
        >>> x = jnp.linspace(0.0, 1.0, 20)
        >>> clipped_adam = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05))
        >>> sol = baselines.optax_optimiser(lambda p, x, y: p[0] * x + p[1] - y, jnp.zeros(2),
        ...                                 (x, 2 * x + 1), clipped_adam, max_steps=2000)
        >>> print(f"{float(sol.params[0]):.3f} {float(sol.params[1]):.3f} {sol.stats.method}")
        2.000 1.000 optax
    """
    if not checks.is_optax_transformation(optimiser):
        raise TypeError(
            "optimiser must be an optax GradientTransformation such as optax.adam(1e-3), got "
            f"{optimiser!r}"
        )
    method = FirstOrder("optax", transformation=optimiser)
    run = Run(checks.step_limit("max_steps", max_steps), callbacks, callback_every, max_time)
    return _run(method, residual, params0, args, gtol, run)


def adam_method(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8) -> FirstOrder:
    """Adam with validated, traced options (``nlls.fit``'s minibatch Adam uses it too); a
    schedule as ``learning_rate`` is static."""
    return FirstOrder(
        "adam",
        learning_rate=_traced(checks.learning_rate(learning_rate)),
        b1=_traced(checks.fraction("b1", b1)),
        b2=_traced(checks.fraction("b2", b2)),
        eps=_traced(checks.non_negative("eps", eps)),
    )


def sgd_method(learning_rate=1e-2, momentum=None, nesterov=False) -> FirstOrder:
    """SGD with validated, traced options."""
    nesterov = checks.flag("nesterov", nesterov)
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum (e.g. momentum=0.9)")
    return FirstOrder(
        "sgd",
        learning_rate=_traced(checks.learning_rate(learning_rate)),
        momentum=None if momentum is None else _traced(checks.fraction("momentum", momentum)),
        nesterov=nesterov,
    )


def _traced(value: float) -> np.ndarray:
    """An option as an array, which the plan traces (a new value does not compile anew) and casts
    to the parameters' dtype (a float64 array here, so nothing is lost before that). A schedule
    (a function) is left as it is: static."""
    return value if callable(value) else np.asarray(value, np.float64)


def _run(method: FirstOrder, residual, params0, args, gtol, run: Run) -> Solution:
    """Check what every baseline shares and run ``method`` through the engine's plan."""
    if any(isinstance(callback, Checkpoint) for callback in run.callbacks):
        raise ValueError(
            "Checkpoint/resume is for least_squares solves; the baselines do not save their "
            "optimiser state. Record a baseline's run with nlls.History instead."
        )
    tolerances = Tolerances(0.0, 0.0, checks.tolerance("gtol", gtol))
    args = checks.args_tuple(args)
    return plan.solve(residual, params0, args, Setup(method=method), run, tolerances=tolerances)
