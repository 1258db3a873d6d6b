"""Minibatch training: stochastic LM against minibatch Adam, time to the same validation MSE.

Problem: Friedman's regression #1 (Friedman 1991) with 8 inputs, ``x ~ U[0, 1]⁸`` and
``y = 10 sin(π x₁x₂) + 20 (x₃ − ½)² + 10 x₄ + 5 x₅ + σε`` (``x₆…x₈`` are irrelevant), 10⁵
training and 10⁴ validation samples, inputs and targets standardised with the training set's mean
and standard deviation. Two noise levels: σ = 1 (the validation MSE cannot go below the noise
variance, about 0.041 in standardised units) and σ = 0 (the MSE is limited by the fit only). Model:
an 8→64→64→1 tanh MLP (``equinox.nn.MLP``, 4801 parameters, seed-0 initialisation), in float32
(the precision such models are trained in; data and parameters alike).

Methods, through one interface, ``nlls.fit(model, x, y, method=…, batch_size=B, val=…)``, with the
same batches (the same per-epoch permutations, seed 0, B = 128 for both):

- minibatch LM (``nlls.solvers.minibatch``): per batch, the per-sample Jacobian (128 × 4801) and the
  128 × 128 minimum-norm system; the damping coefficient's floor ``μ_min`` swept over 0.03–10 (it
  caps the step length at 1/μ_min and plays the part of a learning rate);
- minibatch Adam (optax through ``nlls.solvers.minibatch``): the learning rate swept over 1e-4–1e-2.

Protocol: each setting trains for the same wall-time budget (``max_time``), recording the validation
MSE at the end of every epoch (``nlls.History``, ``val=``); times are the History's, from the first
iteration (compilation and the first evaluation excluded). A time to target is thus known to within
an epoch (2–4 s for LM, 0.15 s for Adam here): it is given as the interval from the end of the last
epoch above the target to the end of the first epoch at or below it. Every epoch of either method
pays the same overhead (the validation MSE on 10⁴ samples, a few ms, and one host round trip);
Adam runs more epochs in the budget and so pays it more often. The settings run one after the
other, not interleaved: a change of machine load between runs shows in their time per epoch. Each
method is represented by its best setting (the one reaching the target first). Targets:

- *common*: 1.05 × the larger of the two methods' best validation MSE in the budget, so that both
  reach it; the time ratio LM / Adam is reported there;
- *Adam's best*: the lowest validation MSE any Adam setting reached in the budget, and whether (and
  when) LM reaches it; likewise *LM's best* for Adam.
"""

from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks.markdown import ratio, run_line, seconds, table

SAMPLES = 100_000
VAL_SAMPLES = 10_000
INPUTS = 8
WIDTH, DEPTH = 64, 2
BATCH_SIZE = 128
BUDGET_S = 12.0
NOISES = (1.0, 0.0)
ADAM_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LM_MIN_COEFFICIENTS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
COMMON_SLACK = 1.05
DTYPE = jnp.float32


def friedman1(key, samples: int, noise: float):
    """Friedman's #1 with ``INPUTS`` uniform inputs (in float64, cast later)."""
    inputs, errors = jax.random.split(key)
    x = jax.random.uniform(inputs, (samples, INPUTS), dtype=jnp.float64)
    y = (
        10.0 * jnp.sin(jnp.pi * x[:, 0] * x[:, 1])
        + 20.0 * (x[:, 2] - 0.5) ** 2
        + 10.0 * x[:, 3]
        + 5.0 * x[:, 4]
        + noise * jax.random.normal(errors, (samples,), dtype=jnp.float64)
    )
    return x, y[:, None]


def data(noise: float):
    """Standardised training and validation sets, and the noise variance in standardised units."""
    x, y = friedman1(jax.random.key(0), SAMPLES, noise)
    x_val, y_val = friedman1(jax.random.key(1), VAL_SAMPLES, noise)
    x_mean, x_std, y_mean, y_std = x.mean(0), x.std(0), y.mean(), y.std()

    def standard(a, b):
        return ((a - x_mean) / x_std).astype(DTYPE), ((b - y_mean) / y_std).astype(DTYPE)

    return standard(x, y), standard(x_val, y_val), float((noise / y_std) ** 2)


def model():
    mlp = eqx.nn.MLP(INPUTS, 1, WIDTH, DEPTH, activation=jnp.tanh, key=jax.random.key(0))
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(DTYPE) if eqx.is_inexact_array(leaf) else leaf, mlp
    )


