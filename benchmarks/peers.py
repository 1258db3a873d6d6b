"""Every solver behind one interface, so that each one is compiled, started and timed the same way.

A *solver* here is a small object with a ``label`` and a ``prepare(residual, args)`` method.
``prepare`` binds a residual ``residual(params, *args) -> 1-D array`` and its data and returns a
:class:`PreparedFit`: ``convert(x0)`` turns a numpy start into the solver's native input (outside the
timed region), ``solve(start)`` runs one fit and blocks until its result is ready (the timed region),
and ``outcome(raw)`` reads the result back into numpy as an :class:`Outcome`.

The rules the adapters keep, so that the comparison is like for like:

- the same residual function, data, start and float64 arithmetic for every solver; the final cost of
  every solver is recomputed by the harness from its returned parameters with the same jitted residual;
- nlls is called through its public ``nlls.least_squares``, which compiles internally;
- the JAX peers (optimistix, jaxopt) are wrapped in one ``jax.jit`` over (start, data). That is how a
  user who cares about speed calls them, and it removes their per-call Python dispatch, so if anything
  it favours the peers;
- scipy receives the residual and its forward-mode Jacobian ``jax.jacfwd``, both jit-compiled and
  converted to numpy at every call (the price of driving scipy with a JAX model);
- compilation is excluded for every solver in the same way: :func:`time_fits` makes one warm-up call
  per solver (timed apart as ``first_s``, which includes compilation), then times ``repeats`` further
  calls, interleaving the solvers round by round so that changes of machine load hit all alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

Residual = Callable[..., jax.Array]

# scipy's "lm" refuses tolerances below machine epsilon; this is the tightest value it accepts.
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Outcome:
    """What one fit returned, read back into numpy.

    ``cost`` is ½‖r(x)‖² recomputed by the harness at the returned ``x``. ``nfev``/``njev`` are the
    residual and Jacobian evaluation counts where the solver reports them, ``steps`` its iteration
    count where it reports one (``None`` otherwise). ``stop`` names briefly why it stopped
    (``"ftol"``, ``"xtol"``, ``"gtol"``, ``"max_steps"``, ``"error"``, ...), ``message`` in full.
    """

    x: np.ndarray
    cost: float
    nfev: int | None = None
    njev: int | None = None
    steps: int | None = None
    success: bool = False
    stop: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """Wall times of one fit: the warm-up call (with compilation) and the timed repeats after it."""

    first_s: float
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        """Median of the timed repeats (NaN when there were none)."""
        return statistics.median(self.times_s) if self.times_s else float("nan")

    @property
    def min_s(self) -> float:
        """Fastest of the timed repeats (NaN when there were none): the least disturbed by load."""
        return min(self.times_s) if self.times_s else float("nan")


@dataclass(frozen=True)
class PreparedFit:
    """A solver bound to one residual and its data. See the module docstring."""

    convert: Callable[[np.ndarray], Any]
    solve: Callable[[Any], Any]
    outcome: Callable[[Any], Outcome]


def _cost_function(residual: Residual, args: Sequence[Any]) -> Callable[[np.ndarray], float]:
    """Return ``x -> ½‖residual(x, *args)‖²`` as a Python float, jit-compiled once per residual."""
    cost = jax.jit(lambda x, data: 0.5 * jnp.sum(residual(x, *data) ** 2))
    return lambda x: float(cost(jnp.asarray(x), tuple(args)))


def _report_failure(x0: np.ndarray, error: BaseException) -> Outcome:
    """Print and return the outcome of a solver that raised: NaN parameters and cost, the error."""
    message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    print(f"    solver raised {message}", file=sys.stderr, flush=True)
    return Outcome(x=np.full_like(x0, np.nan), cost=float("nan"), message=message, stop="error")


@dataclass
class _Slot:
    """One solver's state while :func:`time_fits` runs: its last result, times, or its failure."""

    fit: PreparedFit
    start: Any = None
    raw: Any = None
    first_s: float = float("nan")
    times: list[float] = field(default_factory=list)
    failure: Outcome | None = None

    def call(self, x0: np.ndarray, warm_up: bool = False) -> None:
        """Solve once from ``x0`` and record the wall time; a raised error becomes the failure."""
        if self.failure is not None:
            return
        try:
            if warm_up:
                self.start = self.fit.convert(x0)
            tic = time.perf_counter()
            self.raw = self.fit.solve(self.start)
            elapsed = time.perf_counter() - tic
        except Exception as error:  # noqa: BLE001 - a benchmark records failures, it does not stop
            self.failure = _report_failure(x0, error)
            return
        if warm_up:
            self.first_s = elapsed
        else:
            self.times.append(elapsed)

    def result(self, x0: np.ndarray) -> tuple[Outcome, Timing]:
        """The outcome of the last solve and the times, or the failure with NaN times."""
        if self.failure is None:
            try:
                return self.fit.outcome(self.raw), Timing(self.first_s, tuple(self.times))
            except Exception as error:  # noqa: BLE001
                self.failure = _report_failure(x0, error)
        return self.failure, Timing(float("nan"), ())


