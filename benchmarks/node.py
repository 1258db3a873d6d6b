"""Neural ODEs: which least-squares method, which AD mode, single or multiple shooting — against Adam
and Adam → L-BFGS — on five small universal differential equations.

Each problem: a few states, a network of 321–453 parameters in the vector field, noisy observations
(noise 1 % of each state's mean magnitude, fixed seeds) at evenly spaced times, and an independent
noisy sample at the midpoints for validation. Float64, Tsit5 with tolerances 1e-6, one fresh fit
per configuration from the same network initialisation:

- *Lotka–Volterra UDE* (the demo's): du/dt = (α u₁, −δ u₂) + NN(u), 2→16→16→2 radial-basis network;
- *cubic oscillator*: du/dt = A u³ learned entirely by a network of u³, NN(u³), 2→16→16→2 tanh;
- *damped pendulum*: θ″ = −4 sin θ − 0.3 θ′|θ′|, the drag unknown: du/dt = (ω, −4 sin θ) + NN(u);
- *SIR*: an epidemic whose force of infection λ(I) = 2I is a network: S′ = −S·NN(I),
  I′ = S·NN(I) − 0.5 I, R′ = 0.5 I, 1→16→16→1 tanh;
- *Lorenz-96, 5 states* (F = 8, chaotic): the advection (u₍ᵢ₊₁₎ − u₍ᵢ₋₂₎)u₍ᵢ₋₁₎ is a 5→16→16→5 network,
  the linear part −uᵢ + F known; over 4 time units, where a chaotic trajectory makes the fit hard.

Configurations: LM, Gauss–Newton, dogleg and Steihaug's trust region × forward / reverse Jacobian
× single / multiple shooting (4 segments), ``method="auto"`` (its own AD mode) in both shootings,
each for 200 steps; Adam for 3,000 updates at the best of the learning rates 1e-3, 1e-2 and 3e-2
(tuned per problem by final training MSE); and that Adam run continued by 1,000 L-BFGS steps.
Times are training times on the solver's clock (compilation excluded).

The target of a problem is the noise level (the mean noise variance), or, when no configuration
reaches it, twice the best final training MSE of all: a level someone reached. *Time to target* is
the training time of the first callback call (every step; Adam every 50 updates, L-BFGS every 10)
at which the field, integrated once from the first observation, is at or below it: one trajectory,
whatever the shooting (a multiple-shooting cost, made of segments that each start on the data, is
not comparable), on the solve's clock less the time this measurement takes. A field that blows up
has an infinite error.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks.markdown import opening, seconds, table

LS_STEPS = 200
ADAM_STEPS = 3000
LBFGS_STEPS = 1000
LEARNING_RATES = (1e-3, 1e-2, 3e-2)
SEGMENTS = 4
TOLERANCE = 1e-6
RELATIVE_NOISE = 1e-2
LS_METHODS = ("lm", "gn", "dogleg", "trust_region")
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "node-loss-vs-time.png"


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    truth: Callable  # (t, u) -> du/dt
    known: Callable | None  # the physics given to the model
    u0: tuple
    t_end: float
    observations: int
    model: Callable[[], eqx.Module]

    def data(self):
        ts = jnp.linspace(0.0, self.t_end, self.observations)
        ts_val = (ts[:-1] + ts[1:]) / 2
        clean, clean_val = _solve(self.truth, self.u0, ts), _solve(self.truth, self.u0, ts_val)
        scale = RELATIVE_NOISE * jnp.mean(jnp.abs(clean), axis=0)
        train, val = jax.random.split(jax.random.key(len(self.name)))
        ys = clean + scale * jax.random.normal(train, clean.shape)
        ys_val = clean_val + scale * jax.random.normal(val, clean_val.shape)
        return ts, ys, ts_val, ys_val, float(jnp.mean(scale**2))


def _solve(field, u0, ts):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, u, args: field(t, u)),
        diffrax.Tsit5(),
        0.0,
        float(ts[-1]),
        None,
        jnp.asarray(u0, jnp.float64),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        max_steps=100_000,
    )
    return solution.ys


def _mlp(inputs, outputs, key, activation=jnp.tanh):
    return eqx.nn.MLP(inputs, outputs, 16, 2, activation=activation, key=jax.random.key(key))


class _OfCubes(eqx.Module):
    network: eqx.nn.MLP

    def __call__(self, u):
        return self.network(u**3)


class _Infection(eqx.Module):
    """(−S·λ(I), S·λ(I), 0) with the force of infection λ a network of I."""

    network: eqx.nn.MLP

    def __call__(self, u):
        force = self.network(u[1:2])[0] * u[0]
        return jnp.stack([-force, force, jnp.zeros_like(force)])


_CUBIC = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])


def _lotka_volterra(t, u):
    return jnp.stack([1.3 * u[0] - 0.9 * u[0] * u[1], 0.8 * u[0] * u[1] - 1.8 * u[1]])


def _lorenz96(t, u):
    return (jnp.roll(u, -1) - jnp.roll(u, 2)) * jnp.roll(u, 1) - u + 8.0


PROBLEMS = (
    Problem(
        "Lotka–Volterra UDE",
        _lotka_volterra,
        lambda t, u: jnp.stack([1.3 * u[0], -1.8 * u[1]]),
        (0.44249296, 4.6280594),
        5.0,
        21,
        lambda: _mlp(2, 2, 1, lambda x: jnp.exp(-(x**2))),
    ),
    Problem(
        "cubic oscillator",
        lambda t, u: _CUBIC @ u**3,
        None,
        (2.0, 0.0),
        10.0,
        41,
        lambda: _OfCubes(_mlp(2, 2, 2)),
    ),
    Problem(
        "damped pendulum",
        lambda t, u: jnp.stack([u[1], -4.0 * jnp.sin(u[0]) - 0.3 * u[1] * jnp.abs(u[1])]),
        lambda t, u: jnp.stack([u[1], -4.0 * jnp.sin(u[0])]),
        (2.0, 0.0),
        10.0,
        41,
        lambda: _mlp(2, 2, 3),
    ),
    Problem(
        "SIR",
        lambda t, u: jnp.stack([-2.0 * u[0] * u[1], 2.0 * u[0] * u[1] - 0.5 * u[1], 0.5 * u[1]]),
        lambda t, u: jnp.stack([jnp.zeros_like(u[1]), -0.5 * u[1], 0.5 * u[1]]),
        (0.99, 0.01, 0.0),
        20.0,
        41,
        lambda: _Infection(_mlp(1, 1, 4)),
    ),
    Problem(
        "Lorenz-96 (5 states)",
        _lorenz96,
        lambda t, u: -u + 8.0,
        (8.01, 8.0, 8.0, 8.0, 8.0),
        4.0,
        41,
        lambda: _mlp(5, 5, 5),
    ),
)


def _configurations():
    """(label, family, options) of every configuration run on each problem."""
    for method in LS_METHODS:
        for jac in ("fwd", "rev"):
            for segments in (1, SEGMENTS):
                shooting = "single" if segments == 1 else f"multiple ({segments})"
                label = f"{method}, {jac}, {shooting}"
                options = dict(method=method, jac=jac, segments=segments, max_steps=LS_STEPS)
                yield label, method, options
    for segments in (1, SEGMENTS):
        shooting = "single" if segments == 1 else f"multiple ({segments})"
        options = dict(method="auto", segments=segments, max_steps=LS_STEPS)
        yield f"auto, {shooting}", "auto", options


class _Trajectory:
    """A callback recording, at every call, the training MSE of one trajectory of the current
    field integrated from the first observation, against the solve's clock less the time spent
    here (so that measuring does not slow the method measured)."""

    def __init__(self, problem, model, ts, ys):
        static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
        known = problem.known

        @eqx.filter_jit
        def mse(trainable):
            field = eqx.combine(trainable, static)

            def vector_field(t, u, args):
                return field(u) if known is None else known(t, u) + field(u)

            solution = diffrax.diffeqsolve(
                diffrax.ODETerm(vector_field),
                diffrax.Tsit5(),
                ts[0],
                ts[-1],
                None,
                ys[0],
                saveat=diffrax.SaveAt(ts=ts),
                stepsize_controller=diffrax.PIDController(rtol=TOLERANCE, atol=TOLERANCE),
                max_steps=4096,
                throw=False,
            )
            return jnp.mean((solution.ys - ys) ** 2)

        self.mse, self.spent, self.times, self.values = mse, 0.0, [], []

    def _record(self, info) -> None:
        began = time.perf_counter()
        value = float(self.mse(info.params["field"]))
        self.times.append(info.time - self.spent)
        self.values.append(value if np.isfinite(value) else float("inf"))
        self.spent += time.perf_counter() - began

    def on_start(self, info) -> None:
        self._record(info)

    def __call__(self, info) -> None:
        self._record(info)


def _fit(problem, data, model, **options):
    """One fit: the times and trajectory MSEs of its rows, the result and the wall time."""
    ts, ys, *_ = data
    every = options.pop("every", 1)
    trace = _Trajectory(problem, model, ts, ys)
    trace.mse(eqx.filter(model, eqx.is_inexact_array))  # compiled before the clock starts
    began = time.perf_counter()
    result = nlls.ode.fit(
        model,
        ts,
        ys,
        physics=problem.known,
        rtol=TOLERANCE,
        atol=TOLERANCE,
        callbacks=[trace],
        callback_every=every,
        **options,
    )
    return np.asarray(trace.times), np.asarray(trace.values), result, time.perf_counter() - began


def _final_mse(problem, model, ts, ys):
    try:
        prediction = nlls.ode.integrate(
            model, ts, ys[0], physics=problem.known, rtol=TOLERANCE, atol=TOLERANCE
        )
    except Exception:  # the fitted field blows up between observations: no finite error
        return float("inf")
    return float(jnp.mean((prediction - ys) ** 2))


def _row(label, family, problem, data, times, mse, result, wall):
    ts, ys, ts_val, ys_val, _ = data
    train = _final_mse(problem, result.model, ts, ys)
    val_ts = jnp.concatenate([ts[:1], ts_val])
    val_ys = jnp.concatenate([ys[:1], ys_val])
    val = _final_mse(problem, result.model, val_ts, val_ys)
    return {
        "config": label,
        "family": family,
        "times": np.asarray(times).tolist(),
        "mse": np.asarray(mse).tolist(),
        "train_mse": train,
        "val_mse": val,
        "wall_s": wall,
        "status": result.solution.status.name,
        "jac": result.solution.stats.jac,
        "choice": result.solution.stats.choice,
        "failed": None,
    }


def _run_problem(problem: Problem, verbose: bool) -> dict:
    data = problem.data()
    rows = []

    def attempt(label, family, run):
        _release()
        try:
            rows.append(run())
        except Exception as error:  # a configuration that cannot run is a result, not a crash
            rows.append({"config": label, "family": family, "failed": f"{error}"[:200]})
            if verbose:
                traceback.print_exc()
        if verbose:
            row = rows[-1]
            what = row["failed"] or f"train MSE {row['train_mse']:.3g} in {row['wall_s']:.1f} s"
            print(f"  {problem.name} · {label}: {what}", flush=True)

    for label, family, options in _configurations():
        attempt(
            label,
            family,
            lambda options=options, label=label, family=family: _row(
                label, family, problem, data, *_fit(problem, data, problem.model(), **options)
            ),
        )
    # Adam at each learning rate; the best by final training MSE is the tuned one.
    adams = []
    for rate in LEARNING_RATES:
        _release()
        fitted = _fit(
            problem,
            data,
            problem.model(),
            method="adam",
            learning_rate=rate,
            max_steps=ADAM_STEPS,
            every=50,
        )
        adams.append((rate, fitted))
    rate, best = min(adams, key=lambda pair: _final_mse(problem, pair[1][2].model, *data[:2]))
    rows.append(_row(f"adam (lr {rate:g})", "adam", problem, data, *best))
    if verbose:
        print(f"  {problem.name} · adam: lr {rate:g}, MSE {rows[-1]['train_mse']:.3g}", flush=True)
    # Adam → L-BFGS: the tuned Adam run continued by L-BFGS, one clock.
    times, mse, adam_result, adam_wall = best
    more = _fit(problem, data, adam_result.model, method="lbfgs", max_steps=LBFGS_STEPS, every=10)
    offset = times[-1] if len(times) else 0.0
    joined = (
        np.concatenate([times, np.asarray(more[0]) + offset]),
        np.concatenate([mse, more[1]]),
        more[2],
        adam_wall + more[3],
    )
    rows.append(_row("adam → lbfgs", "adam → lbfgs", problem, data, *joined))
    if verbose:
        print(f"  {problem.name} · adam → lbfgs: MSE {rows[-1]['train_mse']:.3g}", flush=True)
    _score(rows, data[4])
    return {"name": problem.name, "noise": data[4], "rows": rows, "parameters": _size(problem)}


def _release() -> None:
    """Let every compiled program go: a compiled XLA CPU program holds about a hundred memory
    mappings, and a process that kept the few hundred of this suite passed Linux's limit
    (``vm.max_map_count``, 65,530) and failed to compile the next one."""
    import gc

    from nlls import plan

    plan._cached_plan.cache_clear()
    jax.clear_caches()
    gc.collect()


def _size(problem) -> int:
    leaves = jax.tree_util.tree_leaves(eqx.filter(problem.model(), eqx.is_inexact_array))
    return int(sum(leaf.size for leaf in leaves))


def _score(rows, noise) -> None:
    """The common target, and each row's time to it."""
    finite = [r["train_mse"] for r in rows if not r["failed"] and np.isfinite(r["train_mse"])]
    reached_noise = any(value <= noise for value in finite)
    target = noise if reached_noise or not finite else 2.0 * min(finite)
    for row in rows:
        row["target"] = target
        if row["failed"]:
            row["time_to_target"] = None
            continue
        hits = np.nonzero(np.asarray(row["mse"]) <= target)[0]
        row["time_to_target"] = float(row["times"][hits[0]]) if hits.size else None