def settings() -> list[tuple[str, str, dict]]:
    """(method label, setting label, ``fit`` options) of every run."""
    runs = [
        ("minibatch LM", f"μ_min = {c:g}", {"method": "lm", "min_damping_coefficient": c})
        for c in LM_MIN_COEFFICIENTS
    ]
    runs += [
        ("minibatch Adam", f"lr = {lr:g}", {"method": "adam", "learning_rate": lr})
        for lr in ADAM_LEARNING_RATES
    ]
    return runs


def train(start, train_set, val_set, options: dict) -> dict:
    """One run for ``BUDGET_S`` seconds; the History per epoch and the counts."""
    (x, y), (x_val, y_val) = train_set, val_set
    began = time.perf_counter()
    result = nlls.fit(
        start,
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=10**6,
        val=(x_val, y_val),
        max_time=BUDGET_S,
        seed=0,
        **options,
    )
    wall = time.perf_counter() - began
    history = result.history.as_dict()
    stats = result.solution.stats
    epochs = float(history["epoch"][-1])
    seconds = float(history["time"][-1])
    return {
        "epochs": epochs,
        "iterations": int(history["iteration"][-1]),
        "steps": int(stats.steps),
        "rejected": int(stats.rejected),
        "linear": stats.linear,
        "time_s": seconds,
        "wall_s": wall,
        "per_epoch_s": seconds / epochs if epochs else math.nan,
        "best_val_mse": float(np.nanmin(history["val_mse"])),
        "final_val_mse": float(history["val_mse"][-1]),
        "final_train_mse": 2.0 * float(result.solution.cost) / SAMPLES,
        "curve": [
            [float(t), float(e), float(v)]
            for t, e, v in zip(history["time"], history["epoch"], history["val_mse"], strict=True)
        ],
    }


def time_to(curve: list, target: float) -> float:
    """The first recorded time at which the validation MSE is at or below ``target``."""
    return next((t for t, _, v in curve if v <= target), math.nan)


def time_before(curve: list, target: float) -> float:
    """The recorded time just before ``time_to``: the target was reached after it."""
    times = [t for t, _, _ in curve]
    reached = time_to(curve, target)
    return max((t for t in times if t < reached), default=math.nan)


def _best(runs: list[dict], method: str, target: float) -> dict:
    """The run of ``method`` reaching ``target`` first (or, if none does, with the lowest MSE)."""
    mine = [run for run in runs if run["method"] == method]
    reached = [run for run in mine if math.isfinite(time_to(run["curve"], target))]
    if reached:
        return min(reached, key=lambda run: time_to(run["curve"], target))
    return min(mine, key=lambda run: run["best_val_mse"])


def problem(noise: float, verbose: bool) -> dict:
    train_set, val_set, floor = data(noise)
    start = model()
    n_params = sum(
        int(np.size(leaf))
        for leaf in jax.tree_util.tree_leaves(eqx.filter(start, eqx.is_inexact_array))
    )
    initial = float(jnp.mean((jax.vmap(start)(val_set[0]) - val_set[1]) ** 2))
    if verbose:
        print(
            f"  Friedman #1, σ = {noise:g}: noise floor (val MSE) {floor:.4g}, initial {initial:.4g}",
            flush=True,
        )
    runs = []
    for method, setting, options in settings():
        run = {"method": method, "setting": setting, **train(start, train_set, val_set, options)}
        runs.append(run)
        if verbose:
            print(
                f"    {method:15s} {setting:12s} {run['epochs']:6.0f} epochs in {run['time_s']:5.1f} s"
                f" ({run['per_epoch_s']:.3g} s/epoch, {run['rejected']} rejected): best val MSE "
                f"{run['best_val_mse']:.4g}, final {run['final_val_mse']:.4g}",
                flush=True,
            )
    best_of = {
        method: min(r["best_val_mse"] for r in runs if r["method"] == method)
        for method in ("minibatch LM", "minibatch Adam")
    }
    targets = []
    for name, target in (
        ("common", COMMON_SLACK * max(best_of.values())),
        ("Adam's best", best_of["minibatch Adam"]),
        ("LM's best", best_of["minibatch LM"]),
    ):
        lm, adam = _best(runs, "minibatch LM", target), _best(runs, "minibatch Adam", target)
        lm_time, adam_time = time_to(lm["curve"], target), time_to(adam["curve"], target)
        targets.append(
            {
                "target": name,
                "val_mse": target,
                "lm_setting": lm["setting"],
                "lm_time_s": lm_time,
                "lm_after_s": time_before(lm["curve"], target),
                "adam_setting": adam["setting"],
                "adam_time_s": adam_time,
                "adam_after_s": time_before(adam["curve"], target),
                "ratio": lm_time / adam_time
                if math.isfinite(lm_time) and math.isfinite(adam_time) and adam_time > 0
                else math.nan,
            }
        )
        if verbose:
            print(
                f"    target {name} ({target:.4g}): LM ({lm['setting']}) {lm_time:.3g} s "
                f"(after {targets[-1]['lm_after_s']:.3g} s), Adam ({adam['setting']}) "
                f"{adam_time:.3g} s (after {targets[-1]['adam_after_s']:.3g} s)",
                flush=True,
            )
    return {
        "problem": f"Friedman #1, σ = {noise:g}",
        "noise": noise,
        "samples": SAMPLES,
        "val_samples": VAL_SAMPLES,
        "layers": [INPUTS, *([WIDTH] * DEPTH), 1],
        "n_params": n_params,
        "noise_floor_mse": floor,
        "initial_val_mse": initial,
        "runs": runs,
        "targets": targets,
    }