def time_fits(
    prepared: Sequence[PreparedFit],
    x0: np.ndarray,
    repeats: int,
    max_time_s: float = float("inf"),
) -> list[tuple[Outcome, Timing]]:
    """Time several solvers on one fit from ``x0``, interleaved; return (outcome, timing) for each.

    Each solver first makes one warm-up call, which compiles whatever it compiles and is reported
    apart (``Timing.first_s``). Then come up to ``repeats`` rounds in which every solver is called
    once in turn, so that changes of machine load during the benchmark hit all solvers alike; only
    these calls enter ``Timing.median_s``. Rounds stop early once they have taken ``max_time_s`` in
    all (at least one round is always made).

    A solver that raises is recorded as a failed outcome with NaN times and left out of later
    rounds, so that one misbehaving solver cannot stop the benchmark.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    slots = [_Slot(fit) for fit in prepared]
    for slot in slots:
        slot.call(x0, warm_up=True)
    rounds_began = time.perf_counter()
    for round_index in range(repeats):
        if round_index > 0 and time.perf_counter() - rounds_began > max_time_s:
            break
        for slot in slots:
            slot.call(x0)
    return [slot.result(x0) for slot in slots]


def time_fit(prepared: PreparedFit, x0: np.ndarray, repeats: int) -> tuple[Outcome, Timing]:
    """:func:`time_fits` for a single solver."""
    return time_fits([prepared], x0, repeats)[0]


# scipy's ``OptimizeResult.status`` codes.
_SCIPY_STOP = {-1: "error", 0: "max_nfev", 1: "gtol", 2: "ftol", 3: "xtol", 4: "ftol+xtol"}


def nlls_outcome(sol, x: np.ndarray, cost: float, **extra: Any) -> Outcome:
    """The :class:`Outcome` of an ``nlls.Solution`` (counters, status, rejected steps, ``extra``)."""
    import nlls

    stats = sol.stats
    return Outcome(
        x=x,
        cost=cost,
        nfev=int(stats.nfev),
        njev=int(stats.njev),
        steps=int(stats.steps),
        success=bool(sol.success),
        stop=nlls.Status(int(sol.status)).name.lower(),
        message=str(sol.message),
        extra={"rejected": int(stats.rejected), **extra},
    )


class Nlls:
    """nlls through its public API: ``nlls.least_squares(residual, x0, args=..., method=..., ...)``.

    ``options`` are passed through unchanged (tolerances, ``max_steps``, ``jac``, ``linear``).
    """

    evals = "nfev"

    def __init__(
        self, method: Any = "lm", label: str | None = None, jit: bool = False, **options: Any
    ):
        self.method = method
        self.options = options
        self.jit = jit
        self.label = label or f"nlls {method}"

    def prepare(self, residual: Residual, args: Sequence[Any]) -> PreparedFit:
        """Bind ``residual`` and ``args``; the same function object is reused so nlls compiles once.

        With ``jit=True`` the call is wrapped in one ``jax.jit`` over (start, data), exactly as the
        JAX peers are, which removes nlls's per-call Python work (input checks, dispatch).
        """
        import nlls

        args = tuple(args)
        cost = _cost_function(residual, args)

        def call(start, data):
            return nlls.least_squares(
                residual, start, args=data, method=self.method, **self.options
            )

        run = jax.jit(call) if self.jit else call

        def solve(start):
            sol = run(start, args)
            jax.block_until_ready((sol.params, sol.cost))
            return sol

        def outcome(sol) -> Outcome:
            x = np.asarray(ravel_pytree(sol.params)[0])
            return nlls_outcome(
                sol, x, cost(x), linear=str(sol.stats.linear), jac=str(sol.stats.jac)
            )

        return PreparedFit(convert=jnp.asarray, solve=solve, outcome=outcome)


class Scipy:
    """``scipy.optimize.least_squares`` given the jit-compiled residual and ``jax.jacfwd`` Jacobian.

    ``options`` are passed to scipy unchanged (``ftol``, ``xtol``, ``gtol``, ``max_nfev``, ...).
    """

    evals = "nfev"

    def __init__(self, method: str = "lm", label: str | None = None, **options: Any):
        self.method = method
        self.options = options
        self.label = label or f"scipy {method}"

    def prepare(self, residual: Residual, args: Sequence[Any]) -> PreparedFit:
        """Jit the residual and its forward-mode Jacobian; scipy sees numpy arrays."""
        import scipy.optimize

        args = tuple(args)
        residual_jit = jax.jit(residual)
        jacobian_jit = jax.jit(jax.jacfwd(residual))
        cost = _cost_function(residual, args)

        def fun(x):
            return np.asarray(residual_jit(x, *args))

        def jac(x):
            return np.asarray(jacobian_jit(x, *args))

        def solve(start):
            return scipy.optimize.least_squares(
                fun, start, jac=jac, method=self.method, **self.options
            )

        def outcome(result) -> Outcome:
            x = np.asarray(result.x)
            return Outcome(
                x=x,
                cost=cost(x),
                nfev=int(result.nfev),
                njev=None if result.njev is None else int(result.njev),
                success=bool(result.success),
                stop=_SCIPY_STOP.get(int(result.status), str(result.status)),
                message=str(result.message),
            )

        return PreparedFit(convert=np.array, solve=solve, outcome=outcome)


class Optimistix:
    """``optimistix.least_squares`` with ``LevenbergMarquardt`` or ``Dogleg``, inside one ``jax.jit``.

    optimistix reports no evaluation counts, only ``stats["num_steps"]`` (one residual evaluation and
    one linearisation per step, accepted or rejected), which is what the reports show for it.
    """

    evals = "steps"

    def __init__(
        self,
        kind: str = "lm",
        rtol: float = 1e-12,
        atol: float = 1e-12,
        max_steps: int = 1000,
        label: str | None = None,
    ):
        import optimistix as optx

        solvers = {"lm": optx.LevenbergMarquardt, "dogleg": optx.Dogleg}
        self.solver = solvers[kind](rtol=rtol, atol=atol)
        self.max_steps = max_steps
        names = {"lm": "LevenbergMarquardt", "dogleg": "Dogleg"}
        self.label = label or f"optimistix {names[kind]}"

    def prepare(self, residual: Residual, args: Sequence[Any]) -> PreparedFit:
        """Compile the whole solve as one function of (start, data)."""
        import optimistix as optx

        args = tuple(args)
        cost = _cost_function(residual, args)

        def fn(y, data):
            return residual(y, *data)

        @jax.jit
        def run(y0, data):
            sol = optx.least_squares(
                fn, self.solver, y0, data, max_steps=self.max_steps, throw=False
            )
            return sol.value, sol.stats["num_steps"], sol.result

        def solve(start):
            return jax.block_until_ready(run(start, args))

        def outcome(raw) -> Outcome:
            value, num_steps, result = raw
            x = np.asarray(value)
            success = bool(result == optx.RESULTS.successful)
            message = "successful" if success else optx.RESULTS[result]
            if success:
                stop = "converged"
            elif result == optx.RESULTS.nonlinear_max_steps_reached:
                stop = "max_steps"
            else:
                stop = "failed"
            return Outcome(
                x=x,
                cost=cost(x),
                steps=int(num_steps),
                success=success,
                stop=stop,
                message=message,
            )

        return PreparedFit(convert=jnp.asarray, solve=solve, outcome=outcome)


class Jaxopt:
    """``jaxopt.LevenbergMarquardt`` (default: matrix-free CG step solver), ``run`` inside ``jax.jit``.

    ``options`` go to the ``jaxopt.LevenbergMarquardt`` constructor (``maxiter``, ``tol``, ...).
    """

    evals = "steps"

    def __init__(self, label: str = "jaxopt LevenbergMarquardt", **options: Any):
        self.options = options
        self.label = label

    def prepare(self, residual: Residual, args: Sequence[Any]) -> PreparedFit:
        """Build the jaxopt solver around ``residual`` and jit its ``run``."""
        import jaxopt

        args = tuple(args)
        cost = _cost_function(residual, args)
        solver = jaxopt.LevenbergMarquardt(residual_fun=residual, **self.options)
        run = jax.jit(solver.run)

        def solve(start):
            return jax.block_until_ready(run(start, *args))

        def outcome(raw) -> Outcome:
            params, state = raw
            x = np.asarray(params)
            steps = int(state.iter_num)
            stop = "max_steps" if steps >= solver.maxiter else "tol"
            return Outcome(
                x=x, cost=cost(x), steps=steps, success=stop == "tol", stop=stop, message=stop
            )

        return PreparedFit(convert=jnp.asarray, solve=solve, outcome=outcome)
