"""Fitting models to data: ``nlls.fit`` for equinox modules and plain functions.

A model maps one sample ``xᵢ`` to a prediction of the shape of ``yᵢ``; the fit minimises

    ½ Σᵢ ‖wᵢ ⊙ (model(xᵢ) − yᵢ)‖²

over the model's trainable leaves, with the residual vector ``r`` stacking the weighted errors of all
samples (sample-major: the rows of sample ``i`` are consecutive).

Per-sample Jacobians
--------------------
The residuals of different samples depend on the parameters through different inputs only, so the
Jacobian is a stack of per-sample blocks ``Jᵢ = ∂rᵢ/∂θ`` (k×n for k outputs per sample). Building it as
a ``vmap`` over samples of each sample's Jacobian (reverse mode when ``k < n``, forward mode
otherwise) costs about one batched forward and backward pass; differentiating the batched function
instead costs ``m`` reverse passes (or ``n`` forward passes) of the whole batch. On the 481-parameter
MLP with 200 samples: 0.6 ms per-sample, against 15 ms (``jax.jacrev``) and 37 ms (``jax.jacfwd``) of
the batched function. ``fit`` hands this Jacobian to ``least_squares`` as a Jacobian function
(``Solution.stats.jac == "user"``); the linear path still follows the shape (the m×m min-norm step
for a network wider than its data).

Trainable leaves
----------------
``eqx.partition(model, trainable)`` splits the model into the leaves that are fitted (by default every
floating-point array, ``eqx.is_inexact_array``) and the rest, which is passed through untouched:
integer arrays, activation functions, and floating arrays excluded by a ``trainable`` filter tree
(see ``equinox.partition``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import checks, sharding
from .bounds import is_scalar
from .callbacks import Checkpoint, History, Metrics, StepInfo
from .result import Solution

FIRST_ORDER = checks.FIRST_ORDER_METHODS


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a fit returns.

    Attributes:
        model: the fitted model, of the kind that was given (an equinox module with its trainable
            leaves replaced, or ``(fn, params)`` for a plain function).
        solution: the ``nlls.Solution`` of the underlying solve (parameters as a pytree of the
            trainable leaves, cost, status, counts).
        history: the ``nlls.History`` of the fit (one row per callback call), or ``None`` when the
            fit ran without one (``history=False``).

    ``mse`` and ``rmse``: the mean and root mean square of the training errors at the fitted
    model, ``mean(wᵢ(model(xᵢ) − yᵢ))²`` over every output of every sample (weighted when
    ``weights`` were given), i.e. ``2·cost/m``. ``print(result)`` shows the solution's values.
    """

    model: Any
    solution: Solution
    history: History | None

    @property
    def mse(self):
        """The training mean squared error, ``2·cost/m`` (``Solution.mse``)."""
        return self.solution.mse

    @property
    def rmse(self):
        """The training root mean squared error, ``√mse``."""
        return self.solution.rmse

    def __str__(self) -> str:
        kind = type(self.model).__name__
        rows = "no history" if self.history is None else f"history of {len(self.history)} rows"
        return f"FitResult: a fitted {kind}, {rows}\n{self.solution}"


