"""NIST StRD nonlinear regression: the 19 data sets from both starts, every solver side by side.

Each fit is scored by the log relative error (LRE) of its parameters against NIST's certified
values, ``-log10(|b - b_cert| / |b_cert|)`` capped at 11 (``problems.lre``); a fit's score is
its *minimum* LRE over the parameters, and it passes at a score of at least 6.

Every solver gets the residual ``model(b, x) - y`` of ``problems.nist`` with the data as
arguments, the same start and float64. Tolerances are as tight as each solver accepts while still
terminating on its own convergence test (see :data:`SETTINGS`), so that the solvers are compared on
the accuracy they can reach rather than on where their defaults stop.
"""

from __future__ import annotations

import statistics
from typing import Any

import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks.markdown import number, ratio, run_line, seconds, settings_table, table
from benchmarks.peers import Nlls, Optimistix, Scipy, time_fits

#: Score at which a fit passes (the minimum LRE over its parameters).
PASS_LRE = 6.0

#: Tolerance for nlls and scipy: ``ftol = xtol = gtol``. scipy's "lm" refuses values below machine
#: epsilon; 1e-15 is just above it.
TIGHT = 1e-15

#: optimistix's ``rtol = atol``. Its Cauchy test is checked on accepted steps only and compares the
#: change of every residual component with ``atol + rtol·|r_i|``, so once converged it can go on
#: rejecting steps until ``max_steps``. Measured on these 38 fits when this was set: from 1e-10 to
#: 1e-12, LevenbergMarquardt reaches the same LREs with 221 more steps; Dogleg gains 0.04 in mean
#: LRE for 2143 more steps and one more fit run out to ``max_steps``. 1e-10 it is.
OPTIMISTIX_TOL = 1e-10

#: Iteration budget for every solver (nlls and optimistix steps, scipy residual evaluations).
BUDGET = 2000

#: What each solver is given, as printed in the report.
SETTINGS = {
    "nlls lm": f"method='lm', ftol=xtol=gtol={TIGHT:g}, max_steps={BUDGET}",
    "nlls lm in jax.jit": "as nlls lm, the call wrapped in jax.jit like the JAX peers",
    "nlls lm trust_region": (
        f"method=LevenbergMarquardt(damping='trust_region'), ftol=xtol=gtol={TIGHT:g}, "
        f"max_steps={BUDGET}"
    ),
    "nlls auto": f"method='auto', ftol=xtol=gtol={TIGHT:g}, max_steps={BUDGET}",
    "scipy lm": f"method='lm', jac=jacfwd, ftol=xtol=gtol={TIGHT:g}, max_nfev={BUDGET}",
    "scipy trf": f"method='trf', jac=jacfwd, ftol=xtol=gtol={TIGHT:g}, max_nfev={BUDGET}",
    "optimistix LevenbergMarquardt": (
        f"rtol=atol={OPTIMISTIX_TOL:g}, max_steps={BUDGET}, throw=False"
    ),
    "optimistix Dogleg": f"rtol=atol={OPTIMISTIX_TOL:g}, max_steps={BUDGET}, throw=False",
}


def solvers() -> list[Any]:
    """nlls first (the ratios are nlls / peer), then the peers."""
    tight = {"ftol": TIGHT, "xtol": TIGHT, "gtol": TIGHT}
    return [
        Nlls("lm", max_steps=BUDGET, **tight),
        Nlls("lm", label="nlls lm in jax.jit", jit=True, max_steps=BUDGET, **tight),
        Nlls(
            nlls.LevenbergMarquardt(damping="trust_region"),
            label="nlls lm trust_region",
            max_steps=BUDGET,
            **tight,
        ),
        Nlls("auto", max_steps=BUDGET, **tight),
        Scipy("lm", max_nfev=BUDGET, **tight),
        Scipy("trf", max_nfev=BUDGET, **tight),
        Optimistix("lm", rtol=OPTIMISTIX_TOL, atol=OPTIMISTIX_TOL, max_steps=BUDGET),
        Optimistix("dogleg", rtol=OPTIMISTIX_TOL, atol=OPTIMISTIX_TOL, max_steps=BUDGET),
    ]


