"""MINPACK-1's ``lmder`` test driver: 53 runs over 18 Moré–Garbow–Hillstrom problems.

MINPACK's reference output (``lmddrv.ref``) gives, run by run, the final ‖F‖₂ and the numbers of
function and Jacobian evaluations of ``lmder1``, which the driver calls with
``ftol = xtol = sqrt(machine epsilon)``, ``gtol = 0``, ``maxfev = 100·(n + 1)`` and Moré's internal
variable scaling. nlls LM and scipy's "lm" (MINPACK's ``lmder`` itself, through scipy) are run with the
same settings, so their evaluation counts are directly comparable with the reference:

- nlls: ``ftol = xtol = sqrt(eps)``, ``gtol = 0``, ``max_steps = 100·(n + 1)`` (nlls counts accepted
  steps, not evaluations, so its budget is slightly larger than MINPACK's);
- scipy: ``ftol = xtol = sqrt(eps)``, ``gtol = eps`` (scipy refuses 0), ``max_nfev = 100·(n + 1)``,
  default ``x_scale="jac"`` (MINPACK's ``mode = 1``), Jacobian ``jax.jacfwd``.

A run *passes* when its final ‖F‖ is no worse than MINPACK's, or than one of the other legitimate
endpoints listed by ``problems.minpack`` (``MinpackRun.alternative_fnorms``):
``‖F‖ ≤ a·(1 + 1e-6) + 1e-10`` for some acceptable ``a``. The absolute 1e-10 treats the
zero-residual endpoints (MINPACK prints 0 to 1e-12 there, which is round-off) as zero.
"""

from __future__ import annotations

import math

import numpy as np

import nlls
from benchmarks.markdown import number, run_line, settings_table, table
from benchmarks.peers import EPS, Nlls, Scipy, time_fit

#: MINPACK's test-driver tolerance, ``sqrt(dpmpar(1))``.
TOL = math.sqrt(EPS)

#: Relative and absolute slack of the pass test (see the module docstring).
RTOL_PASS = 1e-6
ATOL_PASS = 1e-10

SETTINGS = {
    "nlls lm": f"method='lm', ftol=xtol={TOL:.3g}, gtol=0, max_steps=100(n+1)",
    "nlls lm trust_region": (
        f"method=LevenbergMarquardt(damping='trust_region'), ftol=xtol={TOL:.3g}, gtol=0, "
        "max_steps=100(n+1)"
    ),
    "nlls auto": f"method='auto', ftol=xtol={TOL:.3g}, gtol=0, max_steps=100(n+1)",
    "scipy lm": f"method='lm', jac=jacfwd, ftol=xtol={TOL:.3g}, gtol=eps, max_nfev=100(n+1)",
}


def passes(fnorm: float, acceptable: tuple[float, ...]) -> bool:
    """Whether ``fnorm`` is no worse than one of the ``acceptable`` final norms (with slack)."""
    if not np.isfinite(fnorm):
        return False
    return any(fnorm <= a * (1.0 + RTOL_PASS) + ATOL_PASS for a in acceptable)


def solvers(n: int) -> list:
    """nlls LM and scipy lm with MINPACK's test-driver settings for a problem with n unknowns."""
    budget = 100 * (n + 1)
    return [
        Nlls("lm", ftol=TOL, xtol=TOL, gtol=0.0, max_steps=budget),
        Nlls(
            nlls.LevenbergMarquardt(damping="trust_region"),
            label="nlls lm trust_region",
            ftol=TOL,
            xtol=TOL,
            gtol=0.0,
            max_steps=budget,
        ),
        Nlls("auto", ftol=TOL, xtol=TOL, gtol=0.0, max_steps=budget),
        Scipy("lm", ftol=TOL, xtol=TOL, gtol=EPS, max_nfev=budget),
    ]


def run(verbose: bool = True) -> dict:
    """Run every MINPACK test-driver run with nlls and scipy; return per-run records and totals."""
    from problems import minpack_runs

    records = []
    labels = [s.label for s in solvers(1)]
    for case in minpack_runs():
        record = {
            "id": case.id,
            "problem": case.problem,
            "name": case.name,
            "n": case.n,
            "m": case.m,
            "factor": case.factor,
            "ref_fnorm": case.ref_fnorm,
            "ref_nfev": case.ref_nfev,
            "ref_njev": case.ref_njev,
            "ref_info": case.ref_info,
            "acceptable_fnorms": list(case.acceptable_fnorms),
            "results": {},
        }
        for solver in solvers(case.n):
            prepared = solver.prepare(case.residual, ())
            outcome, timing = time_fit(prepared, case.x0, repeats=0)
            fnorm = math.sqrt(2.0 * outcome.cost) if np.isfinite(outcome.cost) else float("nan")
            record["results"][solver.label] = {
                "fnorm": fnorm,
                "nfev": outcome.nfev,
                "njev": outcome.njev,
                "steps": outcome.steps,
                "passed": passes(fnorm, case.acceptable_fnorms),
                "success": outcome.success,
                "stop": outcome.stop,
                "message": outcome.message,
                "first_s": timing.first_s,
                "extra": outcome.extra,
            }
        records.append(record)
        if verbose:
            cells = "  ".join(
                f"{label}: {r['fnorm']:.7g} ({r['nfev']} fev){'' if r['passed'] else ' FAIL'}"
                for label, r in record["results"].items()
            )
            print(
                f"  {case.id:34s} ref {case.ref_fnorm:.7g} ({case.ref_nfev} fev)  {cells}",
                flush=True,
            )
    return {
        "settings": SETTINGS,
        "solvers": labels,
        "records": records,
        "summary": summarize(records, labels),
    }


