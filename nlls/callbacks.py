"""Watching and steering a solve from Python while the solver loop stays compiled.

A callback is any callable ``callback(info) -> bool | None`` taking a ``StepInfo``; returning ``True``
(a Python, NumPy or JAX boolean) stops the solve with ``Status.CALLBACK``; anything else continues. A
callback may also have

* ``on_start(info)``: called once with the starting point (``info.iteration == 0``, or the resumed
  iteration);
* ``on_end(info)``: called once with the last point and the final ``info.status``, whatever ended the
  solve (also after ``KeyboardInterrupt``);
* ``restore() -> params | None``: called after ``on_end``; parameters it returns replace the final ones
  in the ``Solution`` (``EarlyStopping`` returns the best ones seen).

``least_squares(..., callbacks=[...], callback_every=k)`` runs the compiled loop ``k`` iterations at a
time (an iteration is one trial step, accepted or rejected) and calls every callback between segments.
The loop body is the same compiled program however the solve is cut, so the iterates are the same bit
for bit with any ``k`` or without callbacks.

Built in: ``History`` (per-step arrays, ``.save``, ``.plot``), ``Checkpoint`` (atomic saves of the full
solver state; resume with ``least_squares(..., resume=path)``), ``EarlyStopping`` (on a metric of the
parameters, restoring the best), ``ProgressBar`` (tqdm) and ``Metrics`` (extra columns of the History).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import checkpoint
from .sharding import leads
from .termination import Status


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """The state of a solve as a callback sees it.

    Attributes:
        step: accepted steps so far (``Solution.stats.steps``).
        iteration: trial steps so far, accepted or rejected (a Gauss–Newton line search is one).
        params: the current parameters (a pytree like ``params0``, as JAX arrays).
        cost: ``½‖r‖²`` at ``params``.
        grad_norm: ``‖Jᵀr‖∞`` at ``params`` (the quantity ``gtol`` tests).
        damping: the method's step control, as its ``damping_value`` reports it:
            Levenberg–Marquardt: λ; dogleg and trust region: the trust radius Δ; Gauss–Newton: the
            last line-search step length α; Adam and SGD: the learning rate; L-BFGS: the last
            line-search step size; minibatch LM: λ = μ‖g‖ of the last trial.
        step_norm: ``‖δ‖₂`` of the last trial step (0 at the start).
        accepted: whether the last trial step was accepted (``False`` at the start).
        nfev, njev: residual and Jacobian evaluations so far.
        time: seconds since the first iteration began (0 in ``on_start``; compilation, the
            evaluation of the first point and ``on_start`` excluded; ``max_time`` uses the same
            clock).
        status: ``Status.RUNNING`` while the solve goes on; the final status in ``on_end``.
        max_steps: the step limit of the solve.
        metrics: values that callbacks computed at this point (``Metrics``, ``EarlyStopping``); the
            ``History`` records them as extra columns.
        solver_state: the full solver state (an ``nlls.loop.LoopState``), for ``Checkpoint``. Valid
            only during the call: the next segment reuses its buffers (donation).
        signature: the description of problem and solver that a checkpoint must match.
        model: in ``nlls.fit``, the model at ``params``, as ``fit`` returns it (the equinox module
            with its trainable leaves replaced, or ``(fn, params)``); ``None`` elsewhere.
            ``params`` is then the solve's own parameters (the trainable partition of the module).
            ``EarlyStopping`` and ``Metrics`` evaluate their functions on ``model`` when it is set.
    """

    step: int
    iteration: int
    params: Any
    cost: float
    grad_norm: float
    damping: float
    step_norm: float
    accepted: bool
    nfev: int
    njev: int
    time: float
    status: Status
    max_steps: int
    metrics: dict = dataclasses.field(default_factory=dict)
    solver_state: Any = dataclasses.field(default=None, repr=False)
    signature: str = dataclasses.field(default="", repr=False)
    model: Any = dataclasses.field(default=None, repr=False)

    @property
    def subject(self) -> Any:
        """What a metric is evaluated on: the ``model`` in ``nlls.fit``, else the ``params``."""
        return self.params if self.model is None else self.model


COLUMNS = (
    "step",
    "iteration",
    "cost",
    "grad_norm",
    "damping",
    "step_norm",
    "accepted",
    "time",
    "nfev",
    "njev",
)


class History:
    """Records every call: the ``COLUMNS`` of ``StepInfo`` plus any metrics, one row per call (the
    start, then every ``callback_every`` iterations, then the end if it was not recorded).

    A ``History`` passed in ``callbacks`` is returned as ``Solution.history``. Each solve starts it
    afresh.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> history = nlls.History()
        >>> sol = nlls.least_squares(lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)]),
        ...                          jnp.array([-1.2, 1.0]), callbacks=[history])
        >>> data = history.as_dict()
        >>> bool(data["cost"][-1] < data["cost"][0]), int(data["step"][-1]) == int(sol.stats.steps)
        (True, True)
    """

    def __init__(self):
        self._rows: list[tuple] = []
        self._metrics: list[dict] = []

    def on_start(self, info: StepInfo) -> None:
        self._rows.clear()
        self._metrics.clear()
        self._record(info)

    def __call__(self, info: StepInfo) -> None:
        self._record(info)

    def on_end(self, info: StepInfo) -> None:
        if not self._rows or self._rows[-1][COLUMNS.index("iteration")] != info.iteration:
            self._record(info)

    def _record(self, info: StepInfo) -> None:
        self._rows.append(tuple(getattr(info, name) for name in COLUMNS))
        # The dict itself: metrics that later callbacks add to this step are recorded too.
        self._metrics.append(info.metrics)

    def __len__(self) -> int:
        return len(self._rows)

    def as_dict(self) -> dict[str, np.ndarray]:
        """One array per column; a metric is NaN where it was not computed."""
        columns = {name: np.array([row[i] for row in self._rows]) for i, name in enumerate(COLUMNS)}
        if not self._rows:
            columns = {name: np.zeros(0) for name in COLUMNS}
        columns["accepted"] = columns["accepted"].astype(bool)
        names = dict.fromkeys(name for metrics in self._metrics for name in metrics)
        for name in names:
            columns[name] = np.array(
                [float(metrics.get(name, math.nan)) for metrics in self._metrics]
            )
        return columns

    def save(self, path: str | os.PathLike) -> None:
        """Write the columns to an ``.npz`` file (``np.load(path)`` reads them back)."""
        np.savez(path, **self.as_dict())

    def plot(self, path: str | os.PathLike, *, metrics: bool = True) -> None:
        """Draw cost against step and against wall time (log scale for the values) and write the
        figure to ``path``.

        Metrics recorded by ``Metrics``/``EarlyStopping`` are drawn beside the cost when ``metrics``.
        Needs matplotlib (``pip install matplotlib``).
        """
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError(
                "History.plot needs matplotlib: pip install matplotlib (or nlls[bench])"
            ) from error
        data = self.as_dict()
        extra = [name for name in data if name not in COLUMNS] if metrics else []
        figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        for axes, x, label in (
            (by_step, data["step"], "step"),
            (by_time, data["time"], "time [s]"),
        ):
            axes.plot(x, data["cost"], label="cost ½‖r‖²")
            for name in extra:
                seen = np.isfinite(data[name])
                axes.plot(x[seen], data[name][seen], ".-", label=name)
            axes.set_yscale("log")
            axes.set_xlabel(label)
            axes.grid(True, which="both", alpha=0.3)
            axes.legend()
        by_step.set_ylabel("value")
        figure.savefig(path, dpi=120)
        plt.close(figure)


class Checkpoint:
    """Save the parameters and the full solver state every ``every`` accepted steps and at the end.

    Saves are atomic (a temporary file renamed over ``path``). ``least_squares(..., resume=path)``
    continues from the file and ends at the same parameters, bit for bit, as a solve that was never
    stopped. The final save also happens after ``KeyboardInterrupt`` and after another callback
    raised. A save that fails (a read-only or missing folder, a full disk) is a
    ``CheckpointWarning``: the previous checkpoint stays as it was, the solve goes on and returns its
    result, and ``failed_saves`` counts the failures.

    Examples:
        >>> import tempfile, os, jax.numpy as jnp, nlls
        >>> path = os.path.join(tempfile.mkdtemp(), "fit.ckpt")
        >>> f = lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)])
        >>> sol = nlls.least_squares(f, jnp.array([-1.2, 1.0]), callbacks=[nlls.Checkpoint(path, every=5)])
        >>> again = nlls.least_squares(f, jnp.array([-1.2, 1.0]), resume=path)
        >>> bool((again.params == sol.params).all())
        True
    """

    def __init__(self, path: str | os.PathLike, every: int = 10):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.path = os.fspath(path)
        self.every = every
        self.failed_saves = 0
        self._saved_at: int | None = None

    def on_start(self, info: StepInfo) -> None:
        self._saved_at = info.step

    def __call__(self, info: StepInfo) -> None:
        if info.step - self._saved_at >= self.every:
            self.save(info)

    def on_end(self, info: StepInfo) -> None:
        self.save(info)

    def save(self, info: StepInfo) -> None:
        try:
            checkpoint.save(self.path, info.solver_state, info.signature)
        except OSError as error:
            self.failed_saves += 1
            warnings.warn(
                f"checkpoint not saved to {self.path!r} at step {info.step} ({error}); the "
                "previous checkpoint, if any, is kept and the solve goes on",
                checkpoint.CheckpointWarning,
                stacklevel=2,
            )
        self._saved_at = info.step


class EarlyStopping:
    """Stop when ``metric(params)`` has not improved by more than ``min_delta`` for ``patience``
    evaluations, and return the parameters where it was lowest.

    In ``nlls.fit`` the metric is given the model (``metric(model)``, ``StepInfo.model``: a
    validation loss of the module, say), and ``best_model`` is the model where it was lowest.

    ``metric`` is evaluated at the start and after every accepted step the callbacks see (a rejected
    trial leaves the parameters unchanged). Its values are recorded under ``name`` in the History.
    Whatever ends the solve, the ``Solution`` holds the best parameters seen (its cost, residual and
    gradient are evaluated there; its counters are those of the whole solve).

    Example (a "validation metric" that is lowest half-way along the path):
        >>> import jax.numpy as jnp, nlls
        >>> f = lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)])
        >>> stop = nlls.EarlyStopping(lambda p: float((p[0] - 0.3) ** 2), patience=3)
        >>> sol = nlls.least_squares(f, jnp.array([-1.2, 1.0]), callbacks=[stop])
        >>> sol.message.split(":")[0], bool((sol.params == stop.best_params).all())
        ('callback', True)
    """

    def __init__(
        self,
        metric: Callable[[Any], Any],
        patience: int = 10,
        min_delta: float = 0.0,
        name: str = "early_stopping_metric",
    ):
        if not callable(metric):
            raise TypeError(f"metric must be a function of the parameters, got {metric!r}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be non-negative, got {min_delta!r}")
        self.metric, self.patience, self.min_delta, self.name = metric, patience, min_delta, name
        self.best = math.inf
        self.best_params = None
        self.best_model = None
        self.best_step = None
        self._waited = 0

    def on_start(self, info: StepInfo) -> None:
        self.best, self.best_params, self.best_step, self._waited = math.inf, None, None, 0
        self.best_model = None
        self._evaluate(info)

    def __call__(self, info: StepInfo) -> bool:
        if not info.accepted:
            return False
        return self._evaluate(info)

    def _evaluate(self, info: StepInfo) -> bool:
        value = float(self.metric(info.subject))
        info.metrics[self.name] = value
        if value < self.best - self.min_delta:
            self.best, self.best_params, self.best_step, self._waited = (
                value,
                info.params,
                info.step,
                0,
            )
            self.best_model = info.model
            return False
        self._waited += 1
        return self._waited >= self.patience

    def restore(self):
        return self.best_params


class Metrics:
    """Evaluate ``{name: fn(params) -> float}`` at the start, every ``every`` callback calls, and at
    the end; the values go into ``StepInfo.metrics`` and so into the History. In ``nlls.fit`` the
    functions are given the model (``fn(model)``, ``StepInfo.model``).

    Jit the functions (``jax.jit``) when they are more than a few operations: they run in Python
    between compiled segments.

    Examples:
        >>> import jax.numpy as jnp, nlls
        >>> f = lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)])
        >>> history = nlls.History()
        >>> metrics = nlls.Metrics({"distance": lambda p: jnp.linalg.norm(p - 1.0)}, every=5)
        >>> sol = nlls.least_squares(f, jnp.array([-1.2, 1.0]), callbacks=[history, metrics])
        >>> distance = history.as_dict()["distance"]
        >>> bool(distance[0] > 2.0), bool(distance[-1] < 1e-6)
        (True, True)
    """

    def __init__(self, functions: Mapping[str, Callable[[Any], Any]], every: int = 1):
        if not isinstance(functions, Mapping) or not all(callable(f) for f in functions.values()):
            raise TypeError("Metrics takes a mapping from names to functions of the parameters")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive int, got {every!r}")
        clash = set(functions) & set(COLUMNS)
        if clash:
            raise ValueError(f"metric names {sorted(clash)} clash with History columns")
        self.functions, self.every = dict(functions), every
        self._calls = 0
        self._last_iteration = None

    def on_start(self, info: StepInfo) -> None:
        self._calls = 0
        self._evaluate(info)

    def __call__(self, info: StepInfo) -> None:
        self._calls += 1
        if self._calls % self.every == 0:
            self._evaluate(info)

    def on_end(self, info: StepInfo) -> None:
        if self._last_iteration != info.iteration:
            self._evaluate(info)

    def _evaluate(self, info: StepInfo) -> None:
        for name, function in self.functions.items():
            info.metrics[name] = float(function(info.subject))
        self._last_iteration = info.iteration


class ProgressBar:
    """A tqdm progress bar over accepted steps showing cost, ‖g‖∞ and the damping.

    Quiet when the output is not a terminal (tqdm's ``disable=None``), and in every process but
    process 0 of a run of several (``jax.distributed``); other keyword arguments go to
    ``tqdm.tqdm``.

    Examples:
        >>> import io, jax.numpy as jnp, nlls
        >>> f = lambda p: jnp.array([p[0] - 1.0, 10 * (p[1] - p[0] ** 2)])
        >>> out = io.StringIO()
        >>> sol = nlls.least_squares(f, jnp.array([-1.2, 1.0]),
        ...                          callbacks=[nlls.ProgressBar(file=out, disable=False)])
        >>> "cost=" in out.getvalue()
        True
    """

    def __init__(self, **tqdm_options):
        self.options = {"disable": None, "file": sys.stderr, "unit": "step", **tqdm_options}
        self._bar = None

    def on_start(self, info: StepInfo) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as error:
            raise ImportError("ProgressBar needs tqdm: pip install tqdm") from error
        options = self.options if leads() else {**self.options, "disable": True}
        self._bar = tqdm(total=info.max_steps, initial=info.step, **options)
        self._show(info)

    def __call__(self, info: StepInfo) -> None:
        self._show(info)

    def on_end(self, info: StepInfo) -> None:
        """Show the last point and close the bar at the real end: a solve that stopped before its
        step limit (converged, stopped by a callback) ends at 100% of the steps it took."""
        if self._bar is not None:
            self._show(info)
            if not self._bar.disable:
                self._bar.total = self._bar.n
            self._bar.set_description_str(info.status.name.lower())
            self._bar.close()

    def _show(self, info: StepInfo) -> None:
        bar = self._bar
        if bar is None or bar.disable:
            return
        bar.set_postfix(
            cost=f"{info.cost:.3e}",
            g=f"{info.grad_norm:.2e}",
            damping=f"{info.damping:.1e}",
            refresh=False,
        )
        bar.update(info.step - bar.n)
