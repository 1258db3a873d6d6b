"""Markdown for ``BENCHMARKS.md``: machine header, headline numbers and one section per suite.

Every function here takes the JSON-able dicts returned by the suites' ``run`` functions (as saved in
``bench-out/``) and returns markdown text; nothing is measured here.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks.threads import blas_libraries

SUITES = ("nist", "minpack", "mlp", "training", "callbacks", "stochastic", "scale", "threads")
COMMAND = "make bench"


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: all ``l``)."""
    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps three significant digits (µs, ms or s)."""
    if value is None or not math.isfinite(value):
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1.0:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def ratio(value: float | None) -> str:
    """A time ratio such as ``0.42×``."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3g}×"


def number(value: float | int | None, digits: int = 7) -> str:
    """A number with ``digits`` significant digits, or a dash when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    if package == "nlls":  # run from the source tree, not necessarily installed
        try:
            import nlls

            return nlls.__version__
        except (ImportError, AttributeError):
            return "unknown"
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The checked-out commit (read only), with ``+dirty`` when the tree has local changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """CPU, cores, load, library versions, commit and date of this run."""
    import jax

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "versions": {
            p: _version(p) for p in ("nlls", "jaxlib", "numpy", "scipy", "optimistix", "jaxopt")
        },
        "threads": {
            name: os.environ.get(name, "unset")
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "XLA_FLAGS")
        },
        "blas": blas_libraries(),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _suite_runs(results: dict) -> list[str]:
    runs = {
        suite: (result.get("machine", {}).get("date"), result.get("machine", {}).get("commit"))
        for suite, result in results.items()
    }
    if len(set(runs.values())) <= 1:
        return []
    listed = "; ".join(f"{suite} {date}, commit {commit}" for suite, (date, commit) in runs.items())
    return [f"- Suites saved from separate runs: {listed}"]


def _blas_line(libraries: list[dict]) -> str:
    """The BLAS libraries as threadpoolctl reports them, one clause each."""
    return "; ".join(
        f"`{lib['library']}` ({lib['internal_api']} {lib['version']}, "
        f"{lib['threading_layer']}): {lib['num_threads']} threads"
        for lib in libraries
    )


def _suite_threads(results: dict) -> list[str]:
    """The ``OPENBLAS_NUM_THREADS`` of each suite's run, when they differ."""
    settings = {
        suite: result.get("machine", {}).get("threads", {}).get("OPENBLAS_NUM_THREADS", "unset")
        for suite, result in results.items()
    }
    if len(set(settings.values())) <= 1:
        return []
    by_setting = {}
    for suite, value in settings.items():
        by_setting.setdefault(value, []).append(suite)
    listed = "; ".join(
        f"{', '.join(suites)} with OPENBLAS_NUM_THREADS={value}"
        for value, suites in by_setting.items()
    )
    return [f"  Suites run with different settings: {listed}."]


