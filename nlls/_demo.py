"""The built-in demo: a universal differential equation for Lotka–Volterra, trained three ways.

The data: the predator–prey system

    dx/dt = α x − β x y,    dy/dt = γ x y − δ y,    (α, β, γ, δ) = (1.3, 0.9, 0.8, 1.8),

from u(0) = (0.44249296, 4.6280594), observed every 0.25 on t ∈ [0, 5] (21 points) with Gaussian
noise of standard deviation 5e-3 × the mean of each state (fixed seed); a second, independent noisy
sample at the 20 midpoints is the validation set.

The model keeps the linear terms it "knows" and learns the interaction with a network:

    du₁/dt = α u₁ + NN₁(u),    du₂/dt = −δ u₂ + NN₂(u),

with NN a 2→16→16→2 MLP with radial-basis activation exp(−x²) (354 parameters), integrated by
diffrax (Tsit5, adaptive steps) and fitted by single shooting from the first observation.

It is trained by Levenberg–Marquardt (``nlls.ode.fit``: 42 residuals, 354 parameters, so reverse mode
and the m×m minimum-norm step), by Adam, and by Adam followed by L-BFGS (the usual scientific-ML
recipe: Adam for 5000 iterations, then L-BFGS for 1000), all on the same residual with the same
History, and the demo prints a table and draws loss against wall time and the fitted trajectories.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import ode
from .callbacks import History, Metrics

ALPHA, BETA, GAMMA, DELTA = 1.3, 0.9, 0.8, 1.8
U0 = (0.44249296, 4.6280594)
T_END, OBSERVATIONS = 5.0, 21
RELATIVE_NOISE = 5e-3
WIDTH = 16
ODE_TOLERANCE = 1e-6
METHODS = ("lm", "adam", "adam+lbfgs")


def lotka_volterra(t, u, args=None):
    """The true vector field."""
    x, y = u[0], u[1]
    return jnp.stack([ALPHA * x - BETA * x * y, GAMMA * x * y - DELTA * y])


def known_terms(t, u):
    """The part of the field the model is given: α u₁ and −δ u₂."""
    return jnp.stack([ALPHA * u[0], -DELTA * u[1]])


def true_trajectory(ts, dtype=jnp.float64):
    """The noise-free solution at ``ts``, to 1e-10."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lotka_volterra),
        diffrax.Tsit5(),
        0.0,
        float(ts[-1]),
        None,
        jnp.asarray(U0, dtype),
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts, dtype)),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        max_steps=100_000,
    )
    return solution.ys


@dataclass(frozen=True)
class Data:
    ts: jax.Array
    ys: jax.Array
    ts_val: jax.Array
    ys_val: jax.Array


def make_data(seed: int = 0, dtype=jnp.float64) -> Data:
    """Noisy observations at t = 0, 0.25, …, 5 and an independent noisy sample at the midpoints."""
    ts = jnp.linspace(0.0, T_END, OBSERVATIONS, dtype=dtype)
    ts_val = (ts[:-1] + ts[1:]) / 2
    clean, clean_val = true_trajectory(ts, dtype), true_trajectory(ts_val, dtype)
    scale = RELATIVE_NOISE * jnp.mean(clean, axis=0)
    train_key, val_key = jax.random.split(jax.random.key(seed))
    ys = clean + scale * jax.random.normal(train_key, clean.shape, dtype)
    ys_val = clean_val + scale * jax.random.normal(val_key, clean_val.shape, dtype)
    return Data(ts, ys, ts_val, ys_val)


def make_field(seed: int = 0, dtype=jnp.float64) -> eqx.nn.MLP:
    """The 2→16→16→2 radial-basis MLP (354 parameters), equinox's default initialisation."""
    model = eqx.nn.MLP(
        2, 2, WIDTH, 2, activation=lambda x: jnp.exp(-(x**2)), key=jax.random.key(seed + 1)
    )
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, model
    )


def predict(model, ts, data: Data):
    """The model's trajectory at ``ts`` (from the first observation at t = 0), as the fit
    integrates it."""
    ts = jnp.concatenate([data.ts[:1], jnp.asarray(ts)])
    return _trajectory(model, ts, data.ys[0])[1:]


@eqx.filter_jit
def _trajectory(model, ts, y0):
    """One compiled solve (``nlls.ode.integrate`` checks its inputs on every call; the validation
    metric runs at every History row and must not slow the clock it is recorded on)."""
    term = diffrax.ODETerm(lambda t, u, args: known_terms(t, u) + model(u))
    solution = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        ts[0],
        ts[-1],
        None,
        y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=ODE_TOLERANCE, atol=ODE_TOLERANCE),
        max_steps=4096,
        throw=False,
    )
    return solution.ys