def run(repeats: int = 5, names: list[str] | None = None, verbose: bool = True) -> dict:
    """Fit every data set from both starts with every solver; return per-fit records and summaries.

    Each fit is run once per solver untimed (compilation), then ``repeats`` times with the solvers
    interleaved (:func:`benchmarks.peers.time_fits`); its time is the median of those.
    """
    from problems import NIST_NAMES, load_nist, lre

    names = list(NIST_NAMES) if names is None else names
    solver_list = solvers()
    records = []
    for name in names:
        problem = load_nist(name)
        residual = problem.residual  # one function object, so each solver compiles once per set
        args = (jnp.asarray(problem.x), jnp.asarray(problem.y))
        prepared = [solver.prepare(residual, args) for solver in solver_list]
        for start_index, start in enumerate((problem.start1, problem.start2), start=1):
            timed = time_fits(prepared, start, repeats)
            for solver, (outcome, timing) in zip(solver_list, timed, strict=True):
                scores = lre(problem.labelled(outcome.x), problem.certified)
                record = {
                    "problem": name,
                    "difficulty": problem.difficulty,
                    "start": start_index,
                    "solver": solver.label,
                    "min_lre": float(np.min(scores)),
                    "lre": scores.tolist(),
                    "rss": 2.0 * outcome.cost,
                    "certified_rss": problem.certified_rss,
                    "evals": outcome.nfev if solver.evals == "nfev" else outcome.steps,
                    "nfev": outcome.nfev,
                    "njev": outcome.njev,
                    "steps": outcome.steps,
                    "success": outcome.success,
                    "stop": outcome.stop,
                    "message": outcome.message,
                    "first_s": timing.first_s,
                    "median_s": timing.median_s,
                    "times_s": list(timing.times_s),
                    "extra": outcome.extra,
                }
                records.append(record)
                if verbose:
                    print(
                        f"  {name:9s} start {start_index}  {solver.label:30s} "
                        f"LRE {record['min_lre']:5.2f}  evals {record['evals']!s:>5}  "
                        f"{1e3 * timing.median_s:9.3f} ms  (first call {timing.first_s:6.2f} s)"
                        f"  {outcome.stop}",
                        flush=True,
                    )
    return {
        "repeats": repeats,
        "pass_lre": PASS_LRE,
        "settings": SETTINGS,
        "solvers": [s.label for s in solver_list],
        "evals_kind": {s.label: s.evals for s in solver_list},
        "records": records,
        "summary": summarize(records, [s.label for s in solver_list]),
    }