def header(machine: dict, results: dict | None = None) -> str:
    """Title, command and machine description; when the suites come from different runs, the
    date and commit of each."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Generated by `{COMMAND}` (`python -m benchmarks`; one suite: "
            "`python -m benchmarks --only nist|minpack|mlp|training|callbacks|stochastic|scale|threads`). "
            "Raw results: "
            "`bench-out/*.json`.",
            "",
            f"- Date: {machine['date']}, commit {machine['commit']}",
            *_suite_runs(results or {}),
            f"- Machine: {machine['cpu']}, {machine['cores']} cores, "
            f"JAX backend `{machine['jax_backend']}`, load average at start {load}",
            f"- Software: Python {machine['python']}, jax {machine['jax']}, {versions}",
            "- Arithmetic: float64 (`jax_enable_x64`), except where a section says float32 (minibatch training; the 10⁶-parameter scale case).",
            "- Threads: "
            + ", ".join(f"{k}={v}" for k, v in machine.get("threads", {}).items())
            + "; BLAS (threadpoolctl): "
            + (_blas_line(machine.get("blas", [])) or "none seen")
            + ".",
            *_suite_threads(results or {}),
            "  `make bench` runs in the environment as it comes, as users get it. JAX's LAPACK calls",
            "  (Cholesky, QR, eigh) on CPU go to scipy's OpenBLAS, whose threads compete with XLA's",
            "  own; nlls holds OpenBLAS at one thread during its own solves (`nlls/threads.py`), its",
            "  peers get the setting as it is. The `threads` section measures what that is worth.",
            "",
            "How times are taken: every solver gets the same residual function, data and start. Each",
            "solver first makes one untimed warm-up call (which compiles; reported as *first call*),",
            "then the solvers are called in interleaved rounds (solver A, B, C, A, B, C, ...) so that",
            "changes of machine load hit them alike; a time is the median of those calls. nlls is",
            "called through `nlls.least_squares`, which compiles internally; the JAX peers are wrapped",
            "in one `jax.jit` over (start, data); scipy receives the jit-compiled residual and",
            "`jax.jacfwd` Jacobian, converted to numpy. A ratio *nlls / peer* below 1 means nlls is",
            "faster, and compares times measured in the same run.",
        ]
    )


# ----------------------------------------------------------------------------------------------
# Headline
# ----------------------------------------------------------------------------------------------


def headline(results: dict) -> str:
    """The few numbers that summarise each suite, nlls against each peer."""
    lines = ["## Headline", ""]
    nist = results.get("nist")
    if nist:
        rows = nist["summary"]
        nlls = rows[0]
        lines.append(
            f"- NIST StRD ({nlls['fits']} fits): nlls LM passes {nlls['passed']}/{nlls['fits']} at "
            f"LRE ≥ {nist['pass_lre']:g} (mean min LRE {nlls['mean_min_lre']:.2f}), median "
            f"{seconds(nlls['median_time_s'])} per fit."
        )
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
    minpack = results.get("minpack")
    if minpack:
        rows = minpack["summary"]["rows"]
        reference = rows[0]
        for row in rows[1:]:
            lines.append(
                f"- MINPACK ({row['runs']} runs): {row['solver']} passes {row['passed']}/"
                f"{row['runs']}; total nfev {row['total_nfev']} against MINPACK's "
                f"{reference['total_nfev']} (fewer / equal / more than MINPACK in "
                f"{row['fewer']} / {row['equal']} / {row['more']} runs)"
            )
    mlp = results.get("mlp")
    if mlp:
        rows = mlp["rows"]
        nlls = rows[0]
        lines.append(
            f"- MLP ({mlp['n_params']} parameters, {mlp['points']} points): nlls LM "
            f"{seconds(nlls['per_iteration_s'])} per iteration, final MSE {nlls['mse']:.3g}."
        )
        for row in rows[1:]:
            lines.append(
                f"  - vs {row['solver']}: {seconds(row['per_iteration_s'])} per iteration, "
                f"final MSE {row['mse']:.3g}; time per iteration nlls / peer = "
                f"{ratio(row['per_iteration_ratio'])} (fastest repeats: "
                f"{ratio(row.get('best_per_iteration_ratio'))})"
            )
    training = results.get("training")
    if training:
        lines += _training_headline(training)
    callbacks = results.get("callbacks")
    if callbacks:
        lines.append(_callbacks_headline(callbacks))
    stochastic = results.get("stochastic")
    if stochastic:
        lines += _stochastic_headline(stochastic)
    if results.get("scale"):
        lines += _scale_headline(results["scale"])
    if results.get("threads"):
        lines.append(_threads_headline(results["threads"]))
    return "\n".join(lines)


def _lm_reached(problem: dict) -> bool:
    return math.isfinite(problem["rows"][0].get("time_to_target_s", math.nan))


def _training_headline(result: dict) -> list[str]:
    lines = []
    demo = result.get("demo")
    if demo:
        rows = demo["rows"]
        lm = rows[0]
        others = ", ".join(
            f"{row['method']} {seconds(row.get('time_to_target_s'))} "
            f"({ratio(row.get('time_ratio'))})"
            for row in rows[1:]
        )
        lines.append(
            f"- Neural ODE (demo, {demo['n_params']} parameters): nlls LM reaches the final MSE of "
            f"the best first-order recipe ({demo['target_mse']:.3g}) in "
            f"{seconds(lm['time_to_target_s'])}; the others (time, peer / nlls): {others}."
        )
    for problem in result["problems"]:
        rows = problem["rows"]
        lm = rows[0]
        others = ", ".join(
            f"{row['method']} {seconds(row.get('time_to_target_s'))}"
            + (
                f" ({ratio(row['time_ratio'])})"
                if math.isfinite(row.get("time_ratio", math.nan))
                else ""
            )
            for row in rows[1:]
        )
        if _lm_reached(problem):
            lines.append(
                f"- {problem['problem']} ({problem['n_params']} parameters, {problem['points']} "
                f"points): nlls LM reaches MSE {problem['target_mse']:g} in "
                f"{seconds(lm.get('time_to_target_s'))}; others (time, peer / nlls): {others}."
            )
            continue
        reached = ", ".join(
            f"{row['method']} in {seconds(row['time_to_target_s'])}"
            for row in rows[1:]
            if math.isfinite(row.get("time_to_target_s", math.nan))
        )
        lines.append(
            f"- {problem['problem']} ({problem['n_params']} parameters, {problem['points']} points): "
            f"nlls LM does not reach MSE {problem['target_mse']:g} before a run exceeds the "
            f"{seconds(problem['time_cap_s'])} cap (best {lm['best_mse']:.3g}, in a run of "
            f"{seconds(problem['equal_time_s'])}); reached by: {reached or 'none'}."
        )
    return lines


# ----------------------------------------------------------------------------------------------
# Suites
# ----------------------------------------------------------------------------------------------


def _settings(settings: dict) -> str:
    return table(["Solver", "Given"], [[k, f"`{v}`"] for k, v in settings.items()])


def _run_line(result: dict) -> str:
    parts = [f"Run {result.get('date', '?')}, {seconds(result.get('wall_s'))} wall"]
    if "load_before" in result:
        parts.append(
            f"1-minute load average {result['load_before']:.1f} before, "
            f"{result['load_after']:.1f} after"
        )
    if "repeats" in result:
        parts.append(f"up to {result['repeats']} timed repeats per fit")
    if "rounds" in result:
        rounds = result["rounds"]
        parts.append(f"{rounds} round{'s' if rounds != 1 else ''} of fresh processes")
    return "*" + "; ".join(parts) + ".*"


def nist_section(result: dict) -> str:
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
            _run_line(result),
            "",
            "19 data sets × 2 starts. Score of a fit: the minimum over its parameters of the log",
            "relative error LRE = −log10(|b − b_cert| / |b_cert|), capped at 11 (the number of",
            f"correct digits); a fit passes at LRE ≥ {pass_lre:g}. *evals* are residual evaluations",
            "(nfev) for nlls and scipy and steps for optimistix, which reports no evaluation count",
            "(one residual evaluation per step). *first call* is the warm-up call of the first",
            "start of each data set, compilation included. Tolerances, chosen as tight as each",
            "solver accepts while still stopping on its own test (see `benchmarks/nist.py`):",
            "",
            _settings(result["settings"]),
            "",
            summary,
            "",
            "### Per fit: minimum LRE (evals); below the pass mark in bold",
            "",
            fits,
        ]
    )


def minpack_section(result: dict) -> str:
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
            _run_line(result),
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
            _settings(result["settings"]),
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
    return any(abs(fnorm - a) <= 1e-6 * a + 1e-10 for a in acceptable)


def mlp_section(result: dict) -> str:
    """Time per iteration and final MSE of each solver on the wide MLP problem."""
    rows = []
    for row in result["rows"]:
        iterations = str(row["iterations"])
        if row.get("accepted") is not None:
            iterations += f" ({row['accepted']} accepted)"
        rows.append(
            [
                row["solver"],
                iterations,
                seconds(row["per_iteration_s"]),
                ratio(row["per_iteration_ratio"]),
                seconds(row.get("best_per_iteration_s")),
                ratio(row.get("best_per_iteration_ratio")),
                seconds(row["total_s"]),
                f"{row['mse']:.3g}",
                seconds(row["first_s"]),
                row.get("stop", ""),
            ]
        )
    layers = "→".join(str(k) for k in result["layers"])
    return "\n".join(
        [
            "## Wide problem: MLP fit",
            "",
            _run_line(result),
            "",
            f"A {layers} tanh MLP ({result['n_params']} parameters) fitted to sin(3x) on "
            f"{result['points']} evenly spaced points of [−1, 1] (seed-0 init, initial MSE "
            f"{result['initial_mse']:.3g}); 300 iterations with the convergence tests off. *time /",
            "iteration* = median total time after compilation / iterations done (*fastest repeat*:",
            "the same with the fastest timed repeat, the one a busy machine disturbed least); nlls",
            "counts rejected steps apart from its `max_steps`, so its iterations are accepted +",
            "rejected.",
            "",
            _settings(result["settings"]),
            "",
            table(
                [
                    "Solver",
                    "iterations",
                    "time / iteration",
                    "nlls / peer",
                    "fastest repeat / iteration",
                    "nlls / peer (fastest)",
                    "total",
                    "final MSE",
                    "first call",
                    "stop",
                ],
                rows,
                "lrrrrrrrrl",
            ),
        ]
    )


def _percent(value: float | None) -> str:
    """A ratio such as 1.083 as an overhead, ``+8.3 %``."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * (value - 1):+.1f} %"


