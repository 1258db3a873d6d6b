"""Minibatch training: stochastic Levenberg–Marquardt, and minibatch Adam and SGD, on a residual that
is a sum over samples. ``nlls.fit(..., batch_size=B)`` runs through here.

The problem. The residual stacks the residuals of N samples, ``k`` per sample (sample-major), so the
cost is a sum over samples,

    f(θ) = ½‖r(θ)‖² = Σᵢ ½‖rᵢ(θ)‖²,        m = N·k residuals,

and a batch ``𝓑`` of ``B`` samples gives the batch cost ``f_𝓑(θ) = ½‖r_𝓑(θ)‖²`` with ``m_𝓑 = B·k``
residuals, its Jacobian ``J_𝓑`` (``m_𝓑 × n``, per-sample blocks) and gradient ``g_𝓑 = J_𝓑ᵀ r_𝓑``.
``(m/m_𝓑)·f_𝓑`` and ``(m/m_𝓑)·g_𝓑`` are unbiased estimates of ``f`` and ``∇f = Jᵀr``.

Batches. Each epoch draws a permutation of the N samples (``jax.random.permutation``; the key
starts at ``jax.random.key(seed)`` and is split once per epoch) and cuts it into ``⌊N/B⌋`` batches of
``B`` consecutive entries. The ``N mod B`` samples left at the end of a permutation are dropped for
that epoch (never a short batch, so every step compiles to one shape); a new permutation is drawn
for the next epoch, so which samples are dropped changes from epoch to epoch, and with ``B`` dividing
``N`` every sample is used exactly once per epoch. An *iteration* is one batch, accepted or not; an
epoch is ``⌊N/B⌋`` iterations.

Stochastic Levenberg–Marquardt (Bergou, Diouane, Kungurtsev & Royer 2021, "A stochastic
Levenberg–Marquardt method using random models with complexity results", SIAM/ASA J. Uncertainty
Quantification, arXiv:1807.02176, Algorithm 1), with the model and both function estimates taken on
the iteration's batch. At iteration ``t``, with ``r, J, g`` those of the batch at ``θ``:

    λ = μ ‖g‖₂                                     (damping tied to the gradient norm)
    (JᵀJ + λ I) δ = −g                              (the damped step, D = I)
    pred = ½‖r‖² − ½‖r + Jδ‖² = ½‖Jδ‖² + λ‖δ‖²      (exact for the damped step, no cancellation)
    ρ = (½‖r(θ)‖² − ½‖r(θ + δ)‖²) / pred            (on the same batch)
    accept  ⇔  ρ ≥ η₁  and  ‖g‖/m_𝓑 ≥ η₂/μ
    accepted: θ ← θ + δ, μ ← max(μ_min, μ/γ);   rejected: θ unchanged, μ ← γ μ.

Why ``λ = μ‖g‖``: the step then does not change when the cost is scaled (``J`` and ``r`` by ``√c``
scale ``JᵀJ``, ``g`` and ``λ`` alike by ``c``), and ``‖δ‖ ≤ ‖g‖/λ = 1/μ``, so ``1/μ`` is a trust
radius: the paper's analysis borrows that of probabilistic trust-region methods through it. The
gradient test uses the mean-per-residual gradient ``g/m_𝓑``, the gradient of ``½·mean(r_𝓑²)``, so
that ``η₂`` does not depend on ``B``; it reads ``λ/m_𝓑 ≥ η₂``: a step is accepted only when its
damping, per residual, is at least ``η₂`` (the paper's condition that the model gradient is not
small against the trust radius ``1/μ``). ``μ`` is kept in ``[μ_min, 1/tiny]``. A step whose trial
cost is not finite has ``ρ = −∞`` and is rejected like any other (``nlls.damping.gain_ratio``).

Choosing μ_min. The gain ratio is measured on the batch the step was fitted to, so it cannot see a
step that fits the batch at the expense of the other samples. With more parameters than a batch has
residuals, a lightly damped step (nearly the minimum-norm step that interpolates the batch) is such
a step when the targets are noisy. ``μ_min`` caps the step length at ``1/μ_min`` (in the
parameters' units) and plays the part of a learning rate: it is the option to tune (default 1). On
the 10⁵-sample regression of ``benchmarks/stochastic.py`` (4801 parameters, B = 128), with noisy
targets the best values were 1–10 (after four epochs μ_min = 0.03 left the validation MSE at 1.4×
the noise variance, μ_min = 1 at 1.05×; μ_min = 10⁻⁶ at B = 256 left it near 8×); with exact
targets, where every batch's interpolating step moves toward the same solution, the smallest value
tried (0.03) was best. ``η₂`` would act through rejections, which waste their batch, so it is left
small (default 10⁻⁸).

The linear algebra is ``nlls.linear``'s, on the batch Jacobian with ``D = I``: the ``m_𝓑 × m_𝓑``
minimum-norm system ``(JJᵀ + λI) z = r``, ``δ = −Jᵀz`` when ``m_𝓑 < n`` (a network with more
parameters than a batch has residuals: no ``n × n`` matrix), the normal equations (QR for small
``n``, Cholesky of the Gram matrix otherwise) when ``m_𝓑 ≥ n``; ``linear=`` names one. The batch
Jacobian comes from ``jac``: ``nlls.fit`` gives the per-sample Jacobian (one batched forward and
backward pass over the batch).

Minibatch Adam and SGD (optax, as ``nlls.baselines``) take the same batches: one update per batch
from the gradient of the batch's mean squared residual, ``∇ mean(r_𝓑²) = (2/m_𝓑) J_𝓑ᵀr_𝓑``, the
loss an optax user writes. A batch whose loss or gradient is not finite ends the run
(``Status.NONFINITE_TRIALS``) without an update. L-BFGS has no minibatch form here (its line search
needs one fixed function).

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
accepted or rejected), whichever comes first (``Status.MAX_STEPS``); with neither given, after 10
epochs. There are no ``ftol``/``xtol``/``gtol`` tests: batch quantities are noisy. Callbacks,
``max_time`` and Ctrl-C work as with ``least_squares`` through ``nlls.driver``; ``callback_every``
counts *epochs* (one History row per epoch by default). ``Checkpoint`` and ``resume`` are refused
(the random key and the permutation would have to be saved and matched).

Determinism. The batches depend on ``seed``, N and B only (not on the dtype), and the loop runs
as one compiled program that pauses between segments without changing the iterates: the same seed
gives the same parameters bit for bit, with callbacks or without.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from . import baselines
from .callbacks import Checkpoint, History, StepInfo
from .damping import gain_ratio
from .driver import HostPlan, pack_snapshot, run_plan
from .linear import factorize
from .loop import LoopState
from .result import Solution, Stats
from .solve import (
    _as_array,
    _check_callbacks,
    _check_params,
    _signature,
    assemble_args,
    split_args,
)
from .termination import Status, succeeded

METHODS = ("lm", "adam", "sgd")
DEFAULT_EPOCHS = 10
LINEAR = ("auto", "normal", "min_norm")
JAC_MODES = ("auto", "fwd", "rev")
# Samples per chunk of the full-data evaluations (the start's cost, the final Solution).
CHUNK = 4096

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


def minimise(
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

    Args:
        method: ``"lm"`` (stochastic Levenberg–Marquardt), ``"adam"`` or ``"sgd"``; see the module
            docstring.
        residual: ``residual(params, *args, *batch)`` returns the 1-D residual vector of the
            samples in ``batch`` (``data`` with every leaf indexed by the same sample indices),
            ``k`` entries per sample, sample-major. ``nlls.fit``'s residual is of this kind.
        params0: the starting point, a pytree of floating arrays of one dtype.
        args: arguments shared by every sample (arrays traced, other leaves static).
        data: a tuple of pytrees of arrays (``None`` allowed) with the samples along the leading
            axis, all of the same length N.
        batch_size: B, samples per batch, ``1 ≤ B ≤ N``.
        epochs, max_steps: the budget: ``epochs`` passes of ``⌊N/B⌋`` batches, or ``max_steps``
            iterations (batches); the first reached ends the run. Neither: 10 epochs.
        seed: seeds ``jax.random.key`` for the per-epoch permutations.
        jac: the batch Jacobian: ``jac(params, *args, *batch)`` returning the ``(B·k, n)``
            Jacobian of the batch residual with respect to the flattened parameters, or
            ``"auto"``, ``"fwd"``, ``"rev"`` (``jax.jacfwd``/``jax.jacrev`` of the batch residual;
            ``"auto"``: forward when ``n ≤ B·k``). LM only.
        linear: ``"auto"`` (``"min_norm"`` when ``B·k < n``, else ``"normal"``), ``"normal"`` or
            ``"min_norm"``. LM only.
        callbacks, max_time: as for ``nlls.least_squares``; ``Checkpoint`` is refused.
        callback_every: epochs between callback calls (one History row per epoch by default).
        options: LM: ``accept_threshold`` (η₁, default 0.1), ``gradient_threshold`` (η₂, 1e-8),
            ``damping_coefficient`` (μ₀, default μ_min), ``min_damping_coefficient`` (μ_min, 1),
            ``damping_growth`` (γ, 2). Adam: ``learning_rate`` (1e-3), ``b1``, ``b2``, ``eps``.
            SGD: ``learning_rate`` (1e-2), ``momentum``, ``nesterov``.

    Returns:
        An ``nlls.Solution`` at the final parameters, with the full-data cost, residual and
        gradient (see the module docstring for the counts).

    Raises:
        ValueError: a bad batch size, budget, seed or option, data of unequal lengths, a
            ``Checkpoint`` among the callbacks, or a non-finite start (parameters, or the full-data
            cost or first batch gradient at them).

    Example:
        >>> import jax.numpy as jnp
        >>> from nlls import stochastic
        >>> x = jnp.linspace(0.0, 1.0, 64)
        >>> line = lambda p, x, y: p[0] * x + p[1] - y
        >>> sol = stochastic.minimise("lm", line, jnp.zeros(2), (), (x, 3.0 * x - 1.0),
        ...                           batch_size=8, epochs=5)
        >>> print(jnp.round(sol.params, 6), sol.stats.linear)
        [ 3. -1.] normal
    """
    if not (isinstance(method, str) and method in METHODS):
        hint = (
            " (L-BFGS needs one fixed function for its line search: drop batch_size)"
            if method == "lbfgs"
            else ""
        )
        raise ValueError(f"with batch_size, method must be one of {METHODS}, got {method!r}{hint}")
    hyper, kind = _hyperparameters(method, options)
    if method != "lm" and (jac != "auto" or linear != "auto"):
        raise ValueError(f"jac and linear are options of the LM step, not of {method!r}")
    if linear not in LINEAR:
        raise ValueError(f"linear must be one of {LINEAR}, got {linear!r}")
    if not (callable(jac) or jac in JAC_MODES):
        raise ValueError(f"jac must be one of {JAC_MODES} or a callable, got {jac!r}")
    samples = _sample_count(data)
    batch_size = _positive_int("batch_size", batch_size)
    if batch_size > samples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {samples} samples: use at most {samples}"
        )
    if epochs is not None:
        epochs = _positive_int("epochs", epochs)
    if max_steps is not None and (
        isinstance(max_steps, bool)
        or not (isinstance(max_steps, int | np.integer) and max_steps >= 0)
    ):
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    callbacks = _check_callbacks(callbacks, callback_every, max_time)
    if any(isinstance(callback, Checkpoint) for callback in callbacks):
        raise ValueError(
            "Checkpoint/resume is not supported with batch_size (the random key and the epoch's "
            "permutation are not saved); record the run with nlls.History instead"
        )

    params0 = jax.tree_util.tree_map(_as_array, params0)
    dynamic_args, static, treedef = split_args(args)
    key = (
        kind,
        residual,
        jac,
        linear,
        batch_size,
        _signature(params0),
        _signature(dynamic_args),
        treedef,
        static,
        _signature(data),
    )
    try:
        plan = _cached_plan(key)
    except TypeError:  # an unhashable argument: validate and compile without the cache
        plan = _Plan(key)
    plan.check(params0, dynamic_args, data)
    steps_per_epoch = plan.sizes.steps_per_epoch
    if epochs is None and max_steps is None:
        epochs = DEFAULT_EPOCHS
    budget = min(
        max_steps if max_steps is not None else np.iinfo(np.int32).max,
        epochs * steps_per_epoch if epochs is not None else np.iinfo(np.int32).max,
        np.iinfo(np.int32).max,
    )
    if any(isinstance(callback, History) for callback in callbacks):
        callbacks = (*callbacks, _EpochColumn(steps_per_epoch))
    hyper = {name: jnp.asarray(value, plan.dtype) for name, value in hyper.items()}
    dynamic = (dynamic_args, data, hyper, jax.random.key(seed))
    return run_plan(
        plan,
        params0,
        dynamic,
        max_steps=int(budget),
        callbacks=callbacks,
        callback_every=min(callback_every * steps_per_epoch, np.iinfo(np.int32).max),
        max_time=max_time,
    )


