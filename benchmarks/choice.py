"""What ``method="auto"`` chooses, against the two damping rules it chooses between.

``nlls.choice`` picks Levenberg–Marquardt with Moré's trust-region damping when the damped system is
small (``min(m, n) ≤ 64``) and Nielsen's damping otherwise. NIST and MINPACK (n ≤ 40) measure the
small systems in their own suites (the row "nlls lm trust_region"); this suite measures the two
networks on either side of the threshold, each to a target and with compilation excluded:

- *wide MLP*: the 1→20→20→1 tanh MLP of the ``training`` suite (481 parameters, 200 points, a 200×200
  system), target MSE 1e-8, by that suite's protocol (fresh fits with doubling then bisected step
  budgets; ``nlls.fit``, tolerances off);
- *demo ODE*: the Lotka–Volterra universal differential equation of ``python -m nlls demo`` (354
  parameters, 42 residuals: a 42×42 system), trained for 200 steps by ``nlls.ode.fit``; the time is
  that of the History at the first step whose training MSE reaches 2.32e-4 (the final MSE of the
  demo's Adam → L-BFGS recipe), the median of two runs.

``auto`` runs the same iterates as the rule it picks (``tests/test_choice.py``): the difference
between its row and that rule's is the machine's run-to-run variation.
"""

from __future__ import annotations

import statistics

import jax
import numpy as np

import nlls
from benchmarks import training
from benchmarks.markdown import opening, ratio, seconds, table

ODE_TARGET = 2.32e-4
ODE_STEPS = 200
ROUNDS = 2
CANDIDATES = {
    "lm (Nielsen damping)": "lm",
    "lm (trust-region damping)": nlls.LevenbergMarquardt(damping="trust_region"),
    "auto": "auto",
}


def _wide_mlp(verbose: bool) -> list[dict]:
    problem = training.PROBLEMS[0]
    mse = training._mse_function(problem)
    start = problem.init()
    rows = []
    for label, method in CANDIDATES.items():
        run = training._nlls_fit(problem, method, ftol=0.0, xtol=0.0, gtol=0.0)
        runs, budget = training.search(
            run, mse, problem.target_mse, problem.time_cap_s, problem.first_budget, start
        )
        time_s = None if budget is None else runs[budget][0]
        choice = nlls.fit(
            (problem.one, start), *problem.data(), method=method, max_steps=1, history=False
        ).solution.stats.choice
        rows.append({"method": label, "time_s": time_s, "steps": budget, "choice": choice})
        if verbose:
            print(f"wide MLP {label}: {seconds(time_s)} ({budget} steps)", flush=True)
    return rows


def _demo_ode(verbose: bool) -> list[dict]:
    from nlls import _demo as demo
    from nlls import ode

    data = demo.make_data()
    rows = []
    for label, method in CANDIDATES.items():
        times, steps, choice = [], None, ""
        for _ in range(ROUNDS):
            history = nlls.History()
            result = ode.fit(
                demo.make_field(),
                data.ts,
                data.ys,
                physics=demo.known_terms,
                rtol=demo.ODE_TOLERANCE,
                atol=demo.ODE_TOLERANCE,
                method=method,
                max_steps=ODE_STEPS,
                callbacks=[history],
            )
            columns = history.as_dict()
            mse = 2.0 * columns["cost"] / data.ys.size
            reached = np.nonzero(mse <= ODE_TARGET)[0]
            if reached.size:
                times.append(float(columns["time"][reached[0]]))
                steps = int(columns["step"][reached[0]])
            choice = result.solution.stats.choice
        time_s = statistics.median(times) if len(times) == ROUNDS else None
        rows.append({"method": label, "time_s": time_s, "steps": steps, "choice": choice})
        if verbose:
            print(f"demo ODE {label}: {seconds(time_s)} ({steps} steps)", flush=True)
    return rows


def run(verbose: bool = True) -> dict:
    problems = {"wide MLP": _wide_mlp(verbose), "demo ODE": _demo_ode(verbose)}
    for rows in problems.values():
        best = min((r["time_s"] for r in rows if r["time_s"] is not None), default=None)
        for row in rows:
            row["ratio"] = None if best is None or row["time_s"] is None else row["time_s"] / best
    return {"problems": problems, "x64": bool(jax.config.jax_enable_x64)}


def headline(result: dict) -> list[str]:
    """One bullet: ``auto``'s time over the best rule's, per network."""
    parts = []
    for name, rows in result["problems"].items():
        auto = next(r for r in rows if r["method"] == "auto")
        parts.append(f"{name} {seconds(auto['time_s'])} ({ratio(auto['ratio'])} the best rule's)")
    return [f'- `method="auto"` to its target: {", ".join(parts)}; goal ≤ 1.3×.']


def render(result: dict) -> str:
    """One table per network: time and steps to the target, against the faster rule."""
    sections = opening(
        '`method="auto"`: the damping rule by the size of the system', result, __doc__
    )
    for name, rows in result["problems"].items():
        sections += [
            "",
            f"### {name}",
            "",
            table(
                ["method", "time to target", "steps to target", "time / fastest", "auto chose"],
                [
                    [
                        r["method"],
                        seconds(r["time_s"]),
                        "—" if r["steps"] is None else str(r["steps"]),
                        ratio(r["ratio"]),
                        r["choice"].removeprefix("auto: ") if r["method"] == "auto" else "",
                    ]
                    for r in rows
                ],
                "lrrrl",
            ),
        ]
    return "\n".join(sections)