def _callback_row(problem: dict, key: str) -> dict:
    return next(row for row in problem["rows"] if row["key"] == key)


def _callbacks_headline(result: dict) -> str:
    mlp, nist = result["problems"][0], result["problems"][-1]
    main = _callback_row(mlp, "history_bar")
    small = _callback_row(nist, "history_bar")
    return (
        f"- Callbacks (History + ProgressBar after every iteration): "
        f"{_percent(main.get('paired_ratio'))} on the MLP, paired "
        f"({'meets' if result['target_met'] else 'misses'} the ≤ "
        f"{100 * result['target_overhead']:g} % target), "
        f"{seconds(main['per_segment_overhead_s'])} per segment; on NIST "
        f"{result['nist_name']} {ratio(small['ratio'])} the time without callbacks "
        f"({seconds(small['per_segment_overhead_s'])} per segment against "
        f"{seconds(nist['rows'][0]['per_iteration_s'])} per iteration)."
    )


def _callbacks_verdict(result: dict) -> list[str]:
    """Sentences on the target (MLP) and on what dominates on the small NIST fit."""
    target = 100 * result["target_overhead"]
    mlp, nist = result["problems"][0], result["problems"][-1]
    main = _callback_row(mlp, "history_bar")
    drawing = _callback_row(mlp, "history_bar_drawing")
    met = "met" if result["target_met"] else "not met"
    few = result.get("mlp_rounds", 0) < 10
    lines = [
        f"**Target** (at most {target:g} % overhead on the MLP with History + ProgressBar after "
        f"every iteration): **{met}** on the paired ratio, {_percent(main.get('paired_ratio'))} "
        f"(ratio of the medians {_percent(main['ratio'])}, {seconds(main['median_s'])} against "
        f"{seconds(mlp['rows'][0]['median_s'])} for {mlp['iterations']} iterations; fastest "
        f"repeats {_percent(main['fastest_ratio'])}); "
        f"{_signed(main['per_segment_overhead_s'])} per segment against "
        f"{seconds(mlp['rows'][0]['per_iteration_s'])} per iteration without callbacks. With the "
        f"bar drawing into a StringIO: {_percent(drawing.get('paired_ratio'))} paired."
        + (
            f" Only {result.get('mlp_rounds')} rounds (`--quick`): differences of a few per "
            "cent are within the noise."
            if few
            else ""
        ),
        "",
    ]
    lines += [
        "Where a segment's time goes (profiled with `jax.profiler` on this machine, MLP, one",
        "iteration per segment): dispatching the compiled segment takes about 0.15–0.2 ms and the",
        "callbacks and the `StepInfo` some µs; the rest is the XLA CPU runtime starting an",
        "execution: the first fusions of the loop body run 2–3× slower in each new execution",
        "than inside a running loop, and the Cholesky factorisation (LAPACK, with OpenBLAS's own",
        "threads) up to 20× slower. Dispatching the next segment before the",
        "callbacks run (pipelining) did not reduce it. `callback_every=10` brings the overhead",
        "within the noise (row *History, every 10*).",
        "",
    ]
    none = nist["rows"][0]
    small = _callback_row(nist, "history_bar")
    per_iteration = none["per_iteration_s"]
    per_segment = small["per_segment_overhead_s"]
    if per_segment is not None and per_segment > per_iteration:
        lines.append(
            f"On NIST {result['nist_name']} an iteration takes only {seconds(per_iteration)} "
            f"without callbacks, while each segment adds {seconds(per_segment)}, so the "
            f"per-segment cost (dispatch of the compiled segment, two small device→host transfers, "
            f"the callbacks) dominates: the solve takes {ratio(small['ratio'])} as long with callbacks "
            f"after every iteration ({ratio(_callback_row(nist, 'history_every_10')['ratio'])} "
            "with History every 10 iterations). For fits this small, use a larger "
            "`callback_every`, or no callbacks."
        )
    else:
        lines.append(
            f"On NIST {result['nist_name']} an iteration takes {seconds(per_iteration)} without "
            f"callbacks and each segment adds {seconds(per_segment)}: "
            f"{_percent(small['ratio'])} with callbacks after every iteration."
        )
    return lines


