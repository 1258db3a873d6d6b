"""First-order methods: Adam, SGD and L-BFGS from optax, on the mean squared residual.

They are here for comparison (``nlls.baselines``, ``fit(method="adam")``): the same loop, state and
callbacks as the least-squares methods, with an optax optimiser as the step. The optimisers minimise

    loss(θ) = mean(r(θ)²) = (2/m) · ½‖r(θ)‖²,        ∇loss = (2/m) Jᵀr,

which is what an optax user writes, so learning rates from the literature carry over; the point
keeps ``cost = ½‖r‖²`` and ``grad = Jᵀr`` as every method does. Adam and SGD evaluate ``r`` and
``Jᵀr`` at each new point with one VJP; L-BFGS takes the value and gradient at the new point from its
zoom line search (``optax.value_and_grad_from_state``) and rescales them.

A step is always taken unless the new point has a non-finite loss or gradient: then it is discarded
and the run ends (``Status.NONFINITE_TRIALS``) at the last finite point. The only other test is
``gtol`` (``‖Jᵀr‖∞ ≤ gtol``, ``Status.GTOL``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from ..problem import FlatProblem
from ..termination import Status, Tolerances, gradient_small
from .base import Method, Point, StepReport, cost_of, simple_report

KINDS = ("adam", "sgd", "lbfgs", "optax")


class FirstOrderState(eqx.Module):
    point: Point  # no residual and no Jacobian: cost and gradient only
    opt_state: Any  # optax's state
    damping: Float[Array, ""]  # the learning rate, or L-BFGS's last line-search step


class FirstOrder(Method):
    """An optax optimiser on ``mean(r²)``.

    Args:
        kind: ``"adam"``, ``"sgd"``, ``"lbfgs"``, or ``"optax"`` for the user's ``transformation``.
        learning_rate: the step size (Adam, SGD): a number, or an optax schedule (a function of
            the update count, static: a new schedule compiles anew).
        b1, b2, eps: Adam's moment decay rates and denominator offset.
        momentum: SGD's momentum decay, ``None`` for plain gradient descent.
        nesterov: SGD with Nesterov momentum.
        memory_size: the number of past updates L-BFGS keeps.
        transformation: any ``optax.GradientTransformation`` (kind ``"optax"``), applied to the
            gradient of ``mean(r²)`` as the others; its update is given ``value``, ``grad`` and
            ``value_fn`` when it takes extra arguments (a line search). Static: the same object
            reuses the compiled program. ``StepInfo.damping`` reports its ``learning_rate`` when
            its state holds one (``optax.inject_hyperparams``), NaN otherwise.

    Numerical options given as JAX arrays are traced (``nlls.baselines`` does so), so a sweep over
    them compiles once.
    """

    kind: str = "adam"
    learning_rate: Any = 1e-3
    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8
    momentum: Any = None
    nesterov: bool = False
    memory_size: int = 10
    transformation: Any = None

    needs: ClassVar[str] = "gradient"
    checkpointable: ClassVar[bool] = False
    one_program: ClassVar[bool] = False

    def __check_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def label(self) -> str:
        return self.kind

    def optimiser(self) -> optax.GradientTransformationExtraArgs:
        if self.kind == "optax":
            return self.transformation
        if self.kind == "adam":
            return optax.adam(self.learning_rate, self.b1, self.b2, self.eps)
        if self.kind == "sgd":
            return optax.sgd(self.learning_rate, self.momentum, self.nesterov)
        return optax.lbfgs(memory_size=self.memory_size)

    def init(self, problem: FlatProblem, path, params: Float[Array, " n"]) -> FirstOrderState:
        point, _ = gradient_point(problem, params)
        opt_state = strong(self.optimiser().init(params))
        return FirstOrderState(point, opt_state, self._damping(opt_state, params.dtype))

    def damping_value(self, state: FirstOrderState) -> Float[Array, ""]:
        """What ``StepInfo.damping`` reports: the learning rate, or L-BFGS's last step size (1, its
        first guess, at the start)."""
        return state.damping

    def _damping(self, opt_state, dtype):
        return self.learning_rate_at(opt_state, dtype)

    def learning_rate_at(self, opt_state, dtype) -> Float[Array, ""]:
        """The learning rate of the next update: the number given, a schedule at the update
        count, L-BFGS's last line-search step, or a transformation's ``learning_rate`` (NaN when
        its state holds none)."""
        if self.kind in ("lbfgs", "optax"):
            rate = optax.tree.get(opt_state, "learning_rate", default=jnp.nan)
            return jnp.asarray(rate, dtype)
        if callable(self.learning_rate):
            counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
            return jnp.asarray(self.learning_rate(counts[0][1]), dtype)
        return jnp.asarray(self.learning_rate, dtype)

    def step(self, problem: FlatProblem, path, state: FirstOrderState):
        point = state.point
        m = jax.eval_shape(problem, point.params).size
        # The optimiser sees the mean squared residual: loss = (2/m)·cost, ∇loss = (2/m)·Jᵀr.
        loss, loss_grad = (2.0 / m) * point.cost, (2.0 / m) * point.grad
        optimiser = self.optimiser()
        if self.kind == "lbfgs":

            def loss_fn(params):
                return jnp.mean(problem(params) ** 2)

            updates, opt_state = optimiser.update(
                loss_grad,
                state.opt_state,
                point.params,
                value=loss,
                grad=loss_grad,
                value_fn=loss_fn,
            )
            params = optax.apply_updates(point.params, updates)
            # The line search ends with the value and gradient at the new point; optax recomputes
            # them (one more evaluation) only when they are not finite.
            stored = optax.tree.get(opt_state, "value")
            value, gradient = optax.value_and_grad_from_state(loss_fn)(params, state=opt_state)
            trial = Point(params, None, (m / 2.0) * value, None, (m / 2.0) * gradient)
            trials = optax.tree.get(opt_state, "info").num_linesearch_steps
            evaluations = trials.astype(jnp.int32) + (~jnp.isfinite(stored)).astype(jnp.int32)
        else:
            extra = {}
            if isinstance(optimiser, optax.GradientTransformationExtraArgs):

                def loss_fn(params):
                    return jnp.mean(problem(params) ** 2)

                extra = dict(value=loss, grad=loss_grad, value_fn=loss_fn)
            updates, opt_state = optimiser.update(loss_grad, state.opt_state, point.params, **extra)
            trial, _ = gradient_point(problem, optax.apply_updates(point.params, updates))
            evaluations = jnp.asarray(1, jnp.int32)
        new = FirstOrderState(trial, opt_state, self._damping(opt_state, point.cost.dtype))
        finite = trial.finite
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
        zero, norm = jnp.zeros_like(point.cost), jnp.linalg.norm(updates)
        actual = point.cost - trial.cost
        report = simple_report(
            finite, point.cost, actual, zero, norm, evaluations, evaluations, finite
        )
        return new, report

    def verdict(self, tol: Tolerances, report: StepReport, before: Point, after: Point, problem):
        return finite_or_gtol(tol, report, after)

    def final_point(self, problem: FlatProblem, state: FirstOrderState, params=None) -> Point:
        """The point with its residual (kept by no step): one more evaluation at the end."""
        if params is None:
            point = state.point
            return Point(point.params, problem(point.params), point.cost, None, point.grad)
        point, residual = gradient_point(problem, params)
        return Point(params, residual, point.cost, None, point.grad)


def gradient_point(problem: FlatProblem, params) -> tuple[Point, Float[Array, " m"]]:
    """The point at ``params`` with ``½‖r‖²`` and ``Jᵀr`` (one evaluation and one VJP), and ``r``."""
    residual, pullback = jax.vjp(problem, params)
    return Point(params, None, cost_of(residual), None, pullback(residual)[0]), residual


def strong(tree):
    """``tree`` with weakly typed leaves made strong. optax starts some fields as weakly typed
    scalars, which the loop makes strong: without this the first segment's program would not fit the
    second segment's state and would compile twice."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, leaf.dtype), tree)


def finite_or_gtol(tol: Tolerances, report: StepReport, after: Point) -> Int[Array, ""]:
    """``NONFINITE_TRIALS`` after a discarded update, ``GTOL`` at a small gradient, else running."""
    status = jnp.where(gradient_small(tol, after.grad), Status.GTOL, Status.RUNNING)
    return jnp.where(report.finite, status, Status.NONFINITE_TRIALS).astype(jnp.int32)
