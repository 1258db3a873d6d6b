"""Curve fitting: ``nlls.curve_fit`` against ``scipy.optimize.curve_fit`` on the NIST StRD sets
(certified parameters and standard deviations), and a batch of many small fits at once.

*NIST*: the 19 shared sets (``problems.NIST_NAMES``) from both certified starts, float64; each
library with its defaults as a user calls it (nlls: automatic derivatives, tolerances to working
precision; scipy: ``method="lm"``, finite differences, ``ftol = xtol = 1.49e-8``). Scored by the LRE
(log relative error, digits) of the parameters and of the standard deviations ``√diag(pcov)``
against the certified values, each fit scored by its worst component (the least LRE); a fit that
raises scores 0.

*Batched*: ``B`` data sets of ``y = a·exp(−k·x) + c`` on 40 points of ``[0, 4]`` (``a ∈ [1, 5]``,
``k ∈ [0.5, 2]``, ``c ∈ [−1, 1]`` uniform, noise σ = 0.01, seed 0), fitted from ``p0 = (1, 1, 0)``:
nlls as ``jax.jit(jax.vmap(curve_fit))`` (one program; the time of a warm call, best of 3, and of the
first call with its compilation), scipy as a Python loop of ``curve_fit`` over the same sets, with
the model and its analytic Jacobian in NumPy (as a careful scipy user writes them). Both answers are
compared (largest relative difference of the parameters). Under ``vmap`` the loop runs until the
last fit has converged, so the steps of the slowest fit are the work of every lane; the table gives
the largest and the mean number of steps.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import nlls
from benchmarks.markdown import number, ratio, run_line, seconds, table
from problems import NIST_NAMES, load_nist, lre

BATCH = 10_000
POINTS = 40


def decay(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def run(verbose: bool = True, batch: int = BATCH) -> dict:
    return {"nist": _nist(verbose), "batched": _batched(batch, verbose)}


def _nist_model(problem):
    def f(x, *b):
        return problem.model(jnp.stack(b), x)

    return f


def _numpy_model(jitted):
    """The compiled model called with and returning NumPy values, for scipy."""

    def f(x, *b):
        return np.asarray(jitted(jnp.asarray(x), *(jnp.asarray(v) for v in b)))

    return f


def _scores(problem, popt, pcov) -> tuple[float, float]:
    popt = np.asarray(popt, float)
    labelled = problem.labelled(popt)
    order = np.array([int(np.flatnonzero(popt == value)[0]) for value in labelled])
    errors = np.sqrt(np.diag(np.asarray(pcov, float)))[order]
    # the least LRE over the components: the digits of the worst parameter
    return (
        float(np.min(lre(popt[order], problem.certified))),
        float(np.min(lre(errors, problem.certified_sd))),
    )


def _nist(verbose: bool) -> list[dict]:
    rows = []
    for name in NIST_NAMES:
        problem = load_nist(name)
        x = np.asarray(problem.x)
        y = np.log(problem.y) if problem.log_response else np.asarray(problem.y)
        f = _nist_model(problem)
        numpy_f = _numpy_model(jax.jit(f))

        for index, start in enumerate(problem.starts):
            row = {"name": name, "start": index + 1}
            try:
                popt, pcov = nlls.curve_fit(
                    f, jnp.asarray(x), jnp.asarray(y), p0=jnp.asarray(start)
                )
                row["nlls"] = _scores(problem, popt, pcov)
            except Exception as error:  # a failed fit scores 0
                row["nlls"], row["nlls_error"] = (0.0, 0.0), str(error)[:80]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    popt, pcov = scipy.optimize.curve_fit(numpy_f, x, y, p0=np.asarray(start))
                row["scipy"] = _scores(problem, popt, pcov)
            except Exception as error:
                row["scipy"], row["scipy_error"] = (0.0, 0.0), str(error)[:80]
            if verbose:
                print(f"  {name} start {index + 1}: nlls {row['nlls']}, scipy {row['scipy']}")
            rows.append(row)
    return rows


def _data(batch: int):
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, POINTS)
    truth = np.stack(
        [rng.uniform(1, 5, batch), rng.uniform(0.5, 2, batch), rng.uniform(-1, 1, batch)], 1
    )
    ys = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:]
    return x, ys + 0.01 * rng.standard_normal((batch, POINTS))


def _batched(batch: int, verbose: bool) -> dict:
    x, ys = _data(batch)
    xj, ysj = jnp.asarray(x), jnp.asarray(ys)
    p0 = [1.0, 1.0, 0.0]

    @jax.jit
    @jax.vmap
    def fit_all(y):
        popt, _, solution = nlls.curve_fit(decay, xj, y, p0=p0, full_output=True)
        return popt, solution.stats.steps, solution.success

    began = time.perf_counter()
    jax.block_until_ready(fit_all(ysj))
    first = time.perf_counter() - began
    warm = []
    for _ in range(3):
        began = time.perf_counter()
        popt, steps, success = jax.block_until_ready(fit_all(ysj))
        warm.append(time.perf_counter() - began)
    nlls_time = min(warm)
    if verbose:
        print(f"  nlls vmap: {nlls_time:.3f} s warm, {first:.1f} s first call")

    def f(x, a, k, c):
        return a * np.exp(-k * x) + c

    def jac(x, a, k, c):
        e = np.exp(-k * x)
        return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)

    reference = np.empty((batch, 3))
    began = time.perf_counter()
    for i in range(batch):
        reference[i], _ = scipy.optimize.curve_fit(f, x, ys[i], p0=p0, jac=jac)
    scipy_time = time.perf_counter() - began
    if verbose:
        print(f"  scipy loop: {scipy_time:.2f} s")
    popt = np.asarray(popt)
    difference = np.max(np.abs(popt - reference) / np.maximum(np.abs(reference), 1e-12))
    return {
        "batch": batch,
        "nlls_s": nlls_time,
        "nlls_first_s": first,
        "scipy_s": scipy_time,
        "speedup": scipy_time / nlls_time,
        "max_relative_difference": float(difference),
        "steps_max": int(np.max(steps)),
        "steps_mean": float(np.mean(steps)),
        "success": float(np.mean(success)),
    }


def _means(rows: list[dict], who: str) -> tuple[float, float, int, int]:
    params = [row[who][0] for row in rows]
    deviations = [row[who][1] for row in rows]
    return (
        float(np.mean(params)),
        float(np.mean(deviations)),
        sum(p >= 6 for p in params),
        sum(d >= 5 for d in deviations),
    )


def headline(result: dict) -> list[str]:
    rows, batched = result["nist"], result["batched"]
    ours, theirs = _means(rows, "nlls"), _means(rows, "scipy")
    return [
        f"- **curve_fit on NIST** ({len(rows)} fits): mean LRE of the parameters "
        f"{ours[0]:.2f} (scipy {theirs[0]:.2f}), of the standard deviations {ours[1]:.2f} "
        f"(scipy {theirs[1]:.2f}); parameters at LRE ≥ 6 in {ours[2]}/{len(rows)} "
        f"(scipy {theirs[2]}), standard deviations at LRE ≥ 5 in {ours[3]}/{len(rows)} "
        f"(scipy {theirs[3]}).",
        f"- **{batched['batch']:,} small fits at once**: nlls `vmap` {seconds(batched['nlls_s'])} "
        f"against scipy's loop {seconds(batched['scipy_s'])}: "
        f"{ratio(batched['speedup'])} faster (goal 100×), same answers to "
        f"{batched['max_relative_difference']:.1e}.",
    ]


def render(result: dict) -> str:
    rows, batched = result["nist"], result["batched"]
    lines = [
        "## Curve fitting (`benchmarks/curvefit.py`)",
        "",
        run_line(result),
        "",
        __doc__.split("\n\n", 1)[1],
        "",
    ]
    body = [
        [
            row["name"],
            str(row["start"]),
            number(row["nlls"][0], 3),
            number(row["scipy"][0], 3),
            number(row["nlls"][1], 3),
            number(row["scipy"][1], 3),
        ]
        for row in rows
    ]
    ours, theirs = _means(rows, "nlls"), _means(rows, "scipy")
    body.append(
        [
            "**mean**",
            "",
            f"**{ours[0]:.2f}**",
            f"**{theirs[0]:.2f}**",
            f"**{ours[1]:.2f}**",
            f"**{theirs[1]:.2f}**",
        ]
    )
    lines.append(
        table(
            ["set", "start", "params nlls", "params scipy", "std dev nlls", "std dev scipy"],
            body,
            "llrrrr",
        )
    )
    lines += [
        "",
        table(
            [
                "fits",
                "nlls vmap (warm)",
                "nlls first call",
                "scipy loop",
                "scipy / nlls",
                "steps max / mean",
                "max rel. difference",
                "success",
            ],
            [
                [
                    f"{batched['batch']:,}",
                    seconds(batched["nlls_s"]),
                    seconds(batched["nlls_first_s"]),
                    seconds(batched["scipy_s"]),
                    ratio(batched["speedup"]),
                    f"{batched['steps_max']} / {batched['steps_mean']:.1f}",
                    f"{batched['max_relative_difference']:.1e}",
                    f"{100 * batched['success']:.1f}%",
                ]
            ],
        ),
    ]
    return "\n".join(lines)
