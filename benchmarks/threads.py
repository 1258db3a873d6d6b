"""BLAS threads: nlls as users get it, against one OpenBLAS thread.

On CPU, JAX's decompositions (Cholesky, QR, eigh, triangular solves) run in scipy's OpenBLAS, whose
thread pool (one thread per core) competes with XLA's; nlls holds it at one thread while it runs its
own compiled programs (``nlls.threads``). Every workload below runs in fresh processes under three
settings:

- *default*: the environment as it comes, without ``OPENBLAS_NUM_THREADS`` (OpenBLAS then starts one
  thread per core): what users get;
- *limit off*: the same, with nlls's limit switched off in that process (``nlls.driver`` given a
  scope that does nothing): what users got before it, and what a solve traced into the caller's own
  ``jax.jit`` still gets;
- *1 thread*: ``OPENBLAS_NUM_THREADS=1`` in the environment.

Workloads (float64):

- *wide MLP*: the README's fit, ``nlls.fit`` of the 1→20→20→1 tanh MLP (481 parameters) to 200 points
  of sin(3x), ``max_steps=52`` (MSE ≈ 1e-9); median of ``MLP_CALLS`` warm calls;
- *wide MLP in the caller's jit*: ``nlls.least_squares`` with the per-sample Jacobian, tests off,
  52 steps, inside the caller's ``jax.jit`` (nlls cannot hold the limit there; *limit off* would be
  the same and is not run); median of ``JIT_CALLS`` warm calls;
- *NIST*: the 38 fits of the ``nist`` suite by nlls LM with its settings; median over the fits of
  each fit's median of ``NIST_CALLS`` warm calls (the total of those medians is kept too);
- *demo*: the LM stage of ``python -m nlls demo`` (200 steps on the Lotka–Volterra universal ODE,
  History and validation-MSE callbacks), its training time on the History clock (compilation
  excluded), one run per process (a second run in the same process compiles again);
- *3-parameter fit*: a warm ``least_squares`` call (``a·exp(−kx) + c`` on 20 points), where the
  per-call cost of entering and leaving the limit shows; measured in place too (``_tiny``).

A process runs one workload under one setting and prints one JSON line. The processes are run in
``rounds`` interleaved rounds (every workload and setting once per round), so that changes of machine
load hit all alike; a figure is the median over the rounds. The ratio *default / 1 thread* is what
the limit must keep near 1 (the aim: at most ``TARGET`` on the wide MLP, NIST and the demo).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.markdown import blas_line, ratio, run_line, seconds, table

ROOT = Path(__file__).resolve().parents[1]

TARGET = 1.25
MLP_STEPS = 52
MLP_CALLS = 5
JIT_CALLS = 3
NIST_CALLS = 5
TINY_CALLS = 500
TINY_PAIRS = 15

SETTINGS = ("default", "limit off", "1 thread")

#: name: (what it is, unit of its figure, settings it runs under, whether TARGET applies)
WORKLOADS = {
    "wide MLP": (
        f"nlls.fit, 481 parameters, 200 points, {MLP_STEPS} LM steps; median of {MLP_CALLS} calls",
        "s",
        SETTINGS,
        True,
    ),
    "wide MLP in the caller's jit": (
        f"least_squares (per-sample Jacobian, {MLP_STEPS} steps) inside jax.jit; "
        f"median of {JIT_CALLS} calls",
        "s",
        ("default", "1 thread"),
        False,
    ),
    "NIST": (
        f"38 fits, nlls LM, nist suite settings; median over fits of {NIST_CALLS} calls each",
        "s",
        SETTINGS,
        True,
    ),
    "demo": (
        "LM stage of the demo (200 steps, callbacks), training time",
        "s",
        SETTINGS,
        True,
    ),
    "3-parameter fit": (
        f"warm least_squares call; median of {TINY_PAIRS} blocks of {TINY_CALLS}",
        "s",
        SETTINGS,
        False,
    ),
}


# ----------------------------------------------------------------------------------------------
# One process: one workload under one setting
# ----------------------------------------------------------------------------------------------


def _median_call(call, calls: int) -> float:
    call()  # compiles
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _wide_mlp() -> dict:
    import jax

    import nlls
    from benchmarks.training import PROBLEMS

    problem = PROBLEMS[0]
    x, y = problem.data()
    start = problem.init()
    fits = []

    def call():
        result = nlls.fit((problem.one, start), x, y, max_steps=MLP_STEPS, history=False)
        fits.append(jax.block_until_ready(result))

    seconds = _median_call(call, MLP_CALLS)
    solution = fits[-1].solution
    return {
        "value": seconds,
        "steps": int(solution.stats.steps),
        "mse": 2.0 * float(solution.cost) / problem.points,
    }


def _wide_mlp_in_jit() -> dict:
    import jax
    import jax.numpy as jnp

    import nlls
    from benchmarks import mlp

    x, y = mlp.data()
    start = jnp.asarray(mlp.init_params())
    solve = jax.jit(
        lambda p: nlls.least_squares(
            mlp.residual,
            p,
            args=(x, y),
            jac=mlp.per_sample_jacobian,
            ftol=0.0,
            xtol=0.0,
            gtol=0.0,
            max_steps=MLP_STEPS,
        )
    )
    solutions = []
    seconds = _median_call(lambda: solutions.append(jax.block_until_ready(solve(start))), JIT_CALLS)
    return {"value": seconds, "steps": int(solutions[-1].stats.steps)}


def _nist() -> dict:
    import jax
    import jax.numpy as jnp

    import nlls
    from benchmarks.nist import BUDGET, TIGHT
    from problems import NIST_NAMES, load_nist

    medians = []
    for name in NIST_NAMES:
        problem = load_nist(name)
        args = (jnp.asarray(problem.x), jnp.asarray(problem.y))
        for start in (jnp.asarray(problem.start1), jnp.asarray(problem.start2)):

            def call(start=start, problem=problem, args=args):
                sol = nlls.least_squares(
                    problem.residual,
                    start,
                    args=args,
                    ftol=TIGHT,
                    xtol=TIGHT,
                    gtol=TIGHT,
                    max_steps=BUDGET,
                )
                jax.block_until_ready(sol)

            medians.append(_median_call(call, NIST_CALLS))
    return {"value": statistics.median(medians), "total_s": sum(medians), "fits": len(medians)}


def _demo() -> dict:
    from nlls import _demo

    with contextlib.redirect_stdout(io.StringIO()):
        lm = _demo.run_demo(methods=("lm",), output=None)["lm"]
    return {"value": lm.times[-1], "mse": float(lm.mse[-1])}


def _tiny() -> dict:
    """The time of a warm call, and the per-call cost of nlls's limit measured in place: blocks of
    ``TINY_CALLS`` calls with the limit and with a scope that does nothing, alternated
    ``TINY_PAIRS`` times (after as many calls to warm up); the call's time is the median of the
    blocks run as the process's setting has it, the cost the median of the paired differences."""
    import jax
    import jax.numpy as jnp

    import nlls
    import nlls.driver

    x = jnp.linspace(0.0, 1.0, 20)
    y = 2.0 * jnp.exp(-1.5 * x) + 0.5

    def residual(p, x, y):
        return p[0] * jnp.exp(-p[1] * x) + p[2] - y

    start = jnp.array([1.0, 1.0, 0.0])

    def per_call() -> float:
        began = time.perf_counter()
        for _ in range(TINY_CALLS):
            sol = nlls.least_squares(residual, start, args=(x, y))
        jax.block_until_ready(sol)
        return (time.perf_counter() - began) / TINY_CALLS

    per_call()
    limit = nlls.driver.one_blas_thread
    if limit is contextlib.nullcontext:  # the "limit off" setting: nothing to compare
        return {"value": statistics.median(per_call() for _ in range(TINY_PAIRS))}
    pairs = []
    for _ in range(TINY_PAIRS):
        with_limit = per_call()
        nlls.driver.one_blas_thread = contextlib.nullcontext
        pairs.append((with_limit, per_call()))
        nlls.driver.one_blas_thread = limit
    return {
        "value": statistics.median(w for w, _ in pairs),
        "without_limit_s": statistics.median(w for _, w in pairs),
        "limit_cost_s": statistics.median(w - wo for w, wo in pairs),
    }