def solve_with(
    method, residual: Callable[..., Any], params0, args: tuple = (), *, also=(), **options
) -> Solution:
    """Minimise ``½‖residual(params, *args)‖²`` with ``method``: a first-order baseline
    (``"adam"``, ``"sgd"``, ``"lbfgs"``, or an optax ``GradientTransformation``, through
    ``nlls.baselines``) or anything ``least_squares``
    accepts (``"lm"``, ``"gn"``, ``"dogleg"``, a solver object). ``options`` go to that function;
    an unknown method or an option that method does not take is a ``ValueError`` naming the fix
    (``also``: the caller's own options, listed in that message beside the method's)."""
    from . import baselines

    if options.get("bounds") is not None and (
        checks.is_optax_transformation(method)
        or (isinstance(method, str) and method in FIRST_ORDER)
    ):
        label = method if isinstance(method, str) else "an optax transformation"
        raise ValueError(
            f"method={label!r} does not take bounds; use method='lm' (Levenberg–Marquardt "
            "with Coleman–Li reflective steps)"
        )
    from .solve import least_squares

    checks.method_name(method)
    if options.get("bounds", 0) is None:
        options.pop("bounds")
    if checks.is_optax_transformation(method):
        options.pop("jac", None)
        _check_options(baselines.optax_optimiser, "optax", options, also)
        return baselines.optax_optimiser(residual, params0, args, method, **options)
    if isinstance(method, str) and method in FIRST_ORDER:
        options.pop("jac", None)  # first-order methods need gradients only (reverse mode)
        target = getattr(baselines, method)
        _check_options(target, method, options, also)
        return target(residual, params0, args, **options)
    _check_options(least_squares, method, options, also)
    return least_squares(residual, params0, args, method=method, **options)