def _signed(value: float | None) -> str:
    """A duration that may be negative (an overhead lost in the noise)."""
    if value is None or not math.isfinite(value):
        return "—"
    return seconds(value) if value >= 0 else "−" + seconds(-value)


def _every(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0e}" if value >= 10**6 else str(value)


def callbacks_section(result: dict) -> str:
    """Time of each callback variant against no callbacks, per problem, and the verdict."""
    parts = [
        "## Callback overhead",
        "",
        _run_line(result),
        "",
        f"Timed rounds after the warm-up: {result.get('mlp_rounds', '?')} on the MLP, "
        f"{result.get('nist_rounds', '?')} on NIST {result['nist_name']}.",
        "",
        "With callbacks, `least_squares` runs the compiled loop `callback_every` iterations at",
        "a time from a host driver and calls the callbacks between segments; without them the",
        "solve is one compiled program. Each variant below is timed like the solvers of the other",
        "sections (one warm-up call, then interleaved rounds; median, and the fastest repeat),",
        "with its callbacks built afresh for each call. *paired*: the median over the rounds of",
        "the ratio of the two calls of a round, which ran under much the same load (steadier than",
        "the ratio of the medians on a busy machine). *overhead / segment* = (time − time without",
        "callbacks) / segments; a segment is `callback_every` iterations (trial steps, accepted or",
        "rejected). *same result*: final parameters equal bit for bit to those without callbacks,",
        "and the same numbers of steps, rejected steps and evaluations. *Callbacks alone*: the",
        f"callbacks called {result.get('isolated_calls', 'many')} times on prepared `StepInfo`s,",
        "outside any solve; the rest of the overhead per segment is the driver's (dispatching the",
        "compiled segment, fetching the scalars to the host, building the `StepInfo`). The",
        "one-segment variant measures the driver's fixed cost (three compiled programs, start,",
        "segment and finish, instead of one); *marginal / segment* = (time − time of the",
        "one-segment variant) / (segments − 1), the cost of one more segment.",
        "",
        table(["Problem", "Given"], [[k, f"`{v}`"] for k, v in result["settings"].items()], "ll"),
    ]
    for problem in result["problems"]:
        rows = []
        for row in problem["rows"]:
            rows.append(
                [
                    row["variant"],
                    _every(row["callback_every"]),
                    str(row["segments"]),
                    seconds(row["median_s"]),
                    ratio(row["ratio"]),
                    ratio(row.get("paired_ratio")),
                    seconds(row["min_s"]),
                    ratio(row["fastest_ratio"]),
                    seconds(row["per_iteration_s"]),
                    _signed(row["per_segment_overhead_s"]),
                    _signed(row.get("marginal_per_segment_s")),
                    seconds(row["first_s"]),
                    "yes" if row["params_identical"] and row["counts_equal"] else "**no**",
                ]
            )
        alone = problem["callbacks_alone_s"]
        parts += [
            "",
            f"### {problem['problem']}: {problem['iterations']} iterations "
            f"({problem['steps']} accepted, {problem['rejected']} rejected), stop "
            f"`{problem['stop']}`",
            "",
            table(
                [
                    "Variant",
                    "every",
                    "segments",
                    "median time",
                    "× none",
                    "× none (paired)",
                    "fastest repeat",
                    "× none (fastest)",
                    "time / iteration",
                    "overhead / segment",
                    "marginal / segment",
                    "first call",
                    "same result",
                ],
                rows,
                "lrrrrrrrrrrrl",
            ),
            "",
            f"Callbacks alone, per call: History {seconds(alone['history'])}; History + "
            f"ProgressBar() {seconds(alone['history_bar'])}; History + ProgressBar drawing "
            f"{seconds(alone['history_bar_drawing'])}.",
        ]
    parts += ["", *_callbacks_verdict(result)]
    return "\n".join(parts)