_RUN = {
    "wide MLP": _wide_mlp,
    "wide MLP in the caller's jit": _wide_mlp_in_jit,
    "NIST": _nist,
    "demo": _demo,
    "3-parameter fit": _tiny,
}


def blas_libraries() -> list[dict]:
    """What threadpoolctl reports for the BLAS libraries loaded (scipy's, where JAX's LAPACK calls
    go, loaded first): file name, implementation, version, threading layer and thread count."""
    import threadpoolctl

    with contextlib.suppress(ImportError):
        import scipy.linalg.cython_lapack  # noqa: F401
    return [
        {
            "library": Path(info["filepath"]).name,
            "internal_api": info["internal_api"],
            "version": info["version"],
            "threading_layer": info.get("threading_layer"),
            "num_threads": info["num_threads"],
        }
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    ]


def child(workload: str, limit_off: bool) -> dict:
    """Run one workload in this process; ``limit_off`` switches nlls's BLAS limit off first."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if limit_off:
        import nlls.driver

        nlls.driver.one_blas_thread = contextlib.nullcontext
    result = _RUN[workload]()
    result["blas"] = blas_libraries()
    return result


# ----------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------


def _environment(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting == "1 thread":
        env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn(workload: str, setting: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.threads", workload]
    if setting == "limit off":
        command.append("--limit-off")
    done = subprocess.run(
        command, cwd=ROOT, env=_environment(setting), capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"value": float("nan"), "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = 3, verbose: bool = True) -> dict:
    """Every workload under every setting, in fresh processes, ``rounds`` interleaved rounds."""
    runs = {name: {setting: [] for setting in WORKLOADS[name][2]} for name in WORKLOADS}
    for round_index in range(rounds):
        for name, (_, _, settings, _) in WORKLOADS.items():
            for setting in settings:
                result = _spawn(name, setting)
                runs[name][setting].append(result)
                if verbose:
                    threads = sorted({lib["num_threads"] for lib in result.get("blas", [])})
                    print(
                        f"  round {round_index + 1}  {name:30s} {setting:9s} "
                        f"{result['value']:.4g} s  (BLAS threads {threads})"
                        + (f"  {result['error']}" if "error" in result else ""),
                        flush=True,
                    )
    rows = []
    for name, (description, unit, settings, targeted) in WORKLOADS.items():
        row = {"workload": name, "description": description, "unit": unit, "target": targeted}
        for setting in settings:
            values = [r["value"] for r in runs[name][setting]]
            row[setting] = {
                "median": statistics.median(values),
                "values": values,
                "blas_threads": sorted(
                    {lib["num_threads"] for r in runs[name][setting] for lib in r.get("blas", [])}
                ),
                "runs": runs[name][setting],
            }
        one = row["1 thread"]["median"]
        row["default_ratio"] = row["default"]["median"] / one
        if "limit off" in row:
            row["limit_off_ratio"] = row["limit off"]["median"] / one
        rows.append(row)
        if verbose:
            print(
                f"  {name:30s} default / 1 thread = {row['default_ratio']:.3g}"
                + (
                    f", limit off / 1 thread = {row['limit_off_ratio']:.3g}"
                    if "limit_off_ratio" in row
                    else ""
                ),
                flush=True,
            )
    return {
        "rounds": rounds,
        "target_ratio": TARGET,
        "command": "python -m benchmarks --only threads",
        "blas": blas_libraries(),
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullet: default environment against one thread on the aimed workloads."""
    aimed = [row for row in result["rows"] if row["target"]]
    ratios = ", ".join(f"{row['workload']} {ratio(row['default_ratio'])}" for row in aimed)
    worst = max(aimed, key=lambda row: row.get("limit_off_ratio", 0.0))
    return [
        f"- BLAS threads (default environment / `OPENBLAS_NUM_THREADS=1`, aim ≤ "
        f"{result['target_ratio']:g}×): {ratios}; without nlls's limit the {worst['workload']} "
        f"took {ratio(worst.get('limit_off_ratio'))} the 1-thread time."
    ]