def run(verbose: bool = True) -> dict:
    problems = [_run_problem(problem, verbose) for problem in PROBLEMS]
    drawn = _draw(problems)
    return {
        "problems": problems,
        "figure": None if drawn is None else str(drawn.relative_to(FIGURE.parents[1])),
        "x64": bool(jax.config.jax_enable_x64),
    }


def _best_of(rows, family):
    """The fastest row of a family to the target (or its lowest final MSE if none reached it)."""
    mine = [r for r in rows if r["family"] == family and not r["failed"]]
    if not mine:
        return None
    reached = [r for r in mine if r["time_to_target"] is not None]
    if reached:
        return min(reached, key=lambda r: r["time_to_target"])
    return min(mine, key=lambda r: r["train_mse"])


FAMILIES = (*LS_METHODS, "auto", "adam", "adam → lbfgs")


def _draw(problems) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    columns = 3
    rows = -(-len(problems) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows))
    axes = grid.ravel()[: len(problems)]
    for spare in grid.ravel()[len(problems) :]:
        spare.set_visible(False)
    colours = dict(zip(FAMILIES, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for axis, problem in zip(axes, problems, strict=True):
        for family in FAMILIES:
            row = _best_of(problem["rows"], family)
            if row is None or not row["times"]:
                continue
            times = np.maximum(np.asarray(row["times"]), 1e-3)
            axis.loglog(times, row["mse"], color=colours[family], label=row["config"], lw=1.3)
        axis.axhline(problem["rows"][0]["target"], color="grey", ls=":", lw=1)
        axis.set_title(problem["name"], fontsize=10)
        axis.set_xlabel("training time [s]")
        axis.set_ylabel("training MSE (one trajectory)")
        axis.legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, dpi=110)
    plt.close(figure)
    return FIGURE


def headline(result: dict) -> list[str]:
    parts = []
    for problem in result["problems"]:
        rows = problem["rows"]
        best = min(
            (r for r in rows if not r["failed"] and r["time_to_target"] is not None),
            key=lambda r: r["time_to_target"],
            default=None,
        )
        auto = _best_of(rows, "auto")
        auto_time = None if auto is None else auto["time_to_target"]
        ratio = (
            "—"
            if best is None or auto_time is None
            else f"{auto_time / best['time_to_target']:.2f}×"
        )
        parts.append(f"{problem['name']}: fastest {best['config'] if best else '—'}, auto {ratio}")
    return ["- Neural ODEs (5 problems, time to a common target): " + "; ".join(parts) + "."]


def render(result: dict) -> str:
    lines = opening("Neural ODEs: method, AD mode and shooting", result, __doc__)
    if result.get("figure"):
        lines += [
            "",
            f"Loss against training time, the fastest configuration of each family: "
            f"`{result['figure']}`.",
        ]
    for problem in result["problems"]:
        rows = problem["rows"]
        fastest = min(
            (r["time_to_target"] for r in rows if not r["failed"] and r["time_to_target"]),
            default=None,
        )
        lines += [
            "",
            f"### {problem['name']} ({problem['parameters']} parameters; target MSE "
            f"{rows[0]['target']:.3g}, noise level {problem['noise']:.3g})",
            "",
            table(
                [
                    "configuration",
                    "time to target",
                    "vs fastest",
                    "final train MSE",
                    "final val MSE",
                    "status",
                    "training time",
                ],
                [
                    [
                        r["config"],
                        seconds(r.get("time_to_target")) if not r["failed"] else "failed",
                        "—"
                        if r["failed"] or r["time_to_target"] is None or fastest is None
                        else f"{r['time_to_target'] / fastest:.2f}×",
                        "—" if r["failed"] else f"{r['train_mse']:.3g}",
                        "—" if r["failed"] else f"{r['val_mse']:.3g}",
                        (r["failed"] or "")[:60] if r["failed"] else r["status"].lower(),
                        "—" if r["failed"] else seconds(r["times"][-1] if r["times"] else None),
                    ]
                    for r in rows
                ],
                "lrrrrll",
            ),
        ]
    return "\n".join(lines)