def training_section(result: dict) -> str:
    """Time to a target MSE and MSE in equal time: LM against first-order training and peers."""
    from benchmarks import training

    parts = [
        "## Training models: time to a target MSE",
        "",
        _run_line(result),
        "",
        training.__doc__.split("\n\n", 1)[1].strip(),
    ]
    for problem in result["problems"]:
        rows = []
        for row in problem["rows"]:
            if "error" in row:
                rows.append([row["method"], "error: " + row["error"], "", "", "", ""])
                continue
            rows.append(
                [
                    row["method"],
                    seconds(row["time_to_target_s"]),
                    str(row["budget_to_target"] or "—"),
                    ratio(row["time_ratio"]),
                    f"{row['mse_in_equal_time']:.3g}"
                    if math.isfinite(row["mse_in_equal_time"])
                    else "—",
                    f"{row['best_mse']:.3g}",
                ]
            )
        layers = "→".join(str(k) for k in problem["layers"])
        parts += [
            "",
            f"### {problem['problem']}: {layers} ({problem['n_params']} parameters), "
            f"{problem['points']} points, target MSE {problem['target_mse']:g}",
            "",
            f"Initial MSE {problem['initial_mse']:.3g}; time cap per run {problem['time_cap_s']:g} s;"
            + (
                f" equal time = nlls LM's time to target, {seconds(problem['equal_time_s'])}."
                if _lm_reached(problem)
                else " nlls LM did not reach the target within the cap, so *equal time* is its "
                f"longest run, {seconds(problem['equal_time_s'])}, and no time ratio is given."
            ),
            "",
            table(
                [
                    "method",
                    "time to target",
                    "steps to target",
                    "time / nlls LM's",
                    "MSE in equal time",
                    "best MSE of any run",
                ],
                rows,
                "lrrrrr",
            ),
        ]
    demo = result.get("demo")
    if demo:
        rows = []
        for row in demo["rows"]:
            if "error" in row:
                rows.append([row["method"], "error: " + row["error"], "", "", "", ""])
                continue
            rows.append(
                [
                    row["method"],
                    str(row["steps"] or "—"),
                    f"{row['final_mse']:.3g}",
                    seconds(row["time_s"]),
                    seconds(row["time_to_target_s"]),
                    ratio(row["time_ratio"]),
                ]
            )
        parts += [
            "",
            f"### {demo['problem']}: {demo['n_params']} parameters, {demo['residuals']} residuals",
            "",
            "LM (200 steps), Adam (5000 steps, learning rate 3e-2) and Adam → L-BFGS (1000 more) as",
            "`python -m nlls demo` trains them, timed by their History (compilation excluded; the",
            "History, a validation metric and the segment overhead included: LM records every step,",
            "Adam every 50 updates, L-BFGS every 10). Target: the final training MSE of the best",
            f"first-order recipe, {demo['target_mse']:.3g}. optimistix LM: the budget protocol above",
            "on the same shooting residual in forward mode (`diffrax.ForwardMode`); its *steps* is the",
            "smallest budget that reached the target, its *final MSE* the best of its runs and its",
            "*time* the longest run.",
            "",
            table(
                ["method", "steps", "final MSE", "time", "time to target", "time / nlls LM's"],
                rows,
                "lrrrrr",
            ),
        ]
    return "\n".join(parts)


def _scale_headline(result: dict) -> list[str]:
    big = result["big"]
    full, blocked = big["cases"].get("big-full", {}), big["cases"].get("big-blocked", {})
    if "iterations" not in full or "iterations" not in blocked:
        return []
    return [
        f"- Scale ({big['n_params']:,} parameters, {big['samples']:,} residuals, matrix-free LM "
        f"step): peak {_gigabytes(blocked['peak_rss_bytes'])} with the residual in checkpointed "
        f"blocks ({_verdict(blocked)}: < {_gigabytes(result['target_peak_bytes'])}), "
        f"{_gigabytes(full['peak_rss_bytes'])} full batch ({_verdict(full)})."
    ]


def _stochastic_headline(result: dict) -> list[str]:
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


def _bracket(after: float | None, at: float | None) -> str:
    """``≥ a, ≤ b``: the target was first seen at ``b``, and not yet at ``a``."""
    if at is None or not math.isfinite(at):
        return "not reached"
    if after is None or not math.isfinite(after):
        return seconds(at)
    return f"{seconds(after)} – {seconds(at)}"