def summarize(records: list[dict], labels: list[str]) -> list[dict]:
    """One row per solver: passes, mean minimum LRE, evaluations, median time, nlls/peer ratio."""
    rows = []
    reference = None
    for label in labels:
        mine = [r for r in records if r["solver"] == label]
        times = [r["median_s"] for r in mine if np.isfinite(r["median_s"])]
        evals = [r["evals"] for r in mine if r["evals"] is not None]
        median_time = statistics.median(times) if times else float("nan")
        if reference is None:
            reference = median_time  # the first solver is nlls
        rows.append(
            {
                "solver": label,
                "fits": len(mine),
                "passed": sum(r["min_lre"] >= PASS_LRE for r in mine),
                "mean_min_lre": float(np.mean([r["min_lre"] for r in mine])) if mine else 0.0,
                "total_evals": int(sum(evals)) if evals else None,
                "mean_evals": float(np.mean(evals)) if evals else None,
                "median_time_s": median_time,
                "median_first_s": (
                    statistics.median(r["first_s"] for r in mine if r["start"] == 1)
                    if mine
                    else float("nan")
                ),
                "time_ratio": reference / median_time if median_time else float("nan"),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullets: nlls LM's passes, accuracy and time, its variants, then each peer."""
    rows = result["summary"]
    lm = rows[0]
    lines = [
        f"- NIST StRD ({lm['fits']} fits): nlls LM passes {lm['passed']}/{lm['fits']} at "
        f"LRE ≥ {result['pass_lre']:g} (mean min LRE {lm['mean_min_lre']:.2f}), median "
        f"{seconds(lm['median_time_s'])} per fit."
    ]
    variants = [row for row in rows[1:] if row["solver"].startswith("nlls")]
    jitted = next((row for row in variants if "jit" in row["solver"]), None)
    for row in variants:
        lines.append(
            f"  - {row['solver']}: {row['passed']}/{row['fits']} passed, mean min LRE "
            f"{row['mean_min_lre']:.2f}, median {seconds(row['median_time_s'])} per fit"
        )
    for row in rows[1:]:
        if row in variants:
            continue
        also = ""
        if jitted is not None and row["median_time_s"]:
            also = (
                f" ({jitted['solver']} / peer = "
                f"{ratio(jitted['median_time_s'] / row['median_time_s'])})"
            )
        lines.append(
            f"  - vs {row['solver']}: {row['passed']}/{row['fits']} passed, mean min LRE "
            f"{row['mean_min_lre']:.2f}, median {seconds(row['median_time_s'])} per fit; "
            f"time nlls / peer = {ratio(row['time_ratio'])}{also}"
        )
    return lines


def render(result: dict) -> str:
    """Summary per solver, then the minimum LRE (and evaluations) of every fit."""
    labels = result["solvers"]
    pass_lre = result["pass_lre"]
    summary_rows = []
    for row in result["summary"]:
        kind = result["evals_kind"][row["solver"]]
        mark = "" if kind == "nfev" else " (steps)"
        summary_rows.append(
            [
                row["solver"],
                f"{row['passed']}/{row['fits']}",
                f"{row['mean_min_lre']:.2f}",
                number(row["total_evals"]) + mark,
                number(row["mean_evals"], 4),
                seconds(row["median_time_s"]),
                ratio(row["time_ratio"]),
                seconds(row["median_first_s"]),
            ]
        )
    summary = table(
        [
            "Solver",
            f"passed (LRE ≥ {pass_lre:g})",
            "mean min LRE",
            "total evals",
            "mean evals",
            "median time / fit",
            "nlls / peer time",
            "median first call",
        ],
        summary_rows,
        "lrrrrrrr",
    )
    by_fit: dict[tuple[str, int], dict[str, dict]] = {}
    for record in result["records"]:
        by_fit.setdefault((record["problem"], record["start"]), {})[record["solver"]] = record
    fit_rows = []
    for (problem, start), records in by_fit.items():
        cells = [problem, str(start)]
        for label in labels:
            record = records.get(label)
            if record is None:
                cells.append("—")
                continue
            score = f"{record['min_lre']:.1f}"
            if record["min_lre"] < pass_lre:
                score = f"**{score}**"
            cells.append(f"{score} ({number(record['evals'])})")
        fit_rows.append(cells)
    fits = table(["Data set", "start", *labels], fit_rows, "lr" + "r" * len(labels))
    return "\n".join(
        [
            "## NIST StRD nonlinear regression",
            "",
            run_line(result),
            "",
            "19 data sets × 2 starts. Score of a fit: the minimum over its parameters of the log",
            "relative error LRE = −log10(|b − b_cert| / |b_cert|), capped at 11 (the number of",
            f"correct digits); a fit passes at LRE ≥ {pass_lre:g}. *evals* are residual evaluations",
            "(nfev) for nlls and scipy and steps for optimistix, which reports no evaluation count",
            "(one residual evaluation per step). *first call* is the warm-up call of the first",
            "start of each data set, compilation included. Tolerances, chosen as tight as each",
            "solver accepts while still stopping on its own test (see `benchmarks/nist.py`):",
            "",
            settings_table(result["settings"]),
            "",
            summary,
            "",
            "### Per fit: minimum LRE (evals); below the pass mark in bold",
            "",
            fits,
        ]
    )