def _hyperparameters(method: str, options: dict) -> tuple[dict, baselines._Kind]:
    """The validated numerical options (traced in the compiled program) and the static kind."""
    known = LM_OPTIONS if method == "lm" else FIRST_ORDER_OPTIONS[method]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {unknown} for method={method!r} with "
            f"batch_size; the options are {sorted(known)}"
            + (
                " (ftol, xtol and gtol do not apply: the budget is epochs or max_steps)"
                if {"ftol", "xtol", "gtol"} & set(unknown)
                else ""
            )
        )
    given = {**known, **options}
    if method == "lm":
        if given["damping_coefficient"] is None:
            given["damping_coefficient"] = given["min_damping_coefficient"]
        eta1, eta2 = given["accept_threshold"], given["gradient_threshold"]
        hyper = {
            "accept_threshold": baselines._number("accept_threshold", eta1),
            "gradient_threshold": baselines._non_negative("gradient_threshold", eta2),
            "damping_coefficient": baselines._positive(
                "damping_coefficient", given["damping_coefficient"]
            ),
            "min_damping_coefficient": baselines._positive(
                "min_damping_coefficient", given["min_damping_coefficient"]
            ),
            "damping_growth": baselines._number("damping_growth", given["damping_growth"]),
        }
        if not 0 < hyper["accept_threshold"] < 1:
            raise ValueError(f"accept_threshold must be in (0, 1), got {eta1!r}")
        if not hyper["damping_growth"] > 1:
            raise ValueError(f"damping_growth must be above 1, got {given['damping_growth']!r}")
        if hyper["min_damping_coefficient"] > hyper["damping_coefficient"]:
            raise ValueError(
                "min_damping_coefficient must not exceed damping_coefficient, got "
                f"{hyper['min_damping_coefficient']!r} > {hyper['damping_coefficient']!r}"
            )
        return hyper, baselines._Kind("lm")
    hyper = {"learning_rate": baselines._positive("learning_rate", given["learning_rate"])}
    if method == "adam":
        hyper.update(
            b1=baselines._decay("b1", given["b1"]),
            b2=baselines._decay("b2", given["b2"]),
            eps=baselines._non_negative("eps", given["eps"]),
        )
        return hyper, baselines._Kind("adam")
    nesterov = given["nesterov"]
    if not isinstance(nesterov, bool | np.bool_):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if nesterov and given["momentum"] is None:
        raise ValueError("nesterov=True needs a momentum (e.g. momentum=0.9)")
    if given["momentum"] is not None:
        hyper["momentum"] = baselines._decay("momentum", given["momentum"])
    kind = baselines._Kind("sgd", momentum=given["momentum"] is not None, nesterov=bool(nesterov))
    return hyper, kind


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not (isinstance(value, int | np.integer) and value >= 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _sample_count(data) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data holds no arrays: there are no samples to batch")
    lengths = set()
    for leaf in leaves:
        if not eqx.is_array(leaf) or np.ndim(leaf) == 0:
            raise ValueError(
                f"every leaf of data must be an array with the samples along its leading axis, "
                f"got {type(leaf).__name__} of shape {np.shape(leaf)}"
            )
        lengths.add(int(np.shape(leaf)[0]))
    if len(lengths) > 1:
        raise ValueError(f"the arrays of data differ in length {sorted(lengths)}: they must agree")
    samples = lengths.pop()
    if samples == 0:
        raise ValueError("data holds no samples")
    return samples


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


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


class Batches(eqx.Module):
    """Where the run is in its stream of batches: the key for the next permutations, the current
    epoch's permutation of the sample indices, and the number of batches already taken from it."""

    key: Any  # a jax.random key
    permutation: Int[Array, " N"]
    position: Int[Array, ""]
    epoch: Int[Array, ""]  # 0 for the first permutation


def first_batches(key, samples: int) -> Batches:
    """The permutation of epoch 0 from ``key`` (split once: one half for the permutation, the other
    kept for the next epochs)."""
    key, draw = jax.random.split(key)
    permutation = jax.random.permutation(draw, jnp.arange(samples, dtype=jnp.int32))
    zero = jnp.asarray(0, jnp.int32)
    return Batches(key, permutation, zero, zero)


def next_batch(batches: Batches, batch_size: int) -> tuple[Batches, Int[Array, " B"]]:
    """The indices of the next batch, and the stream after it.

    Batch ``j`` of an epoch is ``permutation[jB : (j+1)B]``, for ``j < ⌊N/B⌋``; after the last one
    a new permutation is drawn (under ``lax.cond``: once per epoch, not per step) and ``j`` starts
    again at 0. The ``N mod B`` indices at the end of each permutation are not used.

    Example (N = 6, B = 2: each epoch's three batches hold every sample once):
        >>> import jax
        >>> from nlls.stochastic import first_batches, next_batch
        >>> batches = first_batches(jax.random.key(0), 6)
        >>> epoch = []
        >>> for _ in range(3):
        ...     batches, indices = next_batch(batches, 2)
        ...     epoch += indices.tolist()
        >>> sorted(epoch), int(batches.epoch)
        ([0, 1, 2, 3, 4, 5], 0)
        >>> batches, indices = next_batch(batches, 2)  # the first batch of the next epoch
        >>> int(batches.epoch), int(batches.position)
        (1, 1)
    """
    samples = batches.permutation.shape[0]
    per_epoch = samples // batch_size

    def reshuffle():
        fresh = first_batches(batches.key, samples)
        return Batches(fresh.key, fresh.permutation, fresh.position, batches.epoch + 1)

    batches = jax.lax.cond(batches.position >= per_epoch, reshuffle, lambda: batches)
    indices = jax.lax.dynamic_slice_in_dim(
        batches.permutation, batches.position * batch_size, batch_size
    )
    return eqx.tree_at(lambda b: b.position, batches, batches.position + 1), indices


def _take(data, indices):
    return jax.tree_util.tree_map(lambda leaf: leaf[indices], data)


# ----------------------------------------------------------------------------------------------
# The model on flat parameters
# ----------------------------------------------------------------------------------------------


class _Sizes(NamedTuple):
    """Static sizes: N samples, B per batch, k residuals per sample, n parameters."""

    samples: int
    batch: int
    per_sample: int
    params: int

    @property
    def residuals(self) -> int:  # m
        return self.samples * self.per_sample

    @property
    def batch_residuals(self) -> int:  # m_𝓑
        return self.batch * self.per_sample

    @property
    def steps_per_epoch(self) -> int:
        return self.samples // self.batch


class _Model(eqx.Module):
    """The residual and Jacobian of a batch on flat parameters."""

    residual_fn: Callable[..., Any]
    jac_fn: Callable[..., Any] | None
    args: tuple
    unravel: Callable[[Array], Any]
    jac_mode: str = eqx.field(static=True)

    def residual(self, params: Float[Array, " n"], batch) -> Float[Array, " mb"]:
        return self.residual_fn(self.unravel(params), *self.args, *batch).reshape(-1)

    def linearize(self, params: Float[Array, " n"], batch):
        """The batch residual and its dense ``(m_𝓑, n)`` Jacobian."""
        if self.jac_mode == "user":
            jac = self.jac_fn(self.unravel(params), *self.args, *batch)
            return self.residual(params, batch), jnp.asarray(jac, params.dtype)
        differentiate = jax.jacfwd if self.jac_mode == "fwd" else jax.jacrev
        return self.residual(params, batch), differentiate(self.residual)(params, batch)


def _split_chunks(data, samples: int, chunk: int):
    """``data`` as whole chunks of ``chunk`` samples stacked on a new leading axis, and the
    remaining ``samples mod chunk`` samples (``None`` when there are none)."""
    whole = (samples // chunk) * chunk
    head = jax.tree_util.tree_map(
        lambda leaf: leaf[:whole].reshape(samples // chunk, chunk, *leaf.shape[1:]), data
    )
    tail = jax.tree_util.tree_map(lambda leaf: leaf[whole:], data) if whole < samples else None
    return head, tail


def _full_cost(model: _Model, params, data, sizes: _Sizes) -> Float[Array, ""]:
    """``½‖r‖²`` over all the samples, one forward pass in chunks; ``+∞`` if not finite."""
    chunk = min(sizes.samples, CHUNK)
    head, tail = _split_chunks(data, sizes.samples, chunk)

    def add(total, batch):
        residual = model.residual(params, batch)
        return total + 0.5 * jnp.sum(residual**2), None

    total = jax.lax.scan(add, jnp.zeros((), params.dtype), head)[0]
    if tail is not None:
        total = add(total, tail)[0]
    return jnp.where(jnp.isfinite(total), total, jnp.inf)


def _full_evaluation(model: _Model, params, data, sizes: _Sizes):
    """The full residual, ``½‖r‖²`` and ``Jᵀr``, in chunks (one forward and backward pass)."""
    chunk = min(sizes.samples, CHUNK)
    head, tail = _split_chunks(data, sizes.samples, chunk)

    def add(grad, batch):
        residual, pullback = jax.vjp(lambda p: model.residual(p, batch), params)
        return grad + pullback(residual)[0], residual

    grad, residuals = jax.lax.scan(add, jnp.zeros_like(params), head)
    pieces = [residuals.reshape(-1)]
    if tail is not None:
        grad, last = add(grad, tail)
        pieces.append(last)
    residual = jnp.concatenate(pieces)
    cost = 0.5 * jnp.sum(residual**2)
    return residual, jnp.where(jnp.isfinite(cost), cost, jnp.inf), grad


# ----------------------------------------------------------------------------------------------
# State and steps
# ----------------------------------------------------------------------------------------------


class _Point(eqx.Module):
    """The parameters, with what a callback sees of them (see the module docstring): ``cost`` the
    full-set cost at the start, then the segment's mean batch cost scaled to the full set; ``grad``
    the last batch's ``(m/m_𝓑)·J_𝓑ᵀr_𝓑``."""

    params: Float[Array, " n"]
    cost: Float[Array, ""]
    grad: Float[Array, " n"]


class _State(eqx.Module):
    """``LoopState.method_state`` of a minibatch run."""

    point: _Point
    batches: Batches
    damping: Float[Array, ""]  # λ of the last LM trial, or the learning rate
    coefficient: Float[Array, ""]  # μ (LM)
    opt_state: Any  # optax's state (Adam, SGD); None for LM
    cost_sum: Float[Array, ""]  # batch costs ½‖r_𝓑‖² since the segment began
    cost_count: Int[Array, ""]


def _init(kind, model: _Model, hyper, sizes: _Sizes, params, data, key) -> LoopState:
    """The full-data cost at the start (one chunked forward pass), the first permutation, and the
    first batch's gradient for the first snapshot; flags a non-finite start."""
    batches = first_batches(key, sizes.samples)
    batch = _take(data, next_batch(batches, sizes.batch)[1])
    residual, pullback = jax.vjp(lambda p: model.residual(p, batch), params)
    batch_grad = pullback(residual)[0]
    scale = sizes.residuals / sizes.batch_residuals
    cost = _full_cost(model, params, data, sizes)
    if kind.name == "lm":
        damping = hyper["damping_coefficient"] * jnp.linalg.norm(batch_grad)
        opt_state = None
    else:
        damping = hyper["learning_rate"]
        opt_state = baselines._optimiser(kind, hyper).init(params)
        # optax starts some fields weakly typed; the loop makes them strong (see baselines._init).
        opt_state = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, leaf.dtype), opt_state)
    finite = jnp.all(jnp.isfinite(params)) & jnp.isfinite(cost) & jnp.all(jnp.isfinite(batch_grad))
    zero = jnp.asarray(0, jnp.int32)
    dtype = params.dtype
    state = _State(
        point=_Point(params, cost, (scale * batch_grad).astype(dtype)),
        batches=batches,
        damping=jnp.asarray(damping, dtype),
        coefficient=jnp.asarray(hyper.get("damping_coefficient", 1.0), dtype),
        opt_state=opt_state,
        cost_sum=jnp.zeros((), dtype),
        cost_count=zero,
    )
    return LoopState(
        method_state=state,
        iterations=zero,
        steps=zero,
        nfev=zero,
        njev=zero,
        rejected=zero,
        status=jnp.where(finite, Status.RUNNING, Status.NONFINITE_START).astype(jnp.int32),
        step_norm=jnp.zeros((), dtype),
        accepted=jnp.asarray(False),
    )


def _lm_step(model: _Model, path: str, hyper, sizes: _Sizes, data, s: LoopState) -> LoopState:
    """One stochastic LM iteration on the next batch (the module docstring's rule)."""
    state = s.method_state
    batches, indices = next_batch(state.batches, sizes.batch)
    batch = _take(data, indices)
    params, coefficient = state.point.params, state.coefficient
    residual, jac = model.linearize(params, batch)
    cost = 0.5 * jnp.sum(residual**2)
    grad = jac.T @ residual
    damping = coefficient * jnp.linalg.norm(grad)
    step = factorize(path, jac, residual, jnp.ones_like(params)).step(jac, damping)
    change = jac @ step
    predicted = 0.5 * (change @ change) + damping * (step @ step)
    trial_cost = 0.5 * jnp.sum(model.residual(params + step, batch) ** 2)
    ratio = gain_ratio(cost - trial_cost, predicted)
    # ‖g‖/m_𝓑 ≥ η₂/μ, written as λ/m_𝓑 ≥ η₂ (no division by μ).
    large_gradient = damping >= hyper["gradient_threshold"] * sizes.batch_residuals
    accepted = (ratio >= hyper["accept_threshold"]) & large_gradient
    tiny = jnp.finfo(params.dtype).tiny
    coefficient = jnp.where(
        accepted,
        jnp.maximum(hyper["min_damping_coefficient"], coefficient / hyper["damping_growth"]),
        jnp.minimum(coefficient * hyper["damping_growth"], 1.0 / tiny),
    )
    scale = sizes.residuals / sizes.batch_residuals
    point = _Point(jnp.where(accepted, params + step, params), state.point.cost, scale * grad)
    new_state = _State(
        point=point,
        batches=batches,
        damping=damping,
        coefficient=coefficient,
        opt_state=None,
        cost_sum=state.cost_sum + cost,
        cost_count=state.cost_count + 1,
    )
    return _counted(s, new_state, accepted, Status.RUNNING, 2, 1, jnp.linalg.norm(step))


def _first_order_step(kind, model: _Model, hyper, sizes: _Sizes, data, s: LoopState) -> LoopState:
    """One Adam or SGD update from the gradient of the next batch's mean squared residual; a
    non-finite batch loss or gradient ends the run without an update."""
    state = s.method_state
    batches, indices = next_batch(state.batches, sizes.batch)
    batch = _take(data, indices)
    params = state.point.params
    residual, pullback = jax.vjp(lambda p: model.residual(p, batch), params)
    cost = 0.5 * jnp.sum(residual**2)
    grad = pullback(residual)[0]
    finite = jnp.isfinite(cost) & jnp.all(jnp.isfinite(grad))
    loss_grad = (2.0 / sizes.batch_residuals) * grad  # ∇ mean(r_𝓑²)
    updates, opt_state = baselines._optimiser(kind, hyper).update(
        loss_grad, state.opt_state, params
    )
    opt_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), opt_state, state.opt_state
    )
    scale = sizes.residuals / sizes.batch_residuals
    point = _Point(jnp.where(finite, params + updates, params), state.point.cost, scale * grad)
    new_state = _State(
        point=point,
        batches=batches,
        damping=state.damping,
        coefficient=state.coefficient,
        opt_state=opt_state,
        cost_sum=state.cost_sum + cost,
        cost_count=state.cost_count + 1,
    )
    status = jnp.where(finite, Status.RUNNING, Status.NONFINITE_TRIALS)
    return _counted(s, new_state, finite, status, 1, 1, jnp.linalg.norm(updates))