def summarize(records: list[dict], labels: list[str]) -> dict:
    """Per solver: runs passed, total nfev/njev against MINPACK's, and run-by-run nfev comparison.

    Totals are given over all runs and over the runs that every solver (and MINPACK) passes, where
    the counts compare like with like.
    """
    common = [r for r in records if all(r["results"][label]["passed"] for label in labels)]
    rows = [
        {
            "solver": "MINPACK lmder (reference)",
            "runs": len(records),
            "passed": len(records),
            "total_nfev": sum(r["ref_nfev"] for r in records),
            "total_njev": sum(r["ref_njev"] for r in records),
            "common_nfev": sum(r["ref_nfev"] for r in common),
            "common_njev": sum(r["ref_njev"] for r in common),
            "fewer": None,
            "equal": None,
            "more": None,
        }
    ]
    for label in labels:
        results = [(r, r["results"][label]) for r in records]
        nfev = [(r["ref_nfev"], res["nfev"]) for r, res in results if res["nfev"] is not None]
        rows.append(
            {
                "solver": label,
                "runs": len(records),
                "passed": sum(res["passed"] for _, res in results),
                "total_nfev": sum(n for _, n in nfev),
                "total_njev": sum(res["njev"] or 0 for _, res in results),
                "common_nfev": sum(r["results"][label]["nfev"] or 0 for r in common),
                "common_njev": sum(r["results"][label]["njev"] or 0 for r in common),
                "fewer": sum(n < ref for ref, n in nfev),
                "equal": sum(n == ref for ref, n in nfev),
                "more": sum(n > ref for ref, n in nfev),
            }
        )
    return {"common_runs": len(common), "rows": rows}


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullets: each solver's passes and total nfev against MINPACK's."""
    rows = result["summary"]["rows"]
    reference = rows[0]
    return [
        f"- MINPACK ({row['runs']} runs): {row['solver']} passes {row['passed']}/"
        f"{row['runs']}; total nfev {row['total_nfev']} against MINPACK's "
        f"{reference['total_nfev']} (fewer / equal / more than MINPACK in "
        f"{row['fewer']} / {row['equal']} / {row['more']} runs)"
        for row in rows[1:]
    ]


def render(result: dict) -> str:
    """Totals per solver, then MINPACK's and each solver's final ‖F‖ and nfev, run by run."""
    labels = result["solvers"]
    summary = result["summary"]
    rows = []
    for row in summary["rows"]:
        counts = "—" if row["fewer"] is None else f"{row['fewer']} / {row['equal']} / {row['more']}"
        rows.append(
            [
                row["solver"],
                f"{row['passed']}/{row['runs']}",
                str(row["total_nfev"]),
                str(row["total_njev"]),
                f"{row['common_nfev']} / {row['common_njev']}",
                counts,
            ]
        )
    totals = table(
        [
            "Solver",
            "passed",
            "total nfev",
            "total njev",
            f"nfev / njev on the {summary['common_runs']} runs all pass",
            "runs with fewer / equal / more nfev than MINPACK",
        ],
        rows,
        "lrrrrr",
    )
    run_rows = []
    for record in result["records"]:
        cells = [
            record["id"],
            number(record["ref_fnorm"]),
            str(record["ref_nfev"]),
            str(record["ref_info"]),
        ]
        for label in labels:
            res = record["results"][label]
            fnorm = number(res["fnorm"])
            if not res["passed"]:
                fnorm = f"**{fnorm}**"
            elif not _at_known_endpoint(res["fnorm"], record["acceptable_fnorms"]):
                fnorm += " ◦"
            cells += [fnorm, number(res["nfev"]), res.get("stop", "")]
        run_rows.append(cells)
    headers = ["Run", "MINPACK ‖F‖", "nfev", "info"]
    for label in labels:
        headers += [f"{label} ‖F‖", "nfev", "stop"]
    runs = table(headers, run_rows, "l" + "r" * (len(headers) - 1))
    return "\n".join(
        [
            "## MINPACK-1 test driver (Moré–Garbow–Hillstrom problems)",
            "",
            run_line(result),
            "",
            "The 53 runs of MINPACK's `lmder` test driver, each from x0, 10·x0 or 100·x0 (the `x1`,",
            "`x10`, `x100` suffix), against MINPACK's reference output `lmddrv.ref`. Both solvers get",
            "the driver's settings (`ftol = xtol = sqrt(eps)`, no gradient test, budget 100·(n+1)),",
            "so nfev is comparable run by run. A run passes when its final ‖F‖ is no worse than",
            "MINPACK's or than another documented minimum, ‖F‖ ≤ a·(1 + 1e-6) + 1e-10 (the 1e-10",
            "treats zero-residual endpoints as zero). Failures are in bold; ◦ marks a pass whose ‖F‖",
            "is lower than MINPACK's but matches no known minimum (a stop short of convergence that",
            "happens to lie below MINPACK's endpoint). *info* is MINPACK's exit code (1–3",
            "converged, 4 gradient orthogonal to the residual, 5 evaluation budget spent).",
            "",
            settings_table(result["settings"]),
            "",
            totals,
            "",
            "### Run by run",
            "",
            runs,
        ]
    )


def _at_known_endpoint(fnorm: float, acceptable: list[float]) -> bool:
    """Whether ``fnorm`` matches one of the known endpoints (same slack as the pass test)."""
    return any(abs(fnorm - a) <= RTOL_PASS * a + ATOL_PASS for a in acceptable)