@dataclass
class Run:
    """One training recipe: its History rows (stages joined on one clock) and the fitted model."""

    name: str
    model: object = None
    times: list = field(default_factory=list)
    mse: list = field(default_factory=list)
    val_mse: list = field(default_factory=list)
    steps: int = 0
    compile_s: float = 0.0

    def add(self, history: History, residuals: int, wall_s: float) -> None:
        data = history.as_dict()
        offset = self.times[-1] if self.times else 0.0
        self.times += list(offset + data["time"])
        self.mse += list(2.0 * data["cost"] / residuals)
        self.val_mse += list(data["val_mse"])
        self.steps += int(data["step"][-1])
        self.compile_s += wall_s - float(data["time"][-1])

    def continued(self, name: str) -> Run:
        """A copy to train further (Adam → L-BFGS continues the Adam run)."""
        return Run(
            name,
            self.model,
            list(self.times),
            list(self.mse),
            list(self.val_mse),
            self.steps,
            self.compile_s,
        )

    def time_to(self, target: float) -> float:
        """The first recorded time with MSE ≤ ``target`` (NaN if never)."""
        return next((t for t, m in zip(self.times, self.mse, strict=True) if m <= target), math.nan)


# History rows: LM after every step, Adam every 50 updates, L-BFGS every 10 (a segment of the
# compiled loop costs about a millisecond); the validation MSE every 5th LM row, at every other row.
STAGES = {
    "lm": ({"callback_every": 1}, 5),
    "adam": ({"callback_every": 50}, 1),
    "lbfgs": ({"callback_every": 10}, 1),
}


