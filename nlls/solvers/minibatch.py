"""Minibatch methods: stochastic Levenberg–Marquardt, and Adam or SGD on the same batches.

The problem. The residual stacks the residuals of N samples, ``k`` per sample (sample-major), so the
cost is a sum over samples,

    f(θ) = ½‖r(θ)‖² = Σᵢ ½‖rᵢ(θ)‖²,        m = N·k residuals,

and a batch ``𝓑`` of ``B`` samples gives the batch cost ``f_𝓑(θ) = ½‖r_𝓑(θ)‖²`` with ``m_𝓑 = B·k``
residuals, its Jacobian ``J_𝓑`` (``m_𝓑 × n``) and gradient ``g_𝓑 = J_𝓑ᵀ r_𝓑``. ``(m/m_𝓑)·f_𝓑`` and
``(m/m_𝓑)·g_𝓑`` are unbiased estimates of ``f`` and ``∇f = Jᵀr``. The samples are a property of the
problem (``FlatProblem.samples``); ``FlatProblem.on(batch)`` is the problem of one batch, whose
residual and Jacobian come from the same code as any other problem's (``nlls.problem``).

Batches. Each epoch draws a permutation of the N samples (``jax.random.permutation``; the key
starts at ``samples.key`` and is split once per epoch) and cuts it into ``⌊N/B⌋`` batches of ``B``
consecutive entries. The ``N mod B`` samples left at the end of a permutation are dropped for that
epoch (never a short batch, so every step compiles to one shape); a new permutation is drawn for the
next epoch, so which samples are dropped changes from epoch to epoch, and with ``B`` dividing ``N``
every sample is used exactly once per epoch. An *iteration* is one batch, accepted or not; the budget
(``max_steps``) counts iterations.

Sharded data (``fit(..., mesh=...)``: the samples split over ``D`` devices, ``D`` dividing ``N`` and
``B``). Each device then draws its own part of every batch from its own samples: each epoch, ``D``
permutations of the ``N/D`` local indices (one key per device, split from the epoch's key), and
batch ``j`` takes ``B/D`` consecutive entries of each. A batch is gathered on each device from its
own shard, so no sample crosses a device; each epoch still uses every sample once when ``B``
divides ``N``. The stream differs from the one-device stream (which permutes all ``N`` at once), so
a sharded minibatch run is reproducible for a given ``D`` and seed, not equal to the one-device run.

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
minimum-norm system ``(JJᵀ + λI) z = r``, ``δ = −Jᵀz`` when ``m_𝓑 < n`` (no ``n × n`` matrix), the
normal equations (QR for small ``n``, Cholesky of the Gram matrix otherwise) when ``m_𝓑 ≥ n``.

Minibatch Adam and SGD (``MinibatchFirstOrder``) take the same batches: one optax update per batch
from the gradient of the batch's mean squared residual, ``∇ mean(r_𝓑²) = (2/m_𝓑) J_𝓑ᵀr_𝓑``. A batch
whose loss or gradient is not finite ends the run (``Status.NONFINITE_TRIALS``) without an update.

What the point reports (``close_segment``, ``final_point``) is said in ``nlls._minibatch``, the front
end: a segment's mean batch cost scaled to the whole set, the last batch's scaled gradient, and at
the end the full set's residual, cost and gradient, evaluated in chunks of ``CHUNK`` samples.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..damping import gain_ratio
from ..linear import factorize
from ..problem import FlatProblem, Samples
from ..termination import Status, Tolerances
from .base import Method, Point, cost_of, simple_report
from .first_order import FirstOrder, strong

# Samples per chunk of the full-data evaluations (the start's cost, the final point).
CHUNK = 4096


class Batches(eqx.Module):
    """Where the run is in its stream of batches: the key for the next permutations, the current
    epoch's permutation of the sample indices, and the number of batches already taken from it."""

    key: Any  # a jax.random key
    permutation: Int[Array, " N"] | Int[Array, "D N/D"]  # per shard: each device's own
    position: Int[Array, ""]
    epoch: Int[Array, ""]  # 0 for the first permutation