def _as_arrays(tree):
    """Numbers and NumPy arrays in ``tree`` as JAX arrays (what ``trainable`` filters see)."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf) if isinstance(leaf, float | int | np.ndarray) else leaf, tree
    )


# Options that belong to one kind of method, and what to say when the other kind is given them.
_FIRST_ORDER_ONLY = {"learning_rate", "b1", "b2", "eps", "momentum", "nesterov", "memory_size"}
_LEAST_SQUARES_ONLY = {"ftol", "xtol", "linear", "max_jacobian_bytes", "covariance", "resume"}


def _check_options(target, method, options: dict, also) -> None:
    """Refuse, before anything is compiled, an option that ``target`` (``least_squares`` or a
    baseline) does not take, saying which method takes it or which name was meant."""
    import difflib
    import inspect

    taken = [
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "method"
    ]
    unknown = sorted(set(options) - set(taken))
    if not unknown:
        return
    name = unknown[0]
    label = method if isinstance(method, str) else type(method).__name__
    first_order = isinstance(method, str) and method in (*FIRST_ORDER, "optax")
    close = difflib.get_close_matches(name, [*taken, *also], n=1, cutoff=0.6)
    if name in _FIRST_ORDER_ONLY and not first_order:
        hint = (
            f"{name} is an option of the first-order methods (method='adam' or 'sgd'"
            f"{'' if name != 'memory_size' else ', or memory_size for lbfgs'}); a least-squares "
            "method needs none: its damping or trust radius adapts at every step"
        )
    elif name in _FIRST_ORDER_ONLY:
        hint = f"{name} is an option of {'lbfgs' if name == 'memory_size' else 'adam and sgd'}" + (
            "; L-BFGS finds its step length by a line search" if method == "lbfgs" else ""
        )
    elif name in _LEAST_SQUARES_ONLY and first_order:
        hint = (
            f"{name} is an option of the least-squares methods ('lm', 'gn', 'dogleg', "
            f"'trust_region'); {method!r} does not take it"
            + ("" if name in ("covariance", "resume") else " (it stops on gtol or max_steps)")
        )
    elif name in ("maxiter", "max_iter", "max_nfev", "iterations", "steps", "epochs"):
        hint = "the budget is max_steps" + (
            " (epochs: with batch_size)" if name == "epochs" else ""
        )
    else:
        hint = f"did you mean {close[0]}?" if close else "drop it"
    raise ValueError(
        f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
        f"method={label!r}: {hint}{'' if hint.endswith('?') else '.'} The options are "
        f"{', '.join([*also, *taken])}"
    )


class _Function(eqx.Module):
    """A plain model ``fn(params, x)`` seen as a module, so that both kinds share one code path."""

    fn: Callable[..., Any]
    params: Any

    def __call__(self, x):
        return self.fn(self.params, x)


def fit(
    model,
    x,
    y,
    *,
    method: str | eqx.Module = "lm",
    weights=None,
    val: tuple | None = None,
    callbacks: Sequence[Callable[[StepInfo], Any]] = (),
    callback_every: int = 1,
    max_steps: int | None = None,
    history: bool = True,
    trainable=eqx.is_inexact_array,
    jac: str | Callable[..., Any] = "per_sample",
    batch_size: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    loss: str | Callable[[Any], Any] = "linear",
    f_scale: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    **solver_options,
) -> FitResult:
    """Fit ``model`` to samples ``(x, y)`` by least squares.

    Args:
        model: an equinox module applied to one sample, ``model(x[i])``, or a pair ``(fn, params)``
            of a function ``fn(params, x[i])`` and its parameter pytree.
        x: the inputs, an array (or pytree of arrays) with the samples along the leading axis.
        y: the targets, an array with the samples along the leading axis; ``y[i]`` has the shape of
            ``model(x[i])``.
        method: ``"lm"``, ``"gn"``, ``"dogleg"``, ``"trust_region"`` or a solver object
            (``nlls.least_squares``), or a first-order baseline ``"adam"``, ``"sgd"``,
            ``"lbfgs"`` (``nlls.baselines``, same residual, callbacks and History), or any optax
            ``GradientTransformation`` (``optax.adamw(1e-3)``, a chain, an optimiser with a
            schedule; ``nlls.baselines.optax_optimiser``). Adam's and SGD's ``learning_rate`` may
            be an optax schedule.
        weights: non-negative weights broadcastable to ``y.shape``, multiplying the residuals (so
            ``1/σ`` for measurement errors σ); ``None`` for all ones.
        val: ``(x_val, y_val)``: the validation mean squared error is recorded in the History as
            ``"val_mse"`` at every callback call.
        callbacks, callback_every: as for ``least_squares``; with ``batch_size``,
            ``callback_every`` counts epochs. The callbacks' ``StepInfo.model`` is the model at
            the current parameters (as ``fit`` returns it), and ``nlls.EarlyStopping`` and
            ``nlls.Metrics`` evaluate their functions on it: ``EarlyStopping(lambda m:
            validation_loss(m))`` stops on the model's validation loss and restores the best.
        max_steps: the most accepted steps (optimiser updates for a first-order method); default
            1000. With ``batch_size``: the most iterations (batches, accepted or not), no limit by
            default.
        history: record an ``nlls.History`` (returned as ``FitResult.history``). With
            ``history=False``, no ``val`` and no callbacks, the fit is one compiled program: it
            works under ``jax.jit`` and ``jax.vmap`` and can be differentiated with respect to
            ``x``, ``y``, ``weights`` and the model's frozen leaves (``nlls.least_squares``).
        trainable: an ``equinox.partition`` filter choosing the fitted leaves (default: every
            floating-point array); the other leaves are returned unchanged.
        jac: ``"per_sample"`` (default: the Jacobian as a vmap over samples of per-sample
            Jacobians), or anything ``least_squares`` accepts (``"auto"``, ``"fwd"``, ``"rev"``
            differentiate the batched residual).
        batch_size: train on minibatches of this many samples (``1 ≤ batch_size ≤ len(y)``):
            ``method="lm"`` is the stochastic Levenberg–Marquardt method of Bergou, Diouane,
            Kungurtsev & Royer (a fresh batch per iteration, the gain ratio measured on it, the
            damping ``μ‖g‖``), ``"adam"`` and ``"sgd"`` take the same batches; see
            ``nlls.solvers.minibatch``. The History then has one row per epoch, with an ``epoch`` column,
            and ``cost`` is the epoch's mean batch cost scaled to the whole set.
        epochs: with ``batch_size``, the number of passes over the data (default 10 when
            ``max_steps`` is not given either; with both, the first reached ends the fit).
        seed: with ``batch_size``, seeds the per-epoch shuffling (default 0).
        loss, f_scale: a robust loss of the (weighted) residuals, as ``least_squares`` takes it
            (``"soft_l1"``, ``"huber"``, ``"cauchy"``, ``"arctan"`` or a function; ``nlls.losses``),
            for the least-squares methods on the whole data set. The first-order baselines and
            minibatch training minimise the plain mean squared error and refuse any loss but
            ``"linear"``.
        mesh: a ``jax.sharding.Mesh``: the samples (``x``, ``y``, ``weights``, ``val``) are
            split over its ``"data"`` axis (or its only axis), as many to each device, and the
            fit runs on all of them as one program (``nlls.sharding``): the residual and the
            Jacobian stay split by rows, and only sums over samples (``JᵀJ``, ``Jᵀr``, norms) cross
            devices. The number of samples (and ``batch_size``) must be a multiple of that
            axis's size. Arrays already placed so (``jax.make_array_from_process_local_data``
            in a multi-process run) are used as they are. The parameters are the same as on one
            device, to rounding. ``None`` (default): the data stay where they are.
        solver_options: passed on (``ftol``, ``xtol``, ``gtol``, ``linear``, ``max_time``;
            ``bounds=(lower, upper)`` for ``"lm"``, each side a scalar or shaped like the model
            (an equinox module, or the ``params`` of a pair ``(fn, params)``) — see
            ``least_squares``;
            ``learning_rate`` and the like for a first-order method; with ``batch_size``, the
            options of the minibatch methods: ``accept_threshold``, ``gradient_threshold``,
            ``damping_coefficient``, ``min_damping_coefficient``, ``damping_growth`` for LM,
            ``learning_rate`` and the like for Adam and SGD; see ``nlls.solvers.minibatch``).

    The data are cast to the dtype of the trainable parameters.

    Returns:
        A ``FitResult(model, solution, history)``.

    Raises:
        ValueError: before any training, when ``x`` and ``y`` differ in length, the data or the
            weights hold NaN or inf, ``model(x[0])`` does not have the shape of ``y[0]``, or the
            model has no trainable leaves; with ``batch_size``, when it is not a positive int up to
            the number of samples, the method is not ``"lm"``, ``"adam"`` or ``"sgd"``, or
            ``epochs``/``seed`` are given without it; a robust loss with a first-order method or
            ``batch_size``, an unknown loss or an ``f_scale`` not finite and positive.

    Examples:
        >>> import equinox as eqx, jax, jax.numpy as jnp, nlls
        >>> x = jnp.linspace(-1.0, 1.0, 50)[:, None]
        >>> y = jnp.sin(2.0 * x)
        >>> model = eqx.nn.MLP(1, 1, width_size=8, depth=1, activation=jnp.tanh,
        ...                    key=jax.random.key(0))
        >>> result = nlls.fit(model, x, y, max_steps=200)
        >>> mse = float(jnp.mean((jax.vmap(result.model)(x) - y) ** 2))
        >>> bool(mse < 1e-6), result.solution.stats.linear
        (True, 'normal')
    """
    robust = not checks.loss(loss, f_scale).linear
    if robust and (batch_size is not None or (isinstance(method, str) and method in FIRST_ORDER)):
        raise ValueError(
            f"loss={loss!r} needs a least-squares method (method='lm', 'gn', 'dogleg' or "
            "'trust_region') without batch_size: the first-order baselines and minibatch "
            "training minimise the plain mean squared error; use loss='linear' with them"
        )
    if robust:
        solver_options.update(loss=loss, f_scale=f_scale)
    as_pair = isinstance(model, tuple)
    if as_pair:
        if len(model) != 2 or not callable(model[0]):
            raise TypeError("a plain model is a pair (fn, params) with fn(params, x[i])")
        fn, params = model
        params = jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(leaf) if isinstance(leaf, float | int | np.ndarray) else leaf,
            params,
        )
        module = _Function(fn, params)
        trainable = _Function(fn=False, params=trainable)
    elif isinstance(model, eqx.Module):
        module = model
    else:
        raise TypeError(
            f"model must be an equinox Module or a pair (fn, params), got {type(model).__name__}"
        )
    params0, frozen = eqx.partition(module, trainable)
    dtype = _trainable_dtype(params0)
    x, y, weights = _check_data(module, x, y, weights, dtype, "")
    if mesh is not None:
        x, y, weights, val = _shard(mesh, x, y, weights, val, batch_size)
    outputs = int(np.prod(y.shape[1:]))  # per sample: the model's output size, as checked
    validation = None
    if val is not None:
        if not (isinstance(val, tuple | list) and len(val) == 2):
            raise TypeError("val must be a pair (x_val, y_val)")
        x_val, y_val, _ = _check_data(module, val[0], val[1], None, dtype, "val ")
        validation = Metrics({"val_mse": lambda p: _mse(p, frozen, x_val, y_val)})

    if (history or val is not None or callbacks) and _traced((module, x, y, weights)):
        raise ValueError(
            "fit records a History by default, and val and callbacks run from Python between "
            "compiled segments: pass history=False (and no val or callbacks) to use fit under "
            "jax.jit, jax.vmap or a derivative (jax.grad, jax.jvp, ...)"
        )
    recorder = History() if history else None
    extra = tuple(c for c in (recorder, validation) if c is not None)
    model_of = functools.partial(_model_of, frozen=frozen, as_pair=as_pair)
    given = checks.callbacks(callbacks, callback_every, None)
    callbacks = (*(_SeesModel.wrap(c, model_of) for c in given), *extra)
    if jac == "per_sample":
        jac = _per_sample_jacobian(outputs, params0)
    if solver_options.get("bounds") is not None:
        if batch_size is not None:
            raise ValueError(
                "bounds are not taken by minibatch training: drop batch_size or bounds"
            )
        wrap = (lambda side: _Function(fn=fn, params=side)) if as_pair else (lambda side: side)
        solver_options["bounds"] = tuple(
            side if is_scalar(side) else eqx.partition(_as_arrays(wrap(side)), trainable)[0]
            for side in solver_options["bounds"]
        )
    if batch_size is not None:
        from ._minibatch import train

        if (
            isinstance(method, str)
            and method == "lm"
            or not (isinstance(method, str) or checks.is_optax_transformation(method))
        ):
            solver_options["jac"] = jac
        solution = train(
            method,
            _residual,
            params0,
            (frozen,),
            (x, y, weights),
            batch_size=batch_size,
            epochs=epochs,
            max_steps=max_steps,
            seed=0 if seed is None else seed,
            callbacks=callbacks,
            callback_every=callback_every,
            **solver_options,
        )
    else:
        if epochs is not None or seed is not None:
            raise ValueError(
                "epochs and seed apply to minibatch training: give batch_size too (or drop them)"
            )
        options = dict(solver_options, max_steps=1000 if max_steps is None else max_steps)
        if callbacks:
            options.update(callbacks=callbacks, callback_every=callback_every)
        solution = solve_with(
            method, _residual, params0, (frozen, x, y, weights), jac=jac, **options
        )
    model = eqx.combine(solution.params, frozen)
    if as_pair:  # the parameters as the user gave them, not wrapped in the module
        model = (model.fn, model.params)
        solution = eqx.tree_at(lambda s: s.params, solution, solution.params.params)
    return FitResult(model=model, solution=solution, history=recorder)


def _shard(mesh, x, y, weights, val, batch_size):
    """The data split by samples over the mesh's data axis (``nlls.sharding``)."""
    axis = sharding.data_axis(mesh)
    count = int(mesh.shape[axis])
    if batch_size is not None and batch_size % count:
        raise ValueError(
            f"batch_size={batch_size} is not a multiple of the {count} devices of the mesh axis "
            f"{axis!r}: each device draws an equal part of every batch from its own samples"
        )
    x, y = sharding.shard_samples((x, y), mesh, axis, "x, y")
    if weights is not None:
        weights = sharding.shard_samples(weights, mesh, axis, "weights")
    if val is not None:
        val = tuple(sharding.shard_samples(tuple(val), mesh, axis, "val"))
    return x, y, weights, val