def _counted(s: LoopState, state: _State, accepted, status, nfev, njev, step_norm) -> LoopState:
    """The loop counters after one iteration (``accepted``: the step or update was taken)."""
    return LoopState(
        method_state=state,
        iterations=s.iterations + 1,
        steps=s.steps + accepted.astype(jnp.int32),
        nfev=s.nfev + nfev,
        njev=s.njev + njev,
        rejected=s.rejected + (~accepted).astype(jnp.int32),
        status=jnp.asarray(status).astype(jnp.int32),
        step_norm=step_norm.astype(s.step_norm.dtype),
        accepted=accepted,
    )


def _run(step: Callable, state: LoopState, budget, pause_at) -> LoopState:
    """Iterate until ``budget`` iterations (``Status.MAX_STEPS``), a non-finite Adam/SGD batch, or
    the iteration count ``pause_at`` (the status stays ``RUNNING``). Pausing never changes the
    iterates."""

    def keep_going(s: LoopState):
        return (s.status == Status.RUNNING) & (s.iterations < budget) & (s.iterations < pause_at)

    state = jax.lax.while_loop(keep_going, step, state)
    exhausted = (state.status == Status.RUNNING) & (state.iterations >= budget)
    return eqx.tree_at(
        lambda s: s.status,
        state,
        jnp.where(exhausted, Status.MAX_STEPS, state.status).astype(jnp.int32),
    )


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _cached_plan(key):
    """Plans by call signature (see ``nlls.solve._cached_plan``)."""
    return _Plan(key)