def first_batches(key, samples: int, shards: int = 1) -> Batches:
    """The permutation of epoch 0 from ``key`` (split once: one half for the permutation, the other
    kept for the next epochs); with ``shards > 1``, one permutation of the ``samples/shards``
    local indices per shard (shape ``(shards, samples/shards)``)."""
    key, draw = jax.random.split(key)
    if shards == 1:
        permutation = jax.random.permutation(draw, jnp.arange(samples, dtype=jnp.int32))
    else:
        local = jnp.arange(samples // shards, dtype=jnp.int32)
        draws = jax.random.split(draw, shards)
        permutation = jax.vmap(lambda k: jax.random.permutation(k, local))(draws)
    zero = jnp.asarray(0, jnp.int32)
    return Batches(key, permutation, zero, zero)


def next_batch(batches: Batches, batch_size: int) -> tuple[Batches, Int[Array, " B"]]:
    """The indices of the next batch, and the stream after it.

    Batch ``j`` of an epoch is ``permutation[jB : (j+1)B]``, for ``j < ⌊N/B⌋``; after the last one
    a new permutation is drawn (under ``lax.cond``: once per epoch, not per step) and ``j`` starts
    again at 0. The ``N mod B`` indices at the end of each permutation are not used.

    Example (N = 6, B = 2: each epoch's three batches hold every sample once):
        >>> import jax
        >>> from nlls.solvers.minibatch import first_batches, next_batch
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
    samples = batches.permutation.size
    shards = 1 if batches.permutation.ndim == 1 else batches.permutation.shape[0]
    per_epoch = samples // batch_size
    local = batch_size // shards  # per shard: the indices are (shards, local), each shard's own

    def reshuffle():
        fresh = first_batches(batches.key, samples, shards)
        return Batches(fresh.key, fresh.permutation, fresh.position, batches.epoch + 1)

    batches = jax.lax.cond(batches.position >= per_epoch, reshuffle, lambda: batches)
    indices = jax.lax.dynamic_slice_in_dim(
        batches.permutation, batches.position * local, local, axis=batches.permutation.ndim - 1
    )
    return eqx.tree_at(lambda b: b.position, batches, batches.position + 1), indices


class MinibatchState(eqx.Module):
    """The state of a minibatch run (see the module docstring for what ``point`` reports)."""

    point: Point  # no residual and no Jacobian
    batches: Batches
    damping: Float[Array, ""]  # λ of the last LM trial, or the learning rate
    coefficient: Float[Array, ""]  # μ (LM); 1 otherwise
    opt_state: Any  # optax's state (Adam, SGD); None for LM
    cost_sum: Float[Array, ""]  # batch costs ½‖r_𝓑‖² since the segment began
    cost_count: Int[Array, ""]


class _Minibatch(Method):
    """What both minibatch methods share: the budget in iterations, the start (the full set's
    cost, the first batch's gradient), the segment's running cost, and the final full evaluation."""

    budget: ClassVar[str] = "iterations"
    checkpointable: ClassVar[bool] = False
    one_program: ClassVar[bool] = False
    start_evaluations: ClassVar[int] = 0

    def start_state(self, problem: FlatProblem, params, damping_of, coefficient, opt_state):
        """The first permutation, the full set's cost, and the first batch's gradient ``g`` with
        the damping ``damping_of(g)`` for the first snapshot."""
        samples = problem.samples
        batches = first_batches(samples.key, samples.count, samples.shards)
        _, grad = batch_gradient(problem, params, next_batch(batches, samples.batch)[1])
        damping = damping_of(grad)
        dtype = params.dtype
        scale = samples.residuals / samples.batch_residuals
        cost = full_cost(problem, params)
        return MinibatchState(
            point=Point(params, None, cost, None, (scale * grad).astype(dtype)),
            batches=batches,
            damping=jnp.asarray(damping, dtype),
            coefficient=jnp.asarray(coefficient, dtype),
            opt_state=opt_state,
            cost_sum=jnp.zeros((), dtype),
            cost_count=jnp.asarray(0, jnp.int32),
        )

    def start_status(self, tol: Tolerances, point: Point, problem) -> Int[Array, ""]:
        finite = jnp.all(jnp.isfinite(point.params)) & point.finite
        return jnp.where(finite, Status.RUNNING, Status.NONFINITE_START).astype(jnp.int32)

    def damping_value(self, state: MinibatchState) -> Float[Array, ""]:
        """λ of the last trial (LM; ``μ₀‖g‖`` of the first batch at the start), or the learning
        rate (Adam, SGD)."""
        return state.damping

    def open_segment(self, state: MinibatchState) -> MinibatchState:
        return eqx.tree_at(
            lambda s: (s.cost_sum, s.cost_count),
            state,
            (jnp.zeros_like(state.cost_sum), jnp.zeros((), jnp.int32)),
        )

    def close_segment(self, problem: FlatProblem, state: MinibatchState) -> MinibatchState:
        """The point's cost becomes the segment's mean batch cost, scaled to the whole set."""
        samples = problem.samples
        scale = samples.residuals / samples.batch_residuals
        mean = scale * state.cost_sum / jnp.maximum(state.cost_count, 1)
        cost = jnp.where(state.cost_count > 0, mean, state.point.cost)
        return eqx.tree_at(lambda s: s.point.cost, state, cost)

    def final_point(self, problem: FlatProblem, state: MinibatchState, params=None) -> Point:
        """The full set's residual, ``½‖r‖²`` and ``Jᵀr`` (in chunks) at the final parameters."""
        flat = state.point.params if params is None else params
        residual, cost, grad = full_evaluation(problem, flat)
        return Point(flat, residual, cost, None, grad)

    def _after(self, state: MinibatchState, point: Point, batches, cost, **changes):
        return MinibatchState(
            point=point,
            batches=batches,
            damping=changes.get("damping", state.damping),
            coefficient=changes.get("coefficient", state.coefficient),
            opt_state=changes.get("opt_state", state.opt_state),
            cost_sum=state.cost_sum + cost,
            cost_count=state.cost_count + 1,
        )


class StochasticLM(_Minibatch):
    """Stochastic Levenberg–Marquardt (module docstring).

    Args:
        accept_threshold: η₁ in (0, 1).
        gradient_threshold: η₂ ≥ 0.
        damping_coefficient: μ₀ (default: ``min_damping_coefficient``).
        min_damping_coefficient: μ_min > 0.
        damping_growth: γ > 1.
    """

    accept_threshold: Any = 0.1
    gradient_threshold: Any = 1e-8
    damping_coefficient: Any = 1.0
    min_damping_coefficient: Any = 1.0
    damping_growth: Any = 2.0

    def init(self, problem: FlatProblem, path, params) -> MinibatchState:
        coefficient = self.damping_coefficient
        return self.start_state(
            problem, params, lambda grad: coefficient * jnp.linalg.norm(grad), coefficient, None
        )

    def step(self, problem: FlatProblem, path, state: MinibatchState):
        samples = problem.samples
        batches, indices = next_batch(state.batches, samples.batch)
        batch = problem.on(samples.take(indices))
        params, coefficient = state.point.params, state.coefficient
        residual, jac = batch.linearize(params)
        cost = 0.5 * jnp.sum(residual**2)
        grad = jac.T @ residual
        damping = coefficient * jnp.linalg.norm(grad)
        factor = factorize(path, jac, residual, jnp.ones_like(params), batch.layout)
        step = factor.step(jac, damping)
        change = jac @ step
        predicted = 0.5 * (change @ change) + damping * (step @ step)
        trial_cost = 0.5 * jnp.sum(batch(params + step) ** 2)
        ratio = gain_ratio(cost - trial_cost, predicted)
        # ‖g‖/m_𝓑 ≥ η₂/μ, written as λ/m_𝓑 ≥ η₂ (no division by μ).
        large_gradient = damping >= self.gradient_threshold * samples.batch_residuals
        accepted = (ratio >= self.accept_threshold) & large_gradient
        tiny = jnp.finfo(params.dtype).tiny
        coefficient = jnp.where(
            accepted,
            jnp.maximum(self.min_damping_coefficient, coefficient / self.damping_growth),
            jnp.minimum(coefficient * self.damping_growth, 1.0 / tiny),
        )
        scale = samples.residuals / samples.batch_residuals
        point = Point(
            jnp.where(accepted, params + step, params), None, state.point.cost, None, scale * grad
        )
        new = self._after(state, point, batches, cost, damping=damping, coefficient=coefficient)
        actual = cost - trial_cost
        step_norm = jnp.linalg.norm(step)
        report = simple_report(
            accepted, cost, actual, predicted, step_norm, 2, 1, jnp.isfinite(actual)
        )
        return new, report

    def verdict(self, tol, report, before, after, problem):
        """No termination test: batch quantities are noisy; the run ends on its budget."""
        return jnp.asarray(Status.RUNNING, jnp.int32)


class MinibatchFirstOrder(_Minibatch):
    """Adam or SGD (``optimiser``) with one update per batch, on the gradient of the batch's mean
    squared residual."""

    optimiser: FirstOrder

    needs: ClassVar[str] = "gradient"

    @property
    def label(self) -> str:
        return f"minibatch {self.optimiser.kind}"

    def init(self, problem: FlatProblem, path, params) -> MinibatchState:
        opt_state = strong(self.optimiser.optimiser().init(params))
        rate = self.optimiser.learning_rate_at(opt_state, params.dtype)
        return self.start_state(problem, params, lambda grad: rate, 1.0, opt_state)

    def step(self, problem: FlatProblem, path, state: MinibatchState):
        samples = problem.samples
        batches, indices = next_batch(state.batches, samples.batch)
        params = state.point.params
        cost, grad = batch_gradient(problem, params, indices)
        finite = jnp.isfinite(cost) & jnp.all(jnp.isfinite(grad))
        loss_grad = (2.0 / samples.batch_residuals) * grad  # ∇ mean(r_𝓑²)
        updates, opt_state = self.optimiser.optimiser().update(loss_grad, state.opt_state, params)
        opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), opt_state, state.opt_state
        )
        scale = samples.residuals / samples.batch_residuals
        point = Point(
            jnp.where(finite, params + updates, params), None, state.point.cost, None, scale * grad
        )
        rate = self.optimiser.learning_rate_at(opt_state, cost.dtype)
        new = self._after(state, point, batches, cost, opt_state=opt_state, damping=rate)
        norm, zero = jnp.linalg.norm(updates), jnp.zeros_like(cost)
        return new, simple_report(finite, cost, zero, zero, norm, 1, 1, finite)

    def verdict(self, tol, report, before, after, problem):
        """A non-finite batch ends the run; nothing else does before the budget."""
        return jnp.where(report.finite, Status.RUNNING, Status.NONFINITE_TRIALS).astype(jnp.int32)


