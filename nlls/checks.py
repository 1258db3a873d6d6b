"""Input checks shared by every front end (``least_squares``, ``fit``, ``ode.fit``, the baselines and
minibatch training), in one style: each raises ``ValueError`` (or ``TypeError`` for a value of the
wrong kind) with a message that names the argument, what it got and, where there is one, the fix.

The checks that need the problem's shapes (``params_dtype``, ``residual_size``,
``user_jacobian_shape``) run once per compiled plan (``nlls.plan``); the others run on every call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .losses import LINEAR, LOSS_NAMES, Loss
from .problem import describe_leaves

INT32_MAX = int(np.iinfo(np.int32).max)

LEAST_SQUARES_METHODS = ("auto", "lm", "gn", "dogleg", "trust_region")
FIRST_ORDER_METHODS = ("adam", "sgd", "lbfgs")
_IN_WORDS = {
    LEAST_SQUARES_METHODS: "'auto', 'lm', 'gn', 'dogleg', 'trust_region' (least squares) or a configured "
    "solver such as nlls.LevenbergMarquardt(geodesic=True)",
    FIRST_ORDER_METHODS: "'adam', 'sgd', 'lbfgs' (first-order, nlls.baselines) or any optax "
    "GradientTransformation such as optax.adam(1e-3)",
}


def method_name(method, allowed=LEAST_SQUARES_METHODS + FIRST_ORDER_METHODS) -> None:
    """Refuse a method name that is not one of ``allowed``, suggesting the one meant (a case or
    spelling slip: ``"Adam"``, ``"LM"``, ``"levenberg_marquardt"``) and listing them all."""
    if not isinstance(method, str) or method in allowed:
        return
    import difflib

    aliases = {"levenberg_marquardt": "lm", "levenberg-marquardt": "lm", "gauss_newton": "gn"}
    lowered = method.lower().replace(" ", "_")
    meant = aliases.get(lowered, lowered if lowered in allowed else None)
    if meant is None:
        close = difflib.get_close_matches(lowered, allowed, n=1, cutoff=0.6)
        meant = close[0] if close else None
    hint = f" (did you mean {meant!r}?)" if meant in allowed else ""
    kinds = [words for names, words in _IN_WORDS.items() if set(names) <= set(allowed)]
    raise ValueError(f"unknown method {method!r}{hint}; the methods are {', '.join(kinds)}")


def args_tuple(args) -> tuple:
    """The extra arguments of a residual as a tuple; a single array given bare is refused with
    the fix (``args=(x,)``): unpacking it would pass its rows as separate arguments."""
    if isinstance(args, tuple):
        return args
    if isinstance(args, list):
        return tuple(args)
    shape = getattr(args, "shape", None)
    what = f"an array of shape {tuple(shape)}" if shape is not None else type(args).__name__
    raise TypeError(
        f"args must be a tuple of the residual's extra arguments, got {what}: for one argument "
        "write args=(x,), for several args=(x, y)"
    )


def tolerance(name: str, value) -> float:
    """A termination tolerance: a non-negative number (0 switches its test off)."""
    return non_negative(name, value)


def params_dtype(params0) -> np.dtype:
    """The one floating dtype of the leaves of ``params0``."""
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
    dtype = dtypes.pop()
    if jnp.finfo(dtype).bits < 32:
        raise ValueError(
            f"params0 is {np.dtype(dtype).name}: nlls solves in float32 or float64 (half precision "
            "has 3 significant digits, too few for the linear algebra of a step, and LAPACK has no "
            "half-precision factorisations); convert with .astype(jnp.float32)"
        )
    return dtype


def residual_size(residual, params0, args, dtype, call: str = "residual(params0, *args)") -> int:
    """``m``, the number of residuals, after checking that ``residual`` traces and returns floating
    arrays of ``dtype``."""
    try:
        shape = eqx.filter_eval_shape(residual, params0, *args)
    except Exception as error:  # the user's function failed to trace: say where
        raise ValueError(f"calling {call} failed: {error}") from error
    leaves = jax.tree_util.tree_leaves(shape)
    if not leaves:
        raise ValueError("residual returned no arrays")
    for leaf in leaves:
        if not hasattr(leaf, "dtype"):
            raise ValueError(
                f"residual must return JAX arrays (a pytree of them), got a {type(leaf).__name__}: "
                "build it with jax.numpy (e.g. jnp.array([...]) or jnp.stack) from the parameters"
            )
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


def user_jacobian_shape(jac, params0, args, m: int, n: int, call: str = "jac(params, *args)"):
    """Check that a user's Jacobian function returns the ``(m, n)`` matrix."""
    shape = eqx.filter_eval_shape(jac, params0, *args)
    if not hasattr(shape, "shape") or tuple(shape.shape) != (m, n):
        got = getattr(shape, "shape", type(shape).__name__)
        raise ValueError(
            f"{call} must return the (m, n) = ({m}, {n}) Jacobian of the flattened "
            f"residual with respect to the flattened parameters, got shape {got}"
        )


def user_jacobian_values(residual, jac, params0, args) -> None:
    """Compare a user's Jacobian, once, with the residual's own derivative: ``J v`` against the
    Jacobian–vector product of the residual at ``params0`` along a random direction ``v``.

    A wrong sign, a wrong scale, swapped columns or a constant matrix all differ there by far more
    than rounding; a mismatch above ``eps^(1/3) · ‖J‖_F ‖v‖`` is a ``ValueError``. Skipped when the
    values are traced (a solve inside ``jit``), when JAX cannot differentiate the residual, or when
    either side is not finite (the solve reports a non-finite start itself)."""
    if any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((params0, args))
    ):
        return
    flat, unravel = ravel_pytree(params0)

    def flat_residual(p):
        return ravel_pytree(residual(unravel(p), *args))[0]

    direction = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
    try:
        _, expected = jax.jvp(flat_residual, (flat,), (direction,))
    except Exception:  # noqa: BLE001 (not differentiable by JAX: a callback, a custom primitive)
        return
    matrix = jnp.asarray(jac(params0, *args))
    given = matrix @ direction
    scale = float(jnp.linalg.norm(matrix) * jnp.linalg.norm(direction))
    error = float(jnp.linalg.norm(given - expected))
    if not (np.isfinite(error) and np.isfinite(scale)):
        return
    tolerance = float(jnp.finfo(flat.dtype).eps) ** (1 / 3)
    if error > tolerance * max(scale, float(jnp.linalg.norm(expected))):
        raise ValueError(
            "jac(params, *args) does not match the derivative of the residual at params0: along "
            f"a random direction v, ‖J v − (∂r/∂θ) v‖ = {error:.3g} against ‖J‖‖v‖ = {scale:.3g}. "
            "Check signs, scale and column order (columns follow the flattened parameters, "
            "jax.flatten_util.ravel_pytree(params0)); pass check_jac=False to skip this check"
        )


def callbacks(given, callback_every, max_time) -> tuple:
    """The callbacks as a tuple, with ``callback_every`` and ``max_time`` checked."""
    if callable(given):
        given = (given,)
    if given is not None and (not isinstance(given, Iterable) or isinstance(given, str)):
        raise TypeError(
            f"callbacks must be a list of callables (each given a StepInfo), got {given!r}"
        )
    given = tuple(given or ())
    for callback in given:
        if not callable(callback):
            raise TypeError(
                f"a callback must be callable (it is given a StepInfo), got {callback!r}"
            )
    if isinstance(callback_every, bool) or not (
        isinstance(callback_every, int | np.integer) and callback_every >= 1
    ):
        raise ValueError(f"callback_every must be a positive int, got {callback_every!r}")
    if max_time is not None and (
        isinstance(max_time, bool)
        or not (isinstance(max_time, int | float | np.integer | np.floating) and max_time >= 0)
    ):
        raise ValueError(
            f"max_time must be a non-negative number of seconds (None: no limit), got {max_time!r}"
        )
    return given


def step_limit(name: str, value) -> int:
    """A step or iteration budget: a non-negative int that fits the loop's int32 counters."""
    if isinstance(value, bool) or not (
        isinstance(value, int | np.integer) and 0 <= value <= INT32_MAX
    ):
        raise ValueError(f"{name} must be a non-negative int (below 2**31), got {value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not (isinstance(value, int | np.integer) and value >= 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def byte_budget(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"max_jacobian_bytes must be a number of bytes, got {value!r}")
    try:  # a Python int of any size (np.isfinite refuses one beyond 2**64)
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not (value > 0 and finite):
        raise ValueError(f"max_jacobian_bytes must be positive and finite, got {value!r}")
    return int(value)


def number(name: str, value) -> float:
    """A finite real number (a hyperparameter)."""
    if callable(value):
        raise ValueError(
            f"{name} must be a number (a schedule is taken by learning_rate only), got {value!r}"
        )
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def learning_rate(value):
    """A positive learning rate, or a schedule: a function of the update count (``optax``'s
    schedules, e.g. ``optax.exponential_decay(1e-2, 1000, 0.1)``), kept as it is."""
    if callable(value):
        return value
    return positive("learning_rate", value)


def is_optax_transformation(method) -> bool:
    """Whether ``method`` is an optax ``GradientTransformation`` (a pair of ``init`` and
    ``update`` functions; checked by shape, so that optax need not be imported to ask)."""
    return (
        isinstance(method, tuple)
        and callable(getattr(method, "init", None))
        and callable(getattr(method, "update", None))
    )


def positive(name: str, value) -> float:
    result = number(name, value)
    if not result > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result


def non_negative(name: str, value) -> float:
    result = number(name, value)
    if not result >= 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return result


def fraction(name: str, value) -> float:
    """A number in ``[0, 1)`` (a decay rate, an acceptance threshold)."""
    result = number(name, value)
    if not 0 <= result < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return result


def bounded_int(name: str, value, low: int, high: int) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not (
        isinstance(value, int | np.integer) and low <= value <= high
    ):
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def sample_count(data) -> int:
    """N, the common length of the leading axis of every leaf of ``data``."""
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


def finite(name: str, value) -> None:
    """Data without NaN or inf (an array of numbers; traced values and integers pass)."""
    if isinstance(value, jax.core.Tracer) or not jnp.issubdtype(value.dtype, jnp.inexact):
        return
    if isinstance(value, jax.Array) and not value.is_fully_addressable:  # spread over processes
        bad = int(_count_nonfinite(value))
    else:
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(np.asarray(value))))
    if bad:
        raise ValueError(
            f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}: remove or impute "
            "them before fitting"
        )


@jax.jit
def _count_nonfinite(value):
    return jnp.sum(~jnp.isfinite(value))


def weights(value, shape: tuple, dtype, data: str):
    """Finite non-negative weights as ``dtype``, broadcast to ``shape``, the shape of ``data``."""
    value = jnp.asarray(value, dtype)
    finite("weights", value)
    negative = (
        bool(jnp.any(value < 0))
        if isinstance(value, jax.Array) and not value.is_fully_addressable
        else np.any(np.asarray(value) < 0)
    )
    if negative:
        raise ValueError("weights must be non-negative")
    try:
        return jnp.broadcast_to(value, shape)
    except ValueError as error:
        raise ValueError(
            f"weights of shape {value.shape} do not broadcast to {data}'s shape {tuple(shape)}"
        ) from error


def loss(name, f_scale) -> Loss:
    """The ``Loss`` of ``loss=name`` (one of ``LOSS_NAMES`` or a function ``rho(z) -> (3, m)``)
    and ``f_scale``, a finite positive number; the linear loss ignores ``f_scale`` (its cost is
    ``½‖r‖²`` whatever the scale), so every linear loss is the same plan."""
    if not (callable(name) or (isinstance(name, str) and name in LOSS_NAMES)):
        raise ValueError(
            f"loss must be one of {LOSS_NAMES} or a function rho(z) returning the (3, m) array "
            f"[rho, rho', rho''], got {name!r}"
        )
    if isinstance(f_scale, bool):
        raise ValueError(f"f_scale must be a positive number, got {f_scale!r}")
    try:
        scale = float(f_scale)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"f_scale must be a positive number (the residual size beyond which a residual "
            f"counts as an outlier), got {f_scale!r}"
        ) from error
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(
            f"f_scale must be finite and positive (the residual size beyond which a residual "
            f"counts as an outlier; 1.0 by default), got {f_scale!r}"
        )
    if isinstance(name, str) and name == "linear":
        return LINEAR
    return Loss(name, scale)


def loss_output(given: Loss, m: int, dtype) -> None:
    """Check that a callable loss maps ``z`` of shape ``(m,)`` to a floating ``(3, m)`` array."""
    if given.linear or isinstance(given.rho, str):
        return
    try:
        shape = jax.eval_shape(given.rho, jax.ShapeDtypeStruct((m,), dtype))
    except Exception as error:  # the user's function failed to trace: say where
        raise ValueError(f"calling loss(z) with z of shape ({m},) failed: {error}") from error
    if not (
        hasattr(shape, "shape")
        and tuple(shape.shape) == (3, m)
        and jnp.issubdtype(shape.dtype, jnp.floating)
    ):
        got = getattr(shape, "shape", type(shape).__name__)
        raise ValueError(
            f"loss(z) must return the floating (3, m) = (3, {m}) array [rho(z), rho'(z), "
            f"rho''(z)] (e.g. jnp.stack([rho, d_rho, d2_rho])), got {got}"
        )