class _Plan(HostPlan):
    """The compiled programs of one call signature, with the interface ``nlls.driver`` uses
    (``start``, ``advance``/``advance_donating``, ``describe``, ``finish``, ``solve``), as the plans
    of ``nlls.solve`` and ``nlls.baselines``. ``dynamic`` is ``(array arguments, data,
    hyperparameters, random key)``; the seed, the hyperparameters and the data's values are traced,
    so a sweep over them compiles once.

    ``advance`` zeroes the segment's batch-cost sum, runs the loop, and sets the snapshot's cost to
    the segment's mean (scaled to the full set). ``solve`` is ``start``, one ``advance_donating``
    that never pauses, and ``finish``: the program the driver runs in segments.
    """

    def __init__(self, key):
        self.kind, self.residual, self.jac, self.linear, self.batch_size = key[:5]
        self.args_treedef, self.static = key[7], key[8]
        self.sizes: _Sizes | None = None
        self.dtype = None
        self.path = "none"
        self.jac_mode = "rev"
        self._compile()

    def check(self, params0, dynamic_args, data) -> None:
        """Validate dtypes and shapes; choose the step's path and the Jacobian's mode. Once per
        plan."""
        if self.sizes is not None:
            return
        dtype = _check_params(params0)
        args = self._assemble(dynamic_args)
        n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params0))
        samples, batch_size = _sample_count(data), self.batch_size
        batch = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct((batch_size, *leaf.shape[1:]), leaf.dtype), data
        )
        try:
            shape = eqx.filter_eval_shape(self.residual, params0, *args, *batch)
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
        sizes = _Sizes(samples, batch_size, shape.shape[0] // batch_size, n)
        if self.kind.name == "lm":
            batch_rows = sizes.batch_residuals
            if callable(self.jac):
                got = eqx.filter_eval_shape(self.jac, params0, *args, *batch)
                if getattr(got, "shape", None) != (batch_rows, n):
                    raise ValueError(
                        f"jac(params, *args, *batch) must return the ({batch_rows}, {n}) Jacobian "
                        f"of the batch residual, got shape {getattr(got, 'shape', got)}"
                    )
                self.jac_mode = "user"
            elif self.jac == "auto":
                self.jac_mode = "fwd" if n <= batch_rows else "rev"
            else:
                self.jac_mode = self.jac
            if self.linear == "auto":
                self.path = "min_norm" if batch_rows < n else "normal"
            else:
                self.path = self.linear
        self.dtype = dtype
        self.sizes = sizes

    def _assemble(self, dynamic_args):
        return assemble_args(self.args_treedef, self.static, dynamic_args)

    def _setup(self, params0, dynamic):
        dynamic_args, data, hyper, key = dynamic
        flat0, unravel = ravel_pytree(params0)
        user_jac = self.jac if callable(self.jac) else None
        args = tuple(self._assemble(dynamic_args))
        model = _Model(self.residual, user_jac, args, unravel, self.jac_mode)
        return model, data, hyper, key, flat0, unravel

    def _step(self, model, hyper, data):
        if self.kind.name == "lm":
            return functools.partial(_lm_step, model, self.path, hyper, self.sizes, data)
        return functools.partial(_first_order_step, self.kind, model, hyper, self.sizes, data)

    def _start(self, params0, dynamic):
        model, data, hyper, key, flat0, unravel = self._setup(params0, dynamic)
        state = _init(self.kind, model, hyper, self.sizes, flat0, data, key)
        state = jax.lax.optimization_barrier(state)
        return state, self._snapshot(state, unravel)

    def _advance(self, state: LoopState, params0, dynamic, max_steps, pause_at):
        model, data, hyper, _, _, unravel = self._setup(params0, dynamic)
        state = eqx.tree_at(
            lambda s: (s.method_state.cost_sum, s.method_state.cost_count),
            state,
            (jnp.zeros_like(state.method_state.cost_sum), jnp.zeros((), jnp.int32)),
        )
        state = _run(self._step(model, hyper, data), state, max_steps, pause_at)
        state = jax.lax.optimization_barrier(state)
        inner = state.method_state
        scale = self.sizes.residuals / self.sizes.batch_residuals
        mean = scale * inner.cost_sum / jnp.maximum(inner.cost_count, 1)
        cost = jnp.where(inner.cost_count > 0, mean, inner.point.cost)
        state = eqx.tree_at(lambda s: s.method_state.point.cost, state, cost)
        return state, self._snapshot(state, unravel)

    def _describe(self, state, params0):
        return self._snapshot(state, ravel_pytree(params0)[1])

    def _snapshot(self, state: LoopState, unravel):
        return pack_snapshot(state, state.method_state.damping, unravel)

    def _finish(self, state: LoopState, params0, dynamic, params=None) -> Solution:
        """The ``Solution`` at the state's parameters, or at ``params`` (flat) when given: the full
        residual, cost and gradient, evaluated in chunks."""
        model, data, _, _, _, unravel = self._setup(params0, dynamic)
        flat = state.point.params if params is None else params
        residual, cost, grad = _full_evaluation(model, flat, data, self.sizes)
        return Solution(
            params=unravel(flat),
            cost=cost,
            residual=residual,
            grad=grad,
            success=succeeded(state.status),
            status=state.status,
            stats=Stats(
                steps=state.steps,
                nfev=state.nfev,
                njev=state.njev,
                rejected=state.rejected,
                linear=self.path,
                jac=self.jac_mode,
            ),
        )