class _Progress:
    """Prints a line about ten times per stage (step, MSE, seconds of training), so that a long
    run shows it is alive; the tqdm bar (``nlls.ProgressBar``) is quiet off a terminal."""

    def __init__(self, name: str, max_steps: int, residuals: int):
        self.name, self.residuals = name, residuals
        self.every = max(1, max_steps // 10)
        self.next = self.every

    def __call__(self, info) -> None:
        if info.step >= self.next:
            self.next = (info.step // self.every + 1) * self.every
            print(
                f"    {self.name}: step {info.step:5d}/{info.max_steps}, "
                f"train MSE {2.0 * info.cost / self.residuals:.3e}, {info.time:6.2f} s",
                flush=True,
            )


def train_stage(run: Run, method: str, data: Data, **options) -> Run:
    """Train ``run.model`` further by ``method``, recording the History on the run's clock."""
    history = History()
    progress = _Progress(method, options.get("max_steps", 1000), data.ys.size)
    val_data = (data.ts_val, data.ys_val)
    segments, metric_every = STAGES[method]
    validation = Metrics(
        {"val_mse": lambda field: _val_mse(field, run.model, data, *val_data)}, every=metric_every
    )
    began = time.perf_counter()
    result = ode.fit(
        run.model,
        data.ts,
        data.ys,
        physics=known_terms,
        rtol=ODE_TOLERANCE,
        atol=ODE_TOLERANCE,
        method=method,
        callbacks=[history, validation, progress],
        **segments,
        **options,
    )
    run.model = result.model
    run.add(history, data.ys.size, time.perf_counter() - began)
    return run


def _val_mse(params, like, data: Data, ts_val, ys_val) -> float:
    """Validation MSE of the field with parameters ``params["field"]``."""
    model = eqx.combine(params["field"], eqx.filter(like, eqx.is_inexact_array, inverse=True))
    return float(jnp.mean((predict(model, ts_val, data) - ys_val) ** 2))


def run_demo(
    *,
    methods=METHODS,
    seed: int = 0,
    lm_steps: int = 200,
    adam_steps: int = 5000,
    lbfgs_steps: int = 1000,
    learning_rate: float = 3e-2,
    output: str | None = "nlls-demo.png",
) -> dict[str, Run]:
    """Train by each recipe in ``methods``, print the table, draw the figure to ``output``.

    ``"adam+lbfgs"`` continues the ``"adam"`` run when both are asked for (Adam runs once)."""
    data = make_data(seed)
    print(
        "Lotka–Volterra universal differential equation: du/dt = (α u₁, −δ u₂) + NN(u), "
        f"NN 2→{WIDTH}→{WIDTH}→2 (354 parameters), {OBSERVATIONS} noisy observations of 2 states "
        f"on [0, {T_END:g}], {data.ts_val.size} validation points; seed {seed}",
        flush=True,
    )
    runs = {}

    def fresh(name):
        return Run(name, model=make_field(seed, data.ys.dtype))

    def timed(label, train):
        """Run one stage and say how long it took (its own time, compilation included)."""
        print(f"  training {label} (compiling first) ...", flush=True)
        began = time.perf_counter()
        run = train()
        print(f"  trained {label} in {time.perf_counter() - began:.1f} s", flush=True)
        return run

    if "lm" in methods:
        runs["lm"] = timed("lm", lambda: train_stage(fresh("lm"), "lm", data, max_steps=lm_steps))
    if "adam" in methods or "adam+lbfgs" in methods:
        adam = timed(
            "adam",
            lambda: train_stage(
                fresh("adam"), "adam", data, max_steps=adam_steps, learning_rate=learning_rate
            ),
        )
        if "adam" in methods:
            runs["adam"] = adam
        if "adam+lbfgs" in methods:
            runs["adam+lbfgs"] = timed(
                "lbfgs after adam",
                lambda: train_stage(
                    adam.continued("adam+lbfgs"), "lbfgs", data, max_steps=lbfgs_steps
                ),
            )
    print()
    print(table(runs, data))
    if output:
        drawn = draw(runs, data, output)
        print(f"\nwrote {drawn}" if drawn else "\n(matplotlib is not installed: no figure drawn)")
    return runs


def table(runs: dict[str, Run], data: Data) -> str:
    """Final train and validation MSE, wall time, steps, and the time each recipe took to reach the
    final MSE of the best first-order recipe."""
    first_order = [run for name, run in runs.items() if name != "lm"]
    target = min((run.mse[-1] for run in first_order), default=math.nan)
    header = (
        f"{'method':12s} {'train MSE':>10s} {'val MSE':>10s} {'steps':>6s} {'time [s]':>9s} "
        f"{'compile [s]':>11s} {'time to target [s]':>19s}"
    )
    lines = [header, "-" * len(header)]
    for name, run in runs.items():
        val = float(jnp.mean((predict(run.model, data.ts_val, data) - data.ys_val) ** 2))
        reach = run.time_to(target)
        reached = f"{reach:19.3f}" if math.isfinite(reach) else f"{'never':>19s}"
        lines.append(
            f"{name:12s} {run.mse[-1]:10.3e} {val:10.3e} {run.steps:6d} {run.times[-1]:9.2f} "
            f"{run.compile_s:11.1f} {reached}"
        )
    if first_order and "lm" in runs:
        best = min(first_order, key=lambda run: run.mse[-1])
        lm_time = runs["lm"].time_to(target)
        lines.append("")
        lines.append(
            f"target = final train MSE of {best.name} ({target:.3e}); LM reached it in "
            f"{lm_time:.3f} s, {best.name} in {best.times[-1]:.2f} s: "
            f"{best.times[-1] / lm_time:.1f}× faster"
            if math.isfinite(lm_time)
            else f"target = final train MSE of {best.name} ({target:.3e}): LM did not reach it"
        )
    lines.append(
        "time: wall time of training (History clock, compilation excluded); compile: the rest "
        "of each call (tracing, compiling, checks)."
    )
    return "\n".join(lines)


COLOURS = {"lm": "tab:blue", "adam": "tab:orange", "adam+lbfgs": "tab:green"}


def draw(runs: dict[str, Run], data: Data, output: str) -> Path | None:
    """Loss against wall time, and the fitted trajectories over the data. One colour per method in
    both panels; in the right one the two states differ by line style (prey solid, predator
    dashed), the data are black and the validation points hollow."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (losses, paths) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    figure.suptitle(
        f"nlls demo: Lotka–Volterra universal differential equation ({WIDTH}×{WIDTH} network, "
        f"354 parameters, {OBSERVATIONS} observations of 2 states)"
    )
    # Adam → L-BFGS continues the Adam run: drawn first, so that Adam's own curve shows on top.
    for name, run in sorted(runs.items(), key=lambda item: item[0] != "adam+lbfgs"):
        colour = COLOURS.get(name, "tab:gray")
        losses.plot(run.times, run.mse, color=colour, label=f"{name} (train)")
        seen = np.isfinite(run.val_mse)
        losses.plot(
            np.asarray(run.times)[seen],
            np.asarray(run.val_mse)[seen],
            ":",
            color=colour,
            label=f"{name} (validation)",
        )
    losses.set_xscale("symlog", linthresh=0.1)
    losses.set_yscale("log")
    losses.set_xlabel("wall time of training [s] (compilation excluded)")
    losses.set_ylabel("MSE")
    losses.set_title("loss against time")
    losses.grid(True, which="both", alpha=0.3)
    handles, labels = losses.get_legend_handles_labels()
    rank = {name: i for i, name in enumerate(COLOURS)}
    ordered = sorted(zip(labels, handles, strict=True), key=lambda p: rank.get(p[0].split()[0], 9))
    losses.legend([h for _, h in ordered], [label for label, _ in ordered], fontsize="small")
    dense = jnp.linspace(0.0, T_END, 200, dtype=data.ts.dtype)
    truth = true_trajectory(dense, data.ts.dtype)
    styles = ("-", "--")  # prey, predator
    for state, style in enumerate(styles):
        paths.plot(dense, truth[:, state], style, color="0.75", linewidth=4,
                   label="truth" if state == 0 else None)  # fmt: skip
        paths.plot(data.ts, data.ys[:, state], "o", color="black", markersize=3.5,
                   label="data" if state == 0 else None)  # fmt: skip
        paths.plot(data.ts_val, data.ys_val[:, state], "o", markerfacecolor="none",
                   markeredgecolor="black", markersize=4.5,
                   label="validation" if state == 0 else None)  # fmt: skip
    for name, run in runs.items():
        fitted = predict(run.model, dense[1:], data)
        for state, style in enumerate(styles):
            paths.plot(dense[1:], fitted[:, state], style, color=COLOURS.get(name, "tab:gray"),
                       linewidth=1.3, label=name if state == 0 else None)  # fmt: skip
    paths.set_xlabel("t")
    paths.set_ylabel("prey (solid), predator (dashed)")
    paths.set_title("fitted trajectories")
    paths.legend(fontsize="small")
    path = Path(output)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