def render(result: dict) -> str:
    """Each workload in fresh processes: default environment, nlls's limit off, one thread."""
    rows = []
    for row in result["rows"]:
        rows.append(
            [
                row["workload"],
                row["description"],
                _threads_cell(row, "default"),
                _threads_cell(row, "limit off"),
                _threads_cell(row, "1 thread"),
                ratio(row["default_ratio"]),
                ratio(row.get("limit_off_ratio")),
                f"≤ {result['target_ratio']:g}×" if row["target"] else "—",
            ]
        )
    tiny = next((row for row in result["rows"] if row["workload"] == "3-parameter fit"), None)
    cost = []
    if tiny is not None:
        cost = [
            "",
            f"The limit's own cost per call, measured in place on the 3-parameter fit (blocks of "
            f"calls with the limit and without it, alternated; median of the differences): "
            f"{_limit_cost(tiny, 'default')} in the default environment, "
            f"{_limit_cost(tiny, '1 thread')} with `OPENBLAS_NUM_THREADS=1` (nothing to change: only "
            "the check).",
        ]
    return "\n".join(
        [
            "## BLAS threads: as users get it, against one OpenBLAS thread",
            "",
            run_line(result),
            "",
            f"Command: `{result['command']}`. BLAS libraries of the default environment "
            f"(threadpoolctl): {blas_line(result['blas'])}.",
            "",
            "Each workload runs in fresh processes: *default* is the environment as it comes (no",
            "`OPENBLAS_NUM_THREADS`), *limit off* the same with nlls's one-thread limit switched off",
            "in that process (what users got before it, and what a solve inside the caller's own",
            "`jax.jit` still gets), *1 thread* `OPENBLAS_NUM_THREADS=1`. A figure is the median over",
            "the rounds (fastest – slowest in brackets) of each process's own figure: the median of",
            "its warm calls, or the demo's LM training time (History clock, compilation excluded).",
            "",
            table(
                [
                    "Workload",
                    "measured",
                    "default",
                    "limit off",
                    "1 thread",
                    "default / 1 thread",
                    "limit off / 1 thread",
                    "aim",
                ],
                rows,
                "llrrrrrl",
            ),
            *cost,
        ]
    )


def _threads_cell(row: dict, setting: str) -> str:
    if setting not in row:
        return "—"
    cell = row[setting]
    spread = f" ({seconds(min(cell['values']))} – {seconds(max(cell['values']))})"
    return seconds(cell["median"]) + (spread if len(cell["values"]) > 1 else "")


def _limit_cost(row: dict, setting: str) -> str:
    costs = [r["limit_cost_s"] for r in row.get(setting, {}).get("runs", []) if "limit_cost_s" in r]
    if not costs:
        return "—"
    return seconds(statistics.median(costs))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    print(json.dumps(child(arguments[0], limit_off="--limit-off" in arguments)))