def _traced(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def _model_of(params, frozen, as_pair: bool):
    """The model as ``fit`` returns it, from the solve's parameters (the trainable partition)."""
    model = eqx.combine(params, frozen)
    return (model.fn, model.params) if as_pair else model


class _SeesModel:
    """A callback of ``fit`` whose ``StepInfo`` carries the model (``StepInfo.model``), so that
    ``EarlyStopping``, ``Metrics`` and the user's functions see what they fit, not the solve's
    partition of it. ``History`` and ``Checkpoint`` need no model and are passed as they are."""

    def __init__(self, callback, model_of):
        self.callback, self.model_of = callback, model_of

    @classmethod
    def wrap(cls, callback, model_of):
        return callback if isinstance(callback, History | Checkpoint) else cls(callback, model_of)

    def _seen(self, info: StepInfo) -> StepInfo:
        # The same metrics dict: what the callback records lands in the History's row.
        return dataclasses.replace(info, model=self.model_of(info.params))

    def __call__(self, info: StepInfo):
        return self.callback(self._seen(info))

    def on_start(self, info: StepInfo) -> None:
        if hasattr(self.callback, "on_start"):
            self.callback.on_start(self._seen(info))

    def on_end(self, info: StepInfo) -> None:
        if hasattr(self.callback, "on_end"):
            self.callback.on_end(self._seen(info))

    def restore(self):
        return self.callback.restore() if hasattr(self.callback, "restore") else None


def _residual(params, frozen, x, y, weights):
    """``w ⊙ (model(xᵢ) − yᵢ)`` for every sample, flattened sample-major."""
    model = eqx.combine(params, frozen)
    error = jax.vmap(model)(x) - y
    if weights is not None:
        error = error * weights
    return error.reshape(-1)


def _jacobian_per_sample(differentiate, params, frozen, x, y, weights):
    """The (m, n) Jacobian of ``_residual`` as a stack of per-sample blocks.

    Each sample is differentiated with respect to the parameter pytree (not a flat vector: no
    unravelling inside the vmapped derivative, which measured 20% faster); the blocks of each leaf,
    of shape (samples, k, *leaf), are then laid side by side in ``ravel_pytree``'s order."""

    def sample_residual(trainable, xi, yi, wi):
        error = eqx.combine(trainable, frozen)(xi) - yi
        if wi is not None:
            error = error * wi
        return error.reshape(-1)

    blocks = jax.vmap(differentiate(sample_residual), in_axes=(None, 0, 0, 0))(
        params, x, y, weights
    )
    rows = y.size  # samples × k
    return jnp.concatenate(
        [leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(blocks)], axis=1
    )


def _per_sample_jacobian_rev(params, frozen, x, y, weights):
    return _jacobian_per_sample(jax.jacrev, params, frozen, x, y, weights)


def _per_sample_jacobian_fwd(params, frozen, x, y, weights):
    return _jacobian_per_sample(jax.jacfwd, params, frozen, x, y, weights)


# Exact by construction (AD of the same residual): least_squares need not check them (``jac``).
_per_sample_jacobian_rev.exact = _per_sample_jacobian_fwd.exact = True


def _per_sample_jacobian(outputs: int, params0):
    """Reverse mode per sample when a sample has fewer outputs than there are parameters
    (``k < n``: k VJPs per sample), forward mode otherwise (n JVPs per sample)."""
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params0))
    return _per_sample_jacobian_rev if outputs < n else _per_sample_jacobian_fwd