def batch_gradient(problem: FlatProblem, params, indices):
    """``½‖r_𝓑‖²`` and ``J_𝓑ᵀr_𝓑`` of the batch at ``indices`` (one evaluation, one VJP)."""
    residual, pullback = jax.vjp(problem.on(problem.samples.take(indices)), params)
    return 0.5 * jnp.sum(residual**2), pullback(residual)[0]


def _split_chunks(samples: Samples, chunk: int):
    """The data as whole chunks of ``chunk`` samples stacked on a new leading axis, and the
    remaining ``count mod chunk`` samples (``None`` when there are none)."""
    count = samples.count
    whole = (count // chunk) * chunk
    head = jax.tree_util.tree_map(
        lambda leaf: leaf[:whole].reshape(count // chunk, chunk, *leaf.shape[1:]), samples.data
    )
    tail = (
        jax.tree_util.tree_map(lambda leaf: leaf[whole:], samples.data) if whole < count else None
    )
    return head, tail


def full_cost(problem: FlatProblem, params) -> Float[Array, ""]:
    """``½‖r‖²`` over all the samples, one forward pass in chunks; ``+∞`` if not finite."""
    head, tail = _split_chunks(problem.samples, min(problem.samples.count, CHUNK))

    def add(total, batch):
        return total + 0.5 * jnp.sum(problem.on(batch)(params) ** 2), None

    total = jax.lax.scan(add, jnp.zeros((), params.dtype), head)[0]
    if tail is not None:
        total = add(total, tail)[0]
    return jnp.where(jnp.isfinite(total), total, jnp.inf)


def full_evaluation(problem: FlatProblem, params):
    """The full residual, ``½‖r‖²`` and ``Jᵀr``, in chunks (one forward and backward pass)."""
    head, tail = _split_chunks(problem.samples, min(problem.samples.count, CHUNK))

    def add(grad, batch):
        residual, pullback = jax.vjp(problem.on(batch), params)
        return grad + pullback(residual)[0], residual

    grad, residuals = jax.lax.scan(add, jnp.zeros_like(params), head)
    pieces = [residuals.reshape(-1)]
    if tail is not None:
        grad, last = add(grad, tail)
        pieces.append(last)
    residual = jnp.concatenate(pieces)
    return residual, cost_of(residual), grad