def run(verbose: bool = True) -> dict:
    """Both noise levels; see the module docstring for the protocol."""
    return {
        "problems": [problem(noise, verbose) for noise in NOISES],
        "batch_size": BATCH_SIZE,
        "budget_s": BUDGET_S,
        "dtype": jnp.dtype(DTYPE).name,
        "common_slack": COMMON_SLACK,
    }


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullets: time to the common validation MSE, LM against Adam, per problem."""
    lines = []
    for problem in result["problems"]:
        common = next(t for t in problem["targets"] if t["target"] == "common")
        lines.append(
            f"- Minibatch ({problem['problem']}, {problem['samples']:,} samples, "
            f"{problem['n_params']} parameters, B = {result['batch_size']}): to validation MSE "
            f"{common['val_mse']:.3g}, minibatch LM ({common['lm_setting']}) "
            f"{seconds(common['lm_time_s'])}, minibatch Adam ({common['adam_setting']}) "
            f"{seconds(common['adam_time_s'])}; LM / Adam = {ratio(common['ratio'])}."
        )
    return lines


def render(result: dict) -> str:
    """Per problem: every setting's epochs and best validation MSE, then the times to targets."""
    parts = [
        "## Minibatch training: stochastic LM against minibatch Adam",
        "",
        run_line(result),
        "",
        __doc__.split("\n\n", 1)[1].strip(),
    ]
    for problem in result["problems"]:
        rows = [
            [
                run["method"],
                run["setting"],
                f"{run['epochs']:g}",
                str(run["iterations"]),
                str(run["rejected"]),
                seconds(run["per_epoch_s"]),
                f"{run['best_val_mse']:.4g}",
                f"{run['final_val_mse']:.4g}",
            ]
            for run in problem["runs"]
        ]
        target_rows = [
            [
                target["target"],
                f"{target['val_mse']:.4g}",
                f"{_bracket(target['lm_after_s'], target['lm_time_s'])} ({target['lm_setting']})",
                f"{_bracket(target['adam_after_s'], target['adam_time_s'])} "
                f"({target['adam_setting']})",
                ratio(target["ratio"]),
            ]
            for target in problem["targets"]
        ]
        layers = "→".join(str(k) for k in problem["layers"])
        parts += [
            "",
            f"### {problem['problem']}: {layers} ({problem['n_params']} parameters), "
            f"{problem['samples']:,} samples",
            "",
            f"Initial validation MSE {problem['initial_val_mse']:.4g}; noise variance "
            f"{problem['noise_floor_mse']:.4g}; budget {result['budget_s']:g} s per setting; "
            f"B = {result['batch_size']}; {result['dtype']}.",
            "",
            table(
                [
                    "method",
                    "setting",
                    "epochs",
                    "iterations",
                    "rejected",
                    "time / epoch",
                    "best val MSE",
                    "final val MSE",
                ],
                rows,
                "llrrrrrr",
            ),
            "",
            table(
                ["target", "val MSE", "minibatch LM", "minibatch Adam", "LM / Adam"],
                target_rows,
                "lrrrr",
            ),
        ]
    return "\n".join(parts)


def _bracket(after: float | None, at: float | None) -> str:
    """``≥ a, ≤ b``: the target was first seen at ``b``, and not yet at ``a``."""
    if at is None or not math.isfinite(at):
        return "not reached"
    if after is None or not math.isfinite(after):
        return seconds(at)
    return f"{seconds(after)} – {seconds(at)}"
