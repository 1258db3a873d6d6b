"""Minibatch training, the front end of ``nlls.fit(..., batch_size=B)``: stochastic
Levenberg–Marquardt, and minibatch Adam and SGD, on a residual that is a sum over samples.

The methods and their maths are in ``nlls.solvers.minibatch``; this module checks the options, turns
``epochs`` into the iteration budget and ``callback_every`` (in epochs) into iterations, and runs the
method through the engine's plan (``nlls.plan``) with the data as the problem's samples.

What is reported, in least-squares units as everywhere in nlls:

* ``StepInfo.cost`` (the History's ``cost``): at the start, the cost ``½‖r‖²`` of the full training
  set at ``θ₀``; afterwards, the mean over the iterations of the segment (since the last callback
  call: one epoch by default) of the batch costs scaled to the whole set, ``(m/m_𝓑)·½‖r_𝓑‖²``,
  each at the parameters before that iteration's step: the running training loss a minibatch
  trainer reports, at no extra cost. (An exact full-set cost each epoch would cost a forward pass
  over all the data, where a minibatch Adam epoch is one forward and one backward pass: not a
  small overhead. Add it with ``nlls.Metrics`` if it is wanted.)
* ``StepInfo.grad_norm``: ``‖(m/m_𝓑) J_𝓑ᵀr_𝓑‖∞`` of the last batch (the first batch at the start).
* ``StepInfo.damping``: λ of the last trial (LM; ``μ₀‖g‖`` of the first batch at the start), or the
  learning rate (Adam, SGD).
* ``Solution``: ``cost``, ``residual`` and ``grad = Jᵀr`` of the full training set at the final
  parameters, evaluated in chunks at the end; ``stats.steps`` accepted steps (updates), ``rejected``
  rejected LM trials, ``nfev``/``njev`` evaluations of a *batch* residual or Jacobian;
  ``stats.linear`` the step's path (``"none"`` for Adam and SGD).

Budget and statuses. The run ends after ``epochs`` epochs or ``max_steps`` iterations (batches,
accepted or rejected), whichever comes first (``Status.MAX_EPOCHS`` or ``Status.MAX_STEPS``); with
neither given, after 10 epochs. There are no ``ftol``/``xtol``/``gtol`` tests: batch quantities are noisy. Callbacks,
``max_time`` and Ctrl-C work as with ``least_squares`` through ``nlls.driver``; ``callback_every``
counts *epochs* (one History row per epoch by default). ``Checkpoint`` and ``resume`` are refused
(the random key and the permutation would have to be saved and matched).

Determinism. The batches depend on ``seed``, N and B only (not on the dtype), and the loop runs
as one compiled program that pauses between segments without changing the iterates: the same seed
gives the same parameters bit for bit, with callbacks or without.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from . import baselines, checks, plan
from .callbacks import Checkpoint, History, StepInfo
from .driver import Run
from .plan import Setup
from .result import Solution
from .solvers.first_order import FirstOrder
from .solvers.minibatch import MinibatchFirstOrder, StochasticLM
from .termination import Status

METHODS = ("lm", "adam", "sgd")
DEFAULT_EPOCHS = 10
LINEAR = ("auto", "normal", "min_norm")

# The options of each method, with their defaults (Adam's and SGD's are those of
# nlls.baselines.adam and nlls.baselines.sgd, checked by the tests).
LM_OPTIONS = {
    "accept_threshold": 0.1,  # η₁
    "gradient_threshold": 1e-8,  # η₂
    "damping_coefficient": None,  # μ₀; None: μ_min
    "min_damping_coefficient": 1.0,  # μ_min
    "damping_growth": 2.0,  # γ
}
FIRST_ORDER_OPTIONS = {
    "adam": {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "sgd": {"learning_rate": 1e-2, "momentum": None, "nesterov": False},
}


def train(
    method: str,
    residual: Callable[..., Any],
    params0: Any,
    args: tuple,
    data: tuple,
    *,
    batch_size: int,
    epochs: int | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    jac: str | Callable[..., Any] = "auto",
    linear: str = "auto",
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_time: float | None = None,
    **options,
) -> Solution:
    """Minimise ``½‖residual(params, *args, *data)‖²`` over minibatches of the samples in ``data``.

    ``method`` is ``"lm"`` (``StochasticLM``; ``"auto"`` chooses it), ``"adam"``, ``"sgd"`` or an optax
    ``GradientTransformation`` (``MinibatchFirstOrder``);
    ``residual(params, *args, *batch)`` returns the 1-D residuals of the samples in ``batch``
    (``data``, a tuple of pytrees of arrays with the N samples along the leading axis, indexed
    alike), ``k`` per sample, sample-major, as ``nlls.fit``'s residual does. The budget is
    ``epochs`` passes of ``⌊N/B⌋`` batches or ``max_steps`` iterations, the first reached (neither:
    10 epochs); ``seed`` seeds the permutations; ``jac`` (a function giving the ``(B·k, n)`` batch
    Jacobian, or an AD mode) and ``linear`` (``"auto"``, ``"normal"``, ``"min_norm"``) are the LM
    step's; ``callback_every`` counts epochs; ``options`` are the method's (``LM_OPTIONS``,
    ``FIRST_ORDER_OPTIONS``). Returns the ``nlls.Solution`` at the final parameters, with the
    full-data cost, residual and gradient. Raises ``ValueError`` for a bad batch size, budget, seed
    or option, data of unequal lengths, a ``Checkpoint`` among the callbacks, or a non-finite start.

    Examples:
        >>> import jax.numpy as jnp
        >>> from nlls._minibatch import train
        >>> x = jnp.linspace(0.0, 1.0, 64)
        >>> line = lambda p, x, y: p[0] * x + p[1] - y
        >>> sol = train("lm", line, jnp.zeros(2), (), (x, 3.0 * x - 1.0), batch_size=8, epochs=5)
        >>> print(jnp.round(sol.params, 6), sol.stats.linear)
        [ 3. -1.] normal
    """
    reason = ""
    if method == "auto":  # nothing in a batch tells noise from misfit: nlls's default, minibatch LM
        method, reason = "lm", "auto: minibatch Levenberg–Marquardt (with batch_size)"
    if checks.is_optax_transformation(method):
        if options:
            raise ValueError(
                f"unknown options {sorted(options)} for an optax optimiser with batch_size: "
                "configure the optimiser itself (its learning rate, schedule, ...)"
            )
        configured = MinibatchFirstOrder(FirstOrder("optax", transformation=method))
        method = "optax"
    elif not (isinstance(method, str) and method in METHODS):
        hint = (
            " (L-BFGS needs one fixed function for its line search: drop batch_size)"
            if method == "lbfgs"
            else ""
        )
        raise ValueError(
            f"with batch_size, method must be one of {METHODS} or an optax "
            f"GradientTransformation, got {method!r}{hint}"
        )
    else:
        configured = _method(method, options)
    if method != "lm" and (jac != "auto" or linear != "auto"):
        raise ValueError(f"jac and linear are options of the LM step, not of {method!r}")
    if linear not in LINEAR:
        raise ValueError(f"linear must be one of {LINEAR}, got {linear!r}")
    samples = checks.sample_count(data)
    batch_size = checks.positive_int("batch_size", batch_size)
    if batch_size > samples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {samples} samples: use at most {samples}"
        )
    if epochs is not None:
        epochs = checks.positive_int("epochs", epochs)
    if max_steps is not None:
        max_steps = checks.step_limit("max_steps", max_steps)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    callbacks = checks.callbacks(callbacks, callback_every, max_time)
    if any(isinstance(callback, Checkpoint) for callback in callbacks):
        raise ValueError(
            "Checkpoint/resume is not supported with batch_size (the random key and the epoch's "
            "permutation are not saved); record the run with nlls.History instead"
        )
    per_epoch = samples // batch_size
    if epochs is None and max_steps is None:
        epochs = DEFAULT_EPOCHS
    budget = min(
        max_steps if max_steps is not None else checks.INT32_MAX,
        epochs * per_epoch if epochs is not None else checks.INT32_MAX,
        checks.INT32_MAX,
    )
    if any(isinstance(callback, History) for callback in callbacks):
        callbacks = (*callbacks, _EpochColumn(per_epoch))
    setup = Setup(method=configured, jac=jac, linear=linear, batch_size=batch_size, choice=reason)
    every = min(callback_every * per_epoch, checks.INT32_MAX)
    by_epochs = epochs is not None and (max_steps is None or epochs * per_epoch <= max_steps)
    exhausted = Status.MAX_EPOCHS if by_epochs else Status.MAX_STEPS
    run = Run(int(budget), callbacks, every, max_time, exhausted=exhausted)
    key = jax.random.key(seed)
    return plan.solve(residual, params0, args, setup, run, data=data, key=key)


def _method(name: str, options: dict):
    """The configured method, its numerical options validated (and traced in the program)."""
    known = LM_OPTIONS if name == "lm" else FIRST_ORDER_OPTIONS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {unknown} for method={name!r} with "
            f"batch_size; the options are {sorted(known)}"
            + (
                " (ftol, xtol and gtol do not apply: the budget is epochs or max_steps)"
                if {"ftol", "xtol", "gtol"} & set(unknown)
                else ""
            )
        )
    given = {**known, **options}
    if name == "adam":
        return MinibatchFirstOrder(baselines.adam_method(**given))
    if name == "sgd":
        return MinibatchFirstOrder(baselines.sgd_method(**given))
    if given["damping_coefficient"] is None:
        given["damping_coefficient"] = given["min_damping_coefficient"]
    eta1 = checks.number("accept_threshold", given["accept_threshold"])
    growth = checks.number("damping_growth", given["damping_growth"])
    start = checks.positive("damping_coefficient", given["damping_coefficient"])
    smallest = checks.positive("min_damping_coefficient", given["min_damping_coefficient"])
    if not 0 < eta1 < 1:
        raise ValueError(f"accept_threshold must be in (0, 1), got {given['accept_threshold']!r}")
    if not growth > 1:
        raise ValueError(f"damping_growth must be above 1, got {given['damping_growth']!r}")
    if smallest > start:
        raise ValueError(
            "min_damping_coefficient must not exceed damping_coefficient, got "
            f"{given['min_damping_coefficient']!r} > {given['damping_coefficient']!r}"
        )
    eta2 = checks.non_negative("gradient_threshold", given["gradient_threshold"])
    traced = lambda value: np.asarray(value, np.float64)  # noqa: E731
    return StochasticLM(
        accept_threshold=traced(eta1),
        gradient_threshold=traced(eta2),
        damping_coefficient=traced(start),
        min_damping_coefficient=traced(smallest),
        damping_growth=traced(growth),
    )


class _EpochColumn:
    """Adds ``epoch`` (iterations / batches per epoch) to every History row."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch

    def _record(self, info: StepInfo) -> None:
        info.metrics["epoch"] = info.iteration / self.steps_per_epoch

    def on_start(self, info: StepInfo) -> None:
        self._record(info)

    def __call__(self, info: StepInfo) -> None:
        self._record(info)

    def on_end(self, info: StepInfo) -> None:
        self._record(info)