def stochastic_section(result: dict) -> str:
    """Per problem: every setting's epochs and best validation MSE, then the times to targets."""
    from benchmarks import stochastic

    parts = [
        "## Minibatch training: stochastic LM against minibatch Adam",
        "",
        _run_line(result),
        "",
        stochastic.__doc__.split("\n\n", 1)[1].strip(),
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


def _long_seconds(value: float | None) -> str:
    """A duration that may run to hours (``seconds`` up to an hour, then ``3.7 h``)."""
    if value is None or not math.isfinite(value) or value < 3600:
        return seconds(value)
    return f"{value / 3600:.3g} h"


def _gigabytes(value: float | None) -> str:
    """Bytes as GB (10⁹), three significant digits."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value / 1e9:.3g} GB"


def _scale_machine(result: dict) -> str:
    machine = result.get("machine", {})
    return (
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{_gigabytes(result.get('memory_bytes'))} RAM; jitted 2000×2000 matrix product "
        f"{result['matmul_rate_f64'] / 1e9:.1f} GFLOP/s in float64, "
        f"{result['matmul_rate_f32'] / 1e9:.1f} GFLOP/s in float32 (this run). Command: "
        f"`{result['command']}`."
    )


def _load(run: dict | None) -> str:
    return f"{run['load_before']:.1f}" if run and "load_before" in run else "—"


def _scale_big_rows(big: dict) -> list[list[str]]:
    labels = {
        "big-baseline": "baseline: imports, data, start",
        "big-full": "full batch",
        "big-blocked": f"blocked: {big['blocks']} × {big['samples'] // big['blocks']:,} samples, "
        "`jax.checkpoint`",
    }
    rows = []
    for case, label in labels.items():
        run = big["cases"].get(case)
        if run is None or "error" in run:
            rows.append([label, "error" if run else "not run", *[""] * 7, _load(run)])
        elif case == "big-baseline":
            rows.append([label, _gigabytes(run["peak_rss_bytes"]), *["—"] * 7, _load(run)])
        else:
            rows.append(
                [
                    label,
                    _gigabytes(run["peak_rss_bytes"]),
                    _gigabytes(run["solver_bytes"]),
                    "**yes**" if run["meets_target"] else "no",
                    f"`{run['auto_linear']}` / `{run['linear']}`",
                    seconds(run["setup_s"]),
                    seconds(run["per_iteration_s"]),
                    ", ".join(str(k) for k in run["cgls_iterations"]),
                    f"{run['initial_cost']:.4g} → {run['final_cost']:.4g}",
                    _load(run),
                ]
            )
    return rows


def _scale_wide_rows(wide: dict) -> list[list[str]]:
    labels = {
        "wide-min-norm-rev": "m×m `min_norm`, `least_squares(jac='rev')`",
        "wide-min-norm-fit": "m×m `min_norm`, `nlls.fit` (per-sample J)",
        "wide-krylov": f"`krylov` (forcing term, cap {wide['krylov_max_steps']})",
        "wide-krylov-tight": f"`krylov` (tolerance {wide['krylov_tight_tolerance']:g}, cap "
        f"{wide['krylov_max_steps']})",
    }
    baseline = wide["cases"].get("wide-baseline")
    peak = _gigabytes(baseline.get("peak_rss_bytes")) if baseline else "not run"
    rows = [["baseline: imports, data, start", peak, *["—"] * 8, _load(baseline)]]
    for case, label in labels.items():
        run = wide["cases"].get(case)
        if run is None or "error" in run:
            rows.append([label, "error" if run else "not run", *[""] * 8, _load(run)])
            continue
        short = run["steps"] < wide["lm_steps"]  # the reverse-mode run does fewer steps
        rows.append(
            [
                label,
                _gigabytes(run["peak_rss_bytes"]),
                _gigabytes(run["solver_bytes"]),
                seconds(run["setup_s"]),
                seconds(run["per_iteration_s"]),
                f"{run['iterations']} ({run['steps']})",
                f"({run['steps']} steps: {run['final_cost']:.3g})"
                if short
                else f"{run['cost_after_steps']:.3g}",
                "—" if short else seconds(run["time_for_steps_s"]),
                f"{run['cost_at_equal_time']:.3g}"
                if run["solve_s"] >= wide["equal_time_s"]
                else "—",
                seconds(run.get("time_to_common_cost_s")),
                _load(run),
            ]
        )
    estimate = wide["normal_estimate"]
    rows.append(
        [
            "n×n `normal` (not run: estimate)",
            f"≥ {_gigabytes(estimate['bytes'])}",
            f"J {_gigabytes(estimate['jac_bytes'])} + JᵀJ {_gigabytes(estimate['gram_bytes'])}",
            "—",
            f"≈ {_long_seconds(estimate['per_step_s'])} per accepted step",
            *["—"] * 6,
        ]
    )
    return rows


def _verdict(run: dict) -> str:
    return "**met**" if run["meets_target"] else "**missed**"


def _scale_reading(result: dict) -> str:
    """One paragraph on the numbers: the 2 GB target, then the ratios of the wide problem."""
    big, wide = result["big"], result["wide"]
    full, blocked = big["cases"].get("big-full", {}), big["cases"].get("big-blocked", {})
    sentences = []
    if "iterations" in full and "iterations" in blocked:
        sentences.append(
            f"The {_gigabytes(result['target_peak_bytes'])} target at "
            f"{big['n_params']:,} parameters and {big['samples']:,} residuals was "
            f"{_verdict(blocked)} by the blocked residual, peak "
            f"{_gigabytes(blocked['peak_rss_bytes'])} for the whole process "
            f"({_gigabytes(blocked['solver_bytes'])} above the baseline), and {_verdict(full)} "
            f"by the full-batch one, peak {_gigabytes(full['peak_rss_bytes'])} "
            f"({_gigabytes(full['solver_bytes'])} above the baseline, "
            f"{ratio(full['solver_bytes'] / blocked['solver_bytes'])} the blocked one's share). "
            "The full-batch linearisation holds the hidden activations of every sample (one "
            f"{big['samples']:,} × {max(big['layers'])} float32 array is "
            f"{_gigabytes(4 * big['samples'] * max(big['layers']))}) and each product makes "
            "more of that size; the blocked one keeps only its inputs and recomputes one "
            "block's activations per product."
        )
        cgls = full["cgls_iterations"] + blocked["cgls_iterations"]
        capped = max(cgls, default=0) >= big["krylov_max_steps"]
        sentences.append(
            f"An LM step took {seconds(full['per_iteration_s'])} (full batch) and "
            f"{seconds(blocked['per_iteration_s'])} (blocked, "
            f"{ratio(blocked['per_iteration_s'] / full['per_iteration_s'])}); CGLS iterations "
            f"per step: {', '.join(str(k) for k in full['cgls_iterations'])} (full batch) and "
            f"{', '.join(str(k) for k in blocked['cgls_iterations'])} (blocked), so "
            + (
                f"the cap of {big['krylov_max_steps']} was reached."
                if capped
                else f"the forcing term stopped CGLS before the cap of {big['krylov_max_steps']}."
            )
            + f" Setup ({seconds(full['setup_s'])} and {seconds(blocked['setup_s'])}) is "
            "compilation and the starting point, where the initial damping alone takes 8 power "
            "iterations (16 Jacobian products)."
        )
    runs = wide["cases"]
    fit, rev = runs.get("wide-min-norm-fit", {}), runs.get("wide-min-norm-rev", {})
    krylov, tight = runs.get("wide-krylov", {}), runs.get("wide-krylov-tight", {})
    if all("history" in r for r in (fit, rev, krylov, tight)):
        estimate = wide["normal_estimate"]
        step_fit = fit["time_for_steps_s"] / wide["lm_steps"]
        at_time = {
            name: run["cost_at_equal_time"]
            for name, run in (("m×m", fit), ("Krylov", krylov), ("fixed-tolerance Krylov", tight))
        }
        best = min(at_time, key=at_time.get)
        sentences.append(
            f"At n = {wide['n_params']:,}, m = {wide['samples']:,} the m×m path took "
            f"{seconds(fit['per_iteration_s'])} per iteration through `nlls.fit` and "
            f"{seconds(rev['per_iteration_s'])} with the reverse-mode Jacobian "
            f"({ratio(rev['per_iteration_s'] / fit['per_iteration_s'])}; m VJPs of the whole "
            f"batch); forming JJᵀ alone is 2m²n flops, {seconds(wide['min_norm_gram_s'])} at "
            f"the measured rate. Peaks: {_gigabytes(fit['peak_rss_bytes'])} (`fit`) and "
            f"{_gigabytes(rev['peak_rss_bytes'])} (reverse mode, whose blocks of VJPs are sized "
            "to the default `max_jacobian_bytes`, a quarter of the free memory: "
            f"{_gigabytes(rev.get('default_budget_bytes'))} in that process) against "
            f"{_gigabytes(krylov['peak_rss_bytes'])} for Krylov. A Krylov iteration took "
            f"{seconds(krylov['per_iteration_s'])} (forcing term; "
            f"{ratio(krylov['per_iteration_s'] / fit['per_iteration_s'])} the m×m path's) and "
            f"{seconds(tight['per_iteration_s'])} (tolerance {wide['krylov_tight_tolerance']:g}), "
            f"but after {wide['lm_steps']} accepted steps the costs were "
            f"{krylov['cost_after_steps']:.3g} and {tight['cost_after_steps']:.3g} against "
            f"{fit['cost_after_steps']:.3g} for the m×m step, solved to rounding. In equal time "
            f"({wide['equal_time_s']:g} s) the costs were {at_time['m×m']:.3g} (m×m), "
            f"{at_time['Krylov']:.3g} (Krylov, forcing term) and "
            f"{at_time['fixed-tolerance Krylov']:.3g} (Krylov, tolerance "
            f"{wide['krylov_tight_tolerance']:g}): {best} ahead. The n×n normal path would hold "
            f"{_gigabytes(estimate['bytes'])} (this machine has "
            f"{_gigabytes(result.get('memory_bytes'))}) and take about "
            f"{_long_seconds(estimate['per_step_s'])} per step at the same rate, "
            f"{ratio(estimate['per_step_s'] / step_fit)} the m×m path's time per accepted step."
        )
        # The Gram product of an m×m iteration alone, over that iteration's whole time: a lower
        # bound on the rate this machine reached on large products in this run.
        implied = wide["min_norm_gram_s"] * result["matmul_rate_f64"] / fit["per_iteration_s"]
        if implied > result["matmul_rate_f64"]:
            faster = estimate["per_step_s"] * result["matmul_rate_f64"] / implied
            sentences.append(
                f"The 2000×2000 rate understates large products: the m×m iterations imply at "
                f"least {implied / 1e9:.3g} GFLOP/s, at which the n×n step would still take "
                f"about {_long_seconds(faster)}."
            )
    return " ".join(sentences)


def scale_section(result: dict) -> str:
    """Peak memory and time per step at 10⁶ parameters; the m×m path against Krylov and the
    n×n estimate at n = 10⁵, m = 10³."""
    big, wide = result["big"], result["wide"]
    big_layers = "→".join(str(k) for k in big["layers"])
    wide_layers = "→".join(str(k) for k in wide["layers"])
    quick = " (`--quick` sizes)" if result.get("quick") else ""
    return "\n".join(
        [
            "## Scale: matrix-free LM at 10⁶ parameters; the m×m path against Krylov",
            "",
            _run_line(result),
            "",
            _scale_machine(result),
            "",
            "Each case runs in a fresh process; *peak RSS* is `/usr/bin/time -v`'s maximum",
            "resident set size of that whole process (Python, JAX, data, compilation, solve), and",
            "*solver share* is that minus the peak of a baseline process that only imports JAX and",
            "nlls and builds the data and the starting parameters. Times come from `nlls.History`",
            "(after every iteration): *setup* is compilation and the starting point (the rest of",
            "the call), *time / iteration* a trial step, accepted or not. Tolerances off",
            "(`ftol = xtol = gtol = 0`). *CGLS iterations*: per LM step, the count the damped",
            "CGLS solve returned.",
            "",
            f"### {big['n_params']:,} parameters, {big['samples']:,} residuals{quick}",
            "",
            f"MLP {big_layers} (tanh), float32, on synthetic regression data; a dense J would take "
            f'{_gigabytes(big["dense_jac_bytes"])}. *auto / ran*: the path `linear="auto"` '
            "chooses (read from `sol.stats.linear` of the solve traced by `jax.eval_shape`), and "
            f"the path of the measured solve, `nlls.Krylov(max_steps={big['krylov_max_steps']})`, "
            f"{big['lm_steps']} LM step(s).",
            "",
            table(
                [
                    "residual",
                    "peak RSS",
                    "solver share",
                    f"< {_gigabytes(result['target_peak_bytes'])}",
                    "auto / ran",
                    "setup",
                    "time / LM step",
                    "CGLS iterations",
                    "cost",
                    "load",
                ],
                _scale_big_rows(big),
                "lrrllrrrrr",
            ),
            "",
            f"### n = {wide['n_params']:,} parameters, m = {wide['samples']:,} residuals{quick}",
            "",
            f"MLP {wide_layers} (tanh), float64: J is {_gigabytes(wide['dense_jac_bytes'])}, its "
            f"m×m Gram matrix {_gigabytes(wide['min_norm_gram_bytes'])}. *iterations (accepted)*: "
            f"the m×m runs stop after {wide['lm_steps']} accepted steps (reverse mode: "
            f"{wide['rev_lm_steps']}; its iterates are those of `nlls.fit`), the Krylov runs "
            f"after {wide['equal_time_s']:g} s. *time to cost*: until the cost first reached "
            f"{wide['common_cost']:.3g}, the largest final cost of the `fit` and Krylov runs. The",
            "n×n estimate: J and JᵀJ held, and 2mn² + n³/3 flops (forming JᵀJ, Cholesky) at the",
            "measured float64 rate "
            f"({_long_seconds(wide['normal_estimate']['gram_s'])} + "
            f"{_long_seconds(wide['normal_estimate']['cholesky_s'])}), J's own cost not counted. "
            "*load*: the 1-minute load average when the case's process started.",
            "",
            table(
                [
                    "path",
                    "peak RSS",
                    "solver share",
                    "setup",
                    "time / iteration",
                    "iterations (accepted)",
                    f"cost after {wide['lm_steps']} steps",
                    f"time for {wide['lm_steps']} steps",
                    f"cost at {wide['equal_time_s']:g} s",
                    "time to cost",
                    "load",
                ],
                _scale_wide_rows(wide),
                "lrrrrrrrrrr",
            ),
            "",
            _scale_reading(result),
        ]
    )


def _threads_headline(result: dict) -> str:
    aimed = [row for row in result["rows"] if row["target"]]
    ratios = ", ".join(f"{row['workload']} {ratio(row['default_ratio'])}" for row in aimed)
    worst = max(aimed, key=lambda row: row.get("limit_off_ratio", 0.0))
    return (
        f"- BLAS threads (default environment / `OPENBLAS_NUM_THREADS=1`, aim ≤ "
        f"{result['target_ratio']:g}×): {ratios}; without nlls's limit the {worst['workload']} "
        f"took {ratio(worst.get('limit_off_ratio'))} the 1-thread time."
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


def threads_section(result: dict) -> str:
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
            _run_line(result),
            "",
            f"Command: `{result['command']}`. BLAS libraries of the default environment "
            f"(threadpoolctl): {_blas_line(result['blas'])}.",
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


SECTIONS = {
    "nist": nist_section,
    "minpack": minpack_section,
    "mlp": mlp_section,
    "training": training_section,
    "callbacks": callbacks_section,
    "stochastic": stochastic_section,
    "scale": scale_section,
    "threads": threads_section,
}


def render(results: dict, machine: dict) -> str:
    """The whole of ``BENCHMARKS.md`` from the results available (suites not run are listed)."""
    parts = [header(machine, results), headline(results)]
    for suite in SUITES:
        if suite in results:
            parts.append(SECTIONS[suite](results[suite]))
        else:
            parts.append(f"*Suite `{suite}` not run: `python -m benchmarks --only {suite}`.*")
    return "\n\n".join(parts) + "\n"