@eqx.filter_jit
def _mse(params, frozen, x, y):
    return jnp.mean(_residual(params, frozen, x, y, None) ** 2)


def _trainable_dtype(params0):
    """``checks.params_dtype`` in ``fit``'s words: the solve's ``params0`` is the trainable leaves."""
    if not jax.tree_util.tree_leaves(params0):
        raise ValueError(
            "the model has no trainable leaves (no floating-point arrays selected by `trainable`)"
        )
    try:
        return checks.params_dtype(params0)
    except ValueError as error:
        raise ValueError(f"the trainable leaves (chosen by `trainable`): {error}") from None


def _check_data(module, x, y, weights, dtype, prefix: str):
    """Cast the data to ``dtype`` and check lengths, finiteness and the model's output shape."""
    x = jax.tree_util.tree_map(lambda leaf: _cast(leaf, dtype), x)
    y = _cast(y, dtype)
    x_leaves = jax.tree_util.tree_leaves(x)
    if not x_leaves or y.ndim == 0:
        raise ValueError(f"{prefix}x and y need the samples along a leading axis")
    samples = y.shape[0]
    if any(leaf.ndim == 0 for leaf in x_leaves) and isinstance(x, list | tuple):
        raise ValueError(
            f"{prefix}x is a {type(x).__name__} of scalars: give an array with the samples along "
            f"its leading axis (jnp.asarray({prefix.strip() or 'x'}))"
        )
    for leaf in x_leaves:
        if leaf.ndim == 0 or leaf.shape[0] != samples:
            raise ValueError(
                f"{prefix}x has {leaf.shape[0] if leaf.ndim else 'no'} samples but {prefix}y has "
                f"{samples}: x and y need the same length along the leading axis"
            )
    if samples == 0:
        raise ValueError(f"{prefix}x and y hold no samples")
    for name, leaf in [*((f"{prefix}x", leaf) for leaf in x_leaves), (f"{prefix}y", y)]:
        checks.finite(name, leaf)
    try:
        output = _output_shape(module, x)
    except Exception as error:  # the user's model failed to trace on one sample: say so
        raise ValueError(f"calling the model on one sample {prefix}x[0] failed: {error}") from error
    if not hasattr(output, "shape") or tuple(output.shape) != tuple(y.shape[1:]):
        got = getattr(output, "shape", type(output).__name__)
        column = (
            f" ({prefix}y[:, None] for one output per sample)"
            if tuple(got) == (1,) and y.ndim == 1
            else ""
        )
        raise ValueError(
            f"the model returns shape {got} for one sample but {prefix}y[0] has shape "
            f"{tuple(y.shape[1:])}: reshape y so that y[i] has the shape of the model's "
            f"output{column}, or change the model"
        )
    if weights is not None:
        weights = checks.weights(weights, y.shape, dtype, "y")
    return x, y, weights


_OUTPUT_SHAPES: dict = {}


def _output_shape(module, x):
    """``jax.eval_shape(module, x[0])``, remembered by everything that fixes it (the module's
    structure, its arrays' shapes and dtypes, its other leaves, the sample's shapes and dtypes), so
    that repeated fits of one model do not trace it again."""
    sample = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), x
    )
    leaves, treedef = jax.tree_util.tree_flatten((module, sample))
    key = (treedef, tuple((l.shape, l.dtype) if hasattr(l, "shape") else l for l in leaves))
    try:
        cached = _OUTPUT_SHAPES.get(key)
    except TypeError:  # an unhashable leaf: no memory
        return jax.eval_shape(module, sample)
    if cached is None:
        if len(_OUTPUT_SHAPES) >= 128:
            _OUTPUT_SHAPES.clear()
        cached = _OUTPUT_SHAPES[key] = jax.eval_shape(module, sample)
    return cached


def _cast(leaf, dtype):
    leaf = jnp.asarray(leaf)
    return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf
