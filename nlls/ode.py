"""Fitting the vector field of an ODE to observed trajectories, by single and multiple shooting.

The problem
-----------
A state ``u(t) ∈ Rᵈ`` is observed as ``y_0, …, y_{T−1}`` at times ``t_0 < … < t_{T−1}`` and obeys

    du/dt = g(t, u) + f_θ(t, u),

where ``f_θ`` is the model being fitted (an equinox module, or ``fn(params, t, u)``) and ``g`` an
optional known term (``physics``; a "universal differential equation" when ``f_θ`` is a network
that stands in for the unknown part). The ODE is solved by diffrax inside the residual, so fitting
``θ`` is a nonlinear least-squares problem, ``min ½‖r(θ)‖²``, for any ``nlls`` method.

Single shooting
---------------
Integrate once over the whole record from ``u(t_0) = y0`` (the first observation, or a parameter
with ``fit_y0=True``):

    r_i = w_i ⊙ (u(t_i; θ, y0) − y_i),    i = 0, …, T−1.

Multiple shooting (Bock 1981; Peifer & Timmer 2007)
-----------------------------------------------
Cut the grid into ``K`` consecutive segments at indices ``0 = b_0 < b_1 < … < b_K = T−1``,
``b_k = round(k(T−1)/K)``; neighbouring segments share their boundary point. Segment ``k`` starts
from its own state ``s_k`` at ``t_{b_k}`` (``s_0 = y0``; ``s_1, …, s_{K−1}`` are extra parameters,
started at the observations ``y_{b_k}``) and is integrated over ``[t_{b_k}, t_{b_{k+1}}]`` only:

    data:        r_i = w_i ⊙ (u_k(t_i; θ, s_k) − y_i),        i = 0, …, T−1,
    continuity:  c_k = ρ (u_k(t_{b_{k+1}}; θ, s_k) − s_{k+1}),  k = 0, …, K−2,

where ``k`` is the segment that starts at or contains ``t_i`` (a boundary point is the first point
of the next segment; the last point belongs to the last segment) and ``ρ = continuity_weight``.
Each observation enters once, so where every ``c_k = 0`` the segments join into one trajectory and
the data residuals are exactly single shooting's: both problems have the same exact fits.

Why multiple shooting: over a long horizon the single-shooting trajectory depends on ``θ`` through
everything that happened before — errors in a frequency add up to phase errors that grow with
``t``, so ``½‖r‖²`` is a rippled landscape whose local minima (trajectories out of phase, or a
damped solution sitting near the data mean) trap a local method, and a poor ``θ`` can drive the
solution far from the data or make it blow up. A segment only runs from a state near the data for a
short time, so its residual stays close to linear in ``θ`` over a far wider neighbourhood; the
continuity residuals are enforced as the solve converges rather than from the start, which lets the
solver move through parameter values whose single trajectory would be useless. The price is
``(K−1)·d`` extra parameters and residuals.

An example (``tests/test_ode.py``): Lotka–Volterra, ``dx = αx − βxy``, ``dy = −δy + γxy`` with
``(α, β, δ, γ) = (1.5, 1, 3, 1)``, ``u(0) = (1, 1)``, observed without noise at 21 times over
``t ∈ [0, 10]`` (three periods of about 3.3). Levenberg–Marquardt, forward mode:

======================  ===================================  =================================
start ``(α, β, δ, γ)``  single shooting                      six segments
======================  ===================================  =================================
``(1, 1, 1, 1)``        local minimum after 19 steps: cost   exact fit in 10 steps (relative
                        55.7 at (3.17, 2.05, 0.35, 0.18)     error 6e-9, continuity < 1e-8)
``(0, 0, 0, 0)``        no convergence in 1000 steps: cost   exact fit in 11 steps
                        56.7 at (3.88, 2.35, −0.85, −0.26)
``0.7 × true``          the local minimum of the first row   exact fit in 6 steps
======================  ===================================  =================================

Over ``t ∈ [0, 2]`` (the usual reference problem) single shooting from zero is fine (18 steps).

Segments are integrated together (``jax.vmap``): when ``K`` does not divide ``T−1`` the segments
differ in length by one interval, and the shorter ones are padded by repeating their end time (the
padded points are never used); any ``1 ≤ K ≤ T−1`` works.

AD mode and diffrax adjoint
---------------------------
The Jacobian of the residual is built by forward mode (``n`` JVPs, best when the ``n`` parameters
are at most the ``m`` residuals) or reverse mode (``m`` VJPs). Differentiating through
``diffrax.diffeqsolve`` needs an adjoint that supports that mode (diffrax 0.7):

================================  ============  ============
adjoint                           forward mode  reverse mode
================================  ============  ============
``ForwardMode()``                 yes           no
``RecursiveCheckpointAdjoint()``  no            yes
``BacksolveAdjoint()``            no            yes
``DirectAdjoint()``               yes           yes (slower than either specialist)
================================  ============  ============

(``ImplicitAdjoint`` is for steady states, not trajectories, and is refused.) ``adjoint="auto"``
uses ``ForwardMode`` with forward mode and ``RecursiveCheckpointAdjoint`` with reverse mode; with
``jac="auto"`` the mode follows the adjoint when only one works, and otherwise the rule of
``nlls.jacobian.choose_mode`` (forward when ``n ≤ m``), decided from the shapes before anything is
traced. An explicit mismatch (``jac="fwd"`` with ``RecursiveCheckpointAdjoint``) is a ``ValueError``
up front; left to JAX it would surface mid-trace as "can't apply forward-mode autodiff (jvp) to a
custom_vjp function" or "Reverse-mode differentiation does not work for lax.while_loop". The
first-order methods (``"adam"``, ``"sgd"``, ``"lbfgs"``) need gradients, so they always run in
reverse mode. Geodesic acceleration (``nlls.LevenbergMarquardt(geodesic=True)``) takes a second
directional derivative by nested JVPs, so it needs forward mode through the solve even when the
Jacobian is built in reverse mode: ``fit`` then picks ``DirectAdjoint`` (``second_order=True`` in
``shooting_residual``).

Derivatives of an ODE fit with respect to its data (``jax.grad`` through ``ode.fit``,
``nlls.implicit``) take forward-over-reverse derivatives of the residual at the solution, so they
need an adjoint with both modes: ``adjoint=diffrax.DirectAdjoint()``.

Failed solves
-------------
A trial ``θ`` can make the ODE stiff or blow up, so that the step-size controller runs out of
steps (``max_ode_steps``) or stalls. The residual calls ``diffeqsolve(..., throw=False)`` and
replaces the states of any segment whose ``sol.result`` is not successful by NaN: the residual is
then non-finite, Levenberg–Marquardt rejects the trial and raises its damping, and the fit carries
on from the last good point instead of crashing. (A non-finite residual at the starting point is
still an error: there is nowhere to fall back to.) ``integrate``, for prediction, raises instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import checks
from .fitting import FIRST_ORDER, FitResult, solve_with
from .jacobian import choose_mode

__all__ = [
    "ShootingResidual",
    "adjoint_modes",
    "fit",
    "segment_bounds",
    "shooting_residual",
    "integrate",
]

_MODES = ("auto", "fwd", "rev")


# --------------------------------------------------------------------------------------------
# The right-hand side and one integration
# --------------------------------------------------------------------------------------------


class _Dynamics(eqx.Module):
    """``du/dt = physics(t, u) + field(t, u)`` with the field's trainable leaves passed in.

    ``field`` is the non-trainable part of an equinox module (``is_module``), recombined with the
    trainable leaves on each call, or a plain function ``field(params, t, u)``.
    """

    field: Any
    is_module: bool
    physics: Callable[..., Any] | None
    autonomous: bool

    def __call__(self, t, u, field_params):
        if self.is_module:
            model = eqx.combine(field_params, self.field)
            du = model(u) if self.autonomous else model(t, u)
        else:
            du = self.field(field_params, t, u)
        if self.physics is not None:
            du = du + self.physics(t, u)
        # A float64 constant in a float32 model (under x64) would promote the state; keep its dtype.
        return jnp.asarray(du).astype(u.dtype)


class _Integrator(eqx.Module):
    """One diffrax solve from ``start`` at ``times[0]``, saved at ``times`` (non-decreasing)."""

    dynamics: _Dynamics
    solver: dfx.AbstractSolver
    controller: dfx.AbstractStepSizeController
    dt0: float | None
    max_steps: int
    adjoint: dfx.AbstractAdjoint

    def __call__(self, field_params, times, start, *, throw: bool = False):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(self.dynamics),
            self.solver,
            times[0],
            times[-1],
            self.dt0,
            start,
            args=field_params,
            saveat=dfx.SaveAt(ts=times),
            stepsize_controller=self.controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=throw,
        )
        # A failed solve (max steps, stalled step size) leaves garbage or inf in the unreached
        # points: make the whole segment NaN, so the trial step is rejected, not trusted.
        ok = sol.result == dfx.RESULTS.successful
        return jnp.where(ok, sol.ys, jnp.nan)


# --------------------------------------------------------------------------------------------
# The shooting residual
# --------------------------------------------------------------------------------------------


class ShootingResidual(eqx.Module):
    """The single- or multiple-shooting residual, ``residual(params, ts, ys, weights,
    continuity_weight, y0)``; built by ``shooting_residual``, which documents the arguments.

    Returns ``{"data": (T, d)}`` and, with ``segments > 1``, ``"continuity": (segments − 1, d)``.
    ``mode`` (``"fwd"`` or ``"rev"``) is the AD mode the ``adjoint`` supports: pass it to
    ``least_squares`` as ``jac``. Equal settings give equal (and equally hashed) residuals, so
    ``least_squares`` reuses its compiled program across calls.
    """

    integrator: _Integrator
    segments: int
    mode: str

    @property
    def adjoint(self) -> dfx.AbstractAdjoint:
        return self.integrator.adjoint

    def __call__(self, params, ts, ys, weights, continuity_weight, y0=None):
        count = ys.shape[0]
        bounds = segment_bounds(count, self.segments)
        times = ts[_padded_indices(bounds)]  # (K, L+1)
        first = params["y0"] if "y0" in params else y0
        if self.segments > 1:
            starts = jnp.concatenate([first[None], params["starts"]])
        else:
            starts = first[None]
        states = jax.vmap(self.integrator, in_axes=(None, 0, 0))(params["field"], times, starts)
        segment, position = _data_positions(bounds)
        residual = {"data": (states[segment, position] - ys) * weights}
        if self.segments > 1:
            # The last saved point of every segment is its end (padding repeats the end time).
            residual["continuity"] = continuity_weight * (states[:-1, -1] - params["starts"])
        return residual


def segment_bounds(count: int, segments: int) -> np.ndarray:
    """Indices ``b_0 = 0 < … < b_K = count − 1`` of the segment boundaries (``b_k =
    round(k(T−1)/K)``), so segment lengths differ by at most one interval.

    >>> segment_bounds(21, 4).tolist()
    [0, 5, 10, 15, 20]
    >>> segment_bounds(21, 3).tolist()
    [0, 7, 13, 20]
    """
    return np.round(np.arange(segments + 1) * (count - 1) / segments).astype(int)


def _padded_indices(bounds: np.ndarray) -> np.ndarray:
    """``(K, L+1)`` indices of each segment's points, ``L`` the longest segment; shorter segments
    repeat their end index."""
    longest = int(np.max(np.diff(bounds)))
    index = bounds[:-1, None] + np.arange(longest + 1)[None, :]
    return np.minimum(index, bounds[1:, None])


def _data_positions(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each observation ``i``: the segment that starts at or contains it, and its position in
    that segment (the last observation belongs to the last segment)."""
    count = int(bounds[-1]) + 1
    observation = np.arange(count)
    segment = np.searchsorted(bounds, observation, side="right") - 1
    segment = np.minimum(segment, len(bounds) - 2)
    return segment, observation - bounds[segment]


def shooting_residual(
    field,
    ts,
    ys,
    *,
    y0=None,
    fit_y0: bool = False,
    segments: int = 1,
    continuity_weight: float = 1.0,
    physics: Callable[..., Any] | None = None,
    autonomous: bool = True,
    solver: dfx.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | None = None,
    max_ode_steps: int = 4096,
    adjoint: str | dfx.AbstractAdjoint = "auto",
    mode: str = "auto",
    weights=None,
    second_order: bool = False,
) -> tuple[ShootingResidual, dict, tuple]:
    """The shooting residual of an ODE fit, its starting parameters and its data arguments, for
    ``nlls.least_squares`` or a first-order method (``nlls.baselines``, with ``mode="rev"``).

    Args:
        field: the model of the vector field: an equinox module (its inexact arrays are the
            parameters; called ``field(u)``, or ``field(t, u)`` with ``autonomous=False``) or a
            tuple ``(fn, params)`` with ``fn(params, t, u)`` and ``params`` a pytree of floats.
        ts: ``(T,)`` strictly increasing observation times.
        ys: ``(T, d)`` observed states (``ys[:, None]`` for a scalar state); finite.
        y0: the initial state (default ``ys[0]``); the starting value of ``params["y0"]`` when
            ``fit_y0``.
        fit_y0: make the initial state a parameter.
        segments: ``K``, the number of shooting segments, ``1 ≤ K ≤ T − 1`` (1: single shooting).
        continuity_weight: ``ρ > 0``, the weight of the continuity residuals.
        physics: a known term ``physics(t, u)`` added to the field.
        autonomous: call an equinox-module field as ``field(u)`` (True) or ``field(t, u)``.
        solver: a diffrax solver (default ``diffrax.Tsit5()``).
        rtol, atol: the step-size controller's tolerances (default ``1e-8`` in float64, ``1e-5``
            in float32).
        dt0: the first step size (default: chosen by the controller).
        max_ode_steps: the most steps of one segment's solve; beyond it the residual is NaN.
        adjoint: ``"auto"`` or a diffrax adjoint; see the module docstring for which works with
            which AD mode.
        mode: the AD mode the residual will be differentiated in: ``"fwd"``, ``"rev"`` or
            ``"auto"`` (decided from the adjoint and the shapes, as in the module docstring).
        weights: ``(T, d)`` or broadcastable non-negative weights that multiply the data
            residuals (``1/σ`` for measurement noise ``σ``).
        second_order: the residual will also be differentiated twice in forward mode (geodesic
            acceleration, ``nlls.LevenbergMarquardt(geodesic=True)``), so the adjoint must support
            forward mode whatever the Jacobian's mode: ``adjoint="auto"`` then gives
            ``DirectAdjoint`` in reverse mode, and an adjoint without forward mode is refused.

    Returns:
        ``(residual, params0, args)``: ``residual(params, *args)`` returns ``{"data": (T, d)}``
        plus, with ``K > 1``, ``{"continuity": (K − 1, d)}``; ``params0 = {"field": …}`` with
        ``"y0": (d,)`` when ``fit_y0`` and ``"starts": (K − 1, d)`` (the initial states of
        segments 2…K) when ``K > 1``; ``args = (ts, ys, weights, continuity_weight, y0)`` as
        arrays of the parameters' dtype (``y0`` is ``None`` when ``fit_y0``); ``residual.mode`` is
        the AD mode chosen, to pass as ``least_squares(..., jac=residual.mode)``, and
        ``residual.adjoint`` the diffrax adjoint.

    Raises:
        ValueError: bad data (times not strictly increasing, shapes, non-finite values), a field
            whose output is not a state, ``segments`` out of range, an adjoint that does not
            support the AD mode asked for.
        TypeError: a field that is neither an equinox module nor ``(fn, params)``; a solver or
            adjoint that is not diffrax's.

    Examples:
        >>> import jax.numpy as jnp, nlls, nlls.ode
        >>> ts = jnp.linspace(0.0, 1.0, 11)
        >>> ys = jnp.exp(-2.0 * ts)[:, None]
        >>> decay = (lambda p, t, u: -p["k"] * u, {"k": jnp.array(1.0)})
        >>> residual, params0, args = nlls.ode.shooting_residual(decay, ts, ys, segments=2)
        >>> residual.mode, sorted(params0)
        ('fwd', ['field', 'starts'])
        >>> sol = nlls.least_squares(residual, params0, args, jac=residual.mode)
        >>> print(f"{float(sol.params['field']['k']):.6f}")
        2.000000
    """
    problem = _Problem.build(
        field, ts, ys, y0=y0, fit_y0=fit_y0, segments=segments, weights=weights
    )
    mode, adjoint = _resolve_mode(
        mode, adjoint, problem.n_params, problem.n_residuals, second_order
    )
    continuity_weight = checks.positive("continuity_weight", continuity_weight)
    integrator = problem.integrator(
        adjoint, physics, autonomous, solver, rtol, atol, dt0, max_ode_steps
    )
    residual = ShootingResidual(integrator=integrator, segments=problem.segments, mode=mode)
    args = (
        problem.ts,
        problem.ys,
        problem.weights,
        jnp.asarray(continuity_weight, problem.dtype),
        None if fit_y0 else problem.y0,
    )
    return residual, problem.params0(), args


# --------------------------------------------------------------------------------------------
# fit and integrate
# --------------------------------------------------------------------------------------------


# Everything of shooting_residual's that a fit passes on as given; fit sets mode (from jac) and
# second_order (from the method) itself.
_SHOOTING_OPTIONS = frozenset(inspect.signature(shooting_residual).parameters).difference(
    ("field", "ts", "ys", "mode", "second_order")
)


def fit(
    field,
    ts,
    ys,
    *,
    method: Any = "lm",
    jac: str = "auto",
    callbacks: Sequence[Callable[..., Any]] = (),
    **options,
) -> FitResult:
    """Fit the vector field of an ODE to an observed trajectory by single or multiple shooting.

    The options named as in ``shooting_residual`` set up the shooting residual, with the meaning
    and defaults given there: ``y0``, ``fit_y0``, ``segments``, ``continuity_weight``,
    ``physics``, ``autonomous``, ``solver``, ``rtol``, ``atol``, ``dt0``, ``max_ode_steps``,
    ``adjoint``, ``weights``. ``jac`` is its ``mode`` (the first-order methods always use
    ``"rev"``, and ``jac="fwd"`` with them is an error); ``second_order`` is set when the method
    takes geodesic steps. ``method`` is anything ``nlls.least_squares`` takes, or ``"adam"``,
    ``"sgd"``, ``"lbfgs"`` (``nlls.baselines``); ``callbacks`` and the other options
    (``max_steps``, ``ftol``, …) go to that method.

    Returns:
        A ``nlls.FitResult``: ``model`` is the fitted field, of the kind given (the module with its
        parameters replaced, or ``(fn, params)``); ``solution.params`` is ``{"field": …}`` with the
        fitted ``"y0"`` (when ``fit_y0``) and ``"starts"`` (segment initial states, when
        ``segments > 1``); ``solution.stats.jac`` is the AD mode that ran.

    Examples:
        Exponential decay ``du/dt = −k u`` observed at 11 times, ``k`` fitted by
        Levenberg–Marquardt (forward mode: 1 parameter, 11 residuals):

        >>> import jax.numpy as jnp, nlls.ode
        >>> ts = jnp.linspace(0.0, 1.0, 11)
        >>> ys = jnp.exp(-2.0 * ts)[:, None]
        >>> decay = (lambda p, t, u: -p["k"] * u, {"k": jnp.array(1.0)})
        >>> result = nlls.ode.fit(decay, ts, ys)
        >>> fn, params = result.model
        >>> print(f"k = {float(params['k']):.6f}, AD mode {result.solution.stats.jac}")
        k = 2.000000, AD mode fwd
        >>> prediction = nlls.ode.integrate(result.model, jnp.array([0.0, 2.0]), ys[0])
        >>> print(f"{float(prediction[-1, 0]):.6f}")
        0.018316
    """
    shooting = {name: options.pop(name) for name in _SHOOTING_OPTIONS & options.keys()}
    if isinstance(method, str) and method in FIRST_ORDER:
        if jac == "fwd":
            raise ValueError(
                f"method={method!r} follows the gradient, which needs reverse mode: pass "
                "jac='rev' or 'auto' (or use a least-squares method such as 'lm' for jac='fwd')"
            )
        adjoint = shooting.get("adjoint", "auto")
        if not isinstance(adjoint, str) and "rev" not in adjoint_modes(adjoint):
            raise ValueError(
                f"{type(adjoint).__name__} does not support reverse-mode differentiation through "
                f"diffeqsolve, which method={method!r} needs (it follows the gradient): pass "
                f"adjoint='auto' or {_FIX['rev']}"
            )
        jac = "rev" if jac == "auto" else jac  # anything else but "rev" is refused below
    second_order = bool(getattr(method, "geodesic", False))
    residual, params0, args = shooting_residual(
        field, ts, ys, mode=jac, second_order=second_order, **shooting
    )
    if callbacks:
        options["callbacks"] = callbacks
    # solve_with drops jac for a first-order method (gradients are reverse mode).
    solution = solve_with(
        method,
        residual,
        params0,
        args,
        also=sorted(_SHOOTING_OPTIONS),
        jac=residual.mode,
        **options,
    )
    return FitResult(
        model=_with_params(field, solution.params["field"]),
        solution=solution,
        history=getattr(solution, "history", None),
    )


# The options of shooting_residual that set up one solve, with their defaults: integrate's options.
_SOLVE_OPTIONS = {
    name: inspect.signature(shooting_residual).parameters[name].default
    for name in ("physics", "autonomous", "solver", "rtol", "atol", "dt0", "max_ode_steps")
}


def integrate(field, ts, y0, **options) -> Float[Array, "T d"]:
    """Integrate ``du/dt = physics(t, u) + field(…)`` from ``u(ts[0]) = y0`` and return ``u(ts)``,
    shape ``(T, d)``: predictions and plots of a fitted field (``FitResult.model``). ``field`` is
    as in ``shooting_residual``, and so are the options, with the same defaults: ``physics``,
    ``autonomous``, ``solver``, ``rtol``, ``atol``, ``dt0``, ``max_ode_steps``. A failed solve
    raises (diffrax's error, e.g. the maximum number of steps reached) instead of returning NaN.
    The inputs are checked on the host, so ``integrate`` is not for use inside ``jax.jit``.

    Examples:
        >>> import jax.numpy as jnp, nlls.ode
        >>> decay = (lambda p, t, u: -p * u, jnp.array(2.0))
        >>> u = nlls.ode.integrate(decay, jnp.array([0.0, 1.0]), jnp.array([1.0]))
        >>> print(f"{float(u[1, 0]):.6f}")
        0.135335
    """
    unknown = sorted(options.keys() - _SOLVE_OPTIONS.keys())
    if unknown:
        raise TypeError(
            f"integrate() got unknown options {unknown}: it takes {', '.join(_SOLVE_OPTIONS)} "
            "(as shooting_residual)"
        )
    problem = _Problem.build(field, ts, None, y0=y0, fit_y0=False, segments=1, weights=None)
    integrator = problem.integrator(dfx.RecursiveCheckpointAdjoint(), **(_SOLVE_OPTIONS | options))
    return _integrate_compiled(integrator, problem.field_params, problem.ts, problem.y0)


@eqx.filter_jit
def _integrate_compiled(integrator, field_params, ts, y0):
    return integrator(field_params, ts, y0, throw=True)


# --------------------------------------------------------------------------------------------
# Validation and set-up
# --------------------------------------------------------------------------------------------


class _Problem:
    """The checked data and the split field: everything decided before anything is traced."""

    def __init__(self, field, ts, ys, y0, fit_y0, segments, weights):
        self.field, self.fit_y0, self.segments = field, fit_y0, segments
        self.is_module, self.field_params, self.field_static = _split_field(field)
        self.dtype = _params_dtype(self.field_params, ys if ys is not None else y0)
        self.ts = jnp.asarray(ts, self.dtype)
        self.ys = None if ys is None else jnp.asarray(ys, self.dtype)
        self.y0 = jnp.asarray(y0 if y0 is not None else ys[0], self.dtype)
        self.weights = None
        if ys is not None:  # all ones by default
            weights = 1.0 if weights is None else weights
            self.weights = checks.weights(weights, ys.shape, self.dtype, "the data")

    @classmethod
    def build(cls, field, ts, ys, *, y0, fit_y0, segments, weights):
        ts = _check_times(ts)
        count = ts.shape[0]
        if ys is not None:
            ys = _check_observations(ys, count)
        if y0 is not None:
            y0 = np.asarray(y0)
            state_size = ys.shape[1] if ys is not None else y0.shape[-1] if y0.ndim else 1
            if y0.shape != (state_size,):
                raise ValueError(
                    f"y0 must be one state of shape ({state_size},), got shape {y0.shape}"
                )
            if not np.all(np.isfinite(y0)):
                raise ValueError("y0 is not finite")
        segments = _check_segments(segments, count)
        return cls(field, ts, ys, y0, fit_y0, segments, weights)

    @property
    def state_size(self) -> int:
        return int(self.y0.shape[0])

    @property
    def n_params(self) -> int:
        field = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(self.field_params))
        return field + self.state_size * (int(self.fit_y0) + self.segments - 1)

    @property
    def n_residuals(self) -> int:
        return self.state_size * (self.ts.shape[0] + self.segments - 1)

    def params0(self) -> dict:
        params = {"field": self.field_params}
        if self.fit_y0:
            params["y0"] = self.y0
        if self.segments > 1:
            params["starts"] = self.ys[segment_bounds(self.ys.shape[0], self.segments)[1:-1]]
        return params

    def integrator(
        self, adjoint, physics, autonomous, solver, rtol, atol, dt0, max_ode_steps
    ) -> _Integrator:
        """One diffrax solve of the field, checked first, with these settings; the tolerances
        default to ``1e-8`` in float64 and ``1e-5`` in float32."""
        self.check_field(physics, autonomous)
        if solver is not None and not isinstance(solver, dfx.AbstractSolver):
            raise TypeError(
                f"solver must be a diffrax solver such as diffrax.Tsit5(), got {solver!r}"
            )
        tolerance = 1e-8 if jnp.finfo(self.dtype).bits >= 64 else 1e-5
        return _Integrator(
            dynamics=_Dynamics(self.field_static, self.is_module, physics, bool(autonomous)),
            solver=dfx.Tsit5() if solver is None else solver,
            controller=dfx.PIDController(
                rtol=tolerance if rtol is None else checks.positive("rtol", rtol),
                atol=tolerance if atol is None else checks.positive("atol", atol),
            ),
            dt0=dt0,
            max_steps=checks.positive_int("max_ode_steps", max_ode_steps),
            adjoint=adjoint,
        )

    def check_field(self, physics, autonomous) -> None:
        """The field and the physics term each map a state to a state (checked by tracing)."""
        t, u = self.ts[0], self.y0
        calling = (
            ("field(u)" if autonomous else "field(t, u)") if self.is_module else "fn(params, t, u)"
        )
        dynamics = _Dynamics(self.field_static, self.is_module, None, bool(autonomous))
        _check_state_map(lambda: dynamics(t, u, self.field_params), calling, u, autonomous)
        if physics is not None:
            if not callable(physics):
                raise TypeError(f"physics must be a function physics(t, u), got {physics!r}")
            _check_state_map(lambda: physics(t, u), "physics(t, u)", u, None)


def _split_field(field):
    """``(is_module, trainable, static)``: an equinox module split by ``eqx.is_inexact_array``,
    or a ``(fn, params)`` pair (all of ``params`` trainable)."""
    if isinstance(field, eqx.Module):
        trainable, static = eqx.partition(field, eqx.is_inexact_array)
        return True, trainable, static
    if (
        isinstance(field, tuple)
        and len(field) == 2
        and callable(field[0])
        and not isinstance(field[0], eqx.Module)
    ):
        fn, params = field
        # Strongly typed arrays: a weakly typed start (jnp.full(4, 0.5)) would otherwise compile a
        # program of its own.
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.result_type(x)), params)
        return False, params, fn
    raise TypeError(
        "field must be an equinox Module (called field(u), or field(t, u) with "
        "autonomous=False) or a tuple (fn, params) with fn(params, t, u); "
        f"got {type(field).__name__}"
    )


def _with_params(field, params):
    """The field of the kind given, with fitted parameters."""
    if isinstance(field, eqx.Module):
        return eqx.combine(params, eqx.partition(field, eqx.is_inexact_array)[1])
    return (field[0], params)


def _params_dtype(field_params, data):
    leaves = jax.tree_util.tree_leaves(field_params)
    floats = [
        jnp.result_type(x) for x in leaves if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    if floats:
        return floats[0]
    # No floating field parameters (only initial states are fitted, or integer values that
    # least_squares will name): use the data's precision.
    dtype = jnp.result_type(data) if data is not None else jnp.result_type(float)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _check_times(ts):
    ts = np.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-d array of at least 2 times, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("ts is not finite")
    steps = np.diff(ts)
    if not np.all(steps > 0):
        i = int(np.argmax(steps <= 0))
        raise ValueError(
            f"ts must be strictly increasing: ts[{i}] = {ts[i]} is followed by ts[{i + 1}] = "
            f"{ts[i + 1]} (sort the observations by time and merge repeated times)"
        )
    return ts


def _check_observations(ys, count):
    ys = np.asarray(ys)
    if ys.ndim != 2 or ys.shape[0] != count:
        hint = " (for a scalar state pass ys[:, None])" if ys.shape == (count,) else ""
        raise ValueError(
            f"ys must have shape (T, d) = (len(ts), state size) = ({count}, d), got shape "
            f"{ys.shape}{hint}"
        )
    bad = ~np.isfinite(ys)
    if np.any(bad):
        row = int(np.argmax(np.any(bad, axis=1)))
        raise ValueError(
            f"ys has {int(bad.sum())} non-finite values (the first in row {row}): remove those "
            "time points or fill them in before fitting"
        )
    return ys


def _check_segments(segments, count) -> int:
    segments = checks.positive_int("segments", segments)
    if segments > count - 1:
        raise ValueError(
            f"segments must be between 1 and len(ts) − 1 = {count - 1} (each segment needs at "
            f"least one interval between observations), got {segments}"
        )
    return segments


def _check_state_map(call, calling, u, autonomous) -> None:
    try:
        out = jax.eval_shape(call)
    except Exception as error:  # the user's function failed to trace: say where
        hint = ""
        if autonomous is not None:
            hint = (
                " (an equinox-module field is called field(u) when autonomous=True and "
                "field(t, u) when autonomous=False)"
            )
        raise ValueError(f"calling {calling} on the initial state failed{hint}: {error}") from error
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(u.shape):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{calling} must return du/dt of the state's shape {tuple(u.shape)}, got {got}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{calling} must return floating-point values, got {out.dtype}")


def adjoint_modes(adjoint) -> tuple[str, ...]:
    """The AD modes a diffrax adjoint supports through ``diffeqsolve`` (diffrax 0.7).

    >>> import diffrax
    >>> adjoint_modes(diffrax.ForwardMode()), adjoint_modes(diffrax.RecursiveCheckpointAdjoint())
    (('fwd',), ('rev',))
    """
    if isinstance(adjoint, dfx.DirectAdjoint):
        return ("fwd", "rev")
    if isinstance(adjoint, dfx.ForwardMode):
        return ("fwd",)
    if isinstance(adjoint, dfx.RecursiveCheckpointAdjoint | dfx.BacksolveAdjoint):
        return ("rev",)
    if isinstance(adjoint, dfx.ImplicitAdjoint):
        raise ValueError(
            "diffrax.ImplicitAdjoint differentiates steady states, not trajectories: use "
            "adjoint='auto', diffrax.ForwardMode() or diffrax.RecursiveCheckpointAdjoint()"
        )
    if isinstance(adjoint, dfx.AbstractAdjoint):
        return ("fwd", "rev")  # a custom adjoint: trust the caller
    raise TypeError(f"adjoint must be 'auto' or a diffrax adjoint, got {adjoint!r}")


_FIX = {
    "fwd": "diffrax.ForwardMode() (or DirectAdjoint(), slower)",
    "rev": "diffrax.RecursiveCheckpointAdjoint() (or BacksolveAdjoint(), DirectAdjoint())",
}


def _resolve_mode(mode, adjoint, n, m, second_order=False) -> tuple[str, dfx.AbstractAdjoint]:
    """The AD mode and the adjoint, checked against each other before anything is traced."""
    if mode not in _MODES:
        raise ValueError(
            f"the AD mode (jac) must be one of {_MODES} for an ODE fit, got {mode!r} (the "
            "Jacobian is built by differentiating through diffrax)"
        )
    if isinstance(adjoint, str):
        if adjoint != "auto":
            raise ValueError(f"adjoint must be 'auto' or a diffrax adjoint, got {adjoint!r}")
        supported = ("fwd", "rev")
    else:
        supported = adjoint_modes(adjoint)
    if mode == "auto":
        mode = choose_mode("auto", m, n) if len(supported) == 2 else supported[0]
    elif mode not in supported:
        name = "forward" if mode == "fwd" else "reverse"
        raise ValueError(
            f"{type(adjoint).__name__} does not support {name}-mode differentiation through "
            f"diffeqsolve, which jac={mode!r} needs: pass adjoint='auto' or {_FIX[mode]}, or "
            f"jac={supported[0]!r}"
        )
    if second_order and "fwd" not in supported:
        raise ValueError(
            f"geodesic acceleration differentiates the residual twice in forward mode, which "
            f"{type(adjoint).__name__} does not support: pass adjoint='auto' or "
            "diffrax.DirectAdjoint() (forward and reverse) or diffrax.ForwardMode()"
        )
    if isinstance(adjoint, str):
        if mode == "fwd":
            adjoint = dfx.ForwardMode()
        else:
            adjoint = dfx.DirectAdjoint() if second_order else dfx.RecursiveCheckpointAdjoint()
    return mode, adjoint
