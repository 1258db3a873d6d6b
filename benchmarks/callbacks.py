"""The cost of callbacks: the segmented host driver against the single compiled solve.

Without callbacks ``nlls.least_squares`` runs the whole solve as one compiled program. With them, a
host driver runs the same compiled loop ``callback_every`` iterations at a time and calls every
callback with a ``StepInfo`` between segments; each segment costs one dispatch of the compiled
segment, one transfer of a few scalars to the host and the callbacks themselves. This suite measures
that overhead on two problems at both ends of the cost of an iteration:

- the 481-parameter MLP of :mod:`benchmarks.mlp` (``MLP_STEPS`` accepted steps with the convergence
  tests off, milliseconds per iteration);
- the NIST set ``NIST_NAME`` from its first start with the tolerances of :mod:`benchmarks.nist`
  (a few dozen iterations of microseconds each).

Each problem is solved with every variant of :func:`variants` (no callbacks; ``History`` +
``ProgressBar`` after every iteration, the bar quiet as it is by default when stderr is not a
terminal, or forced to draw into an in-memory ``io.StringIO``; ``History`` every 10 iterations;
``History`` with one segment for the whole solve). The variants are timed as the solvers of the
other suites are (:func:`benchmarks.peers.time_fits`: one warm-up call each, then interleaved
rounds), and compared with no callbacks both as a ratio of medians and as the median of the
per-round ratios (*paired*, steadier on a busy machine). The callbacks are built afresh for every
call.

The iterates do not depend on how the solve is cut, so every variant must end at the same parameters
bit for bit, after the same numbers of steps and evaluations; the suite checks and reports that.
It also times the callbacks alone, called on prepared ``StepInfo`` values, to split the overhead
between the callbacks and the driver (dispatch, transfer, building the ``StepInfo``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks import mlp, nist
from benchmarks.markdown import ratio, run_line, seconds, table
from benchmarks.peers import Outcome, PreparedFit, nlls_outcome, time_fits

#: Accepted steps of the MLP fit (its tolerances are 0, so every variant does exactly these).
MLP_STEPS = 100

#: Rounds of the MLP per repeat asked for: an overhead of a few per cent is within the noise of a
#: shared machine, so it gets more rounds than the other suites' fits (about 1 s per call).
MLP_ROUNDS_PER_REPEAT = 3

#: The NIST data set (fitted from its first start) and its rounds per repeat asked for: a fit takes
#: about a millisecond, so many rounds are cheap and steady the median.
NIST_NAME = "Hahn1"
NIST_ROUNDS_PER_REPEAT = 20

#: The overhead the project aims at: History + ProgressBar after every iteration on the MLP.
TARGET_OVERHEAD = 0.10

#: Calls of the callbacks when they are timed alone.
ISOLATED_CALLS = 2000

#: callback_every of the variant that runs the whole solve as one segment.
ONE_SEGMENT = 10**9


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of calling ``least_squares``: a label, a factory of fresh callbacks, the period."""

    key: str
    label: str
    make: Callable[[], list]
    every: int = 1


def _quiet_bar() -> Any:
    return nlls.ProgressBar()


def _drawing_bar() -> Any:
    return nlls.ProgressBar(file=io.StringIO(), disable=False)


def variants() -> list[Variant]:
    """The variants timed on every problem; the first (no callbacks) is the reference."""
    quiet = "quiet" if not sys.stderr.isatty() else "drawing to the terminal"
    return [
        Variant("none", "no callbacks (one compiled program)", list),
        Variant(
            "history_bar",
            f"History + ProgressBar() ({quiet}), every 1",
            lambda: [nlls.History(), _quiet_bar()],
        ),
        Variant(
            "history_bar_drawing",
            "History + ProgressBar drawing to io.StringIO, every 1",
            lambda: [nlls.History(), _drawing_bar()],
        ),
        Variant("history_every_10", "History, every 10", lambda: [nlls.History()], every=10),
        Variant(
            "history_one_segment",
            "History, one segment (callback_every=10⁹)",
            lambda: [nlls.History()],
            every=ONE_SEGMENT,
        ),
    ]


def _prepare(variant: Variant, residual, args: tuple, options: dict) -> PreparedFit:
    """A :class:`PreparedFit` calling ``nlls.least_squares`` with fresh callbacks of ``variant``."""

    def solve(start):
        callbacks = variant.make()
        sol = nlls.least_squares(
            residual,
            start,
            args=args,
            callbacks=callbacks,
            callback_every=variant.every,
            **options,
        )
        jax.block_until_ready((sol.params, sol.cost))
        return sol

    def outcome(sol) -> Outcome:
        history = sol.history
        return nlls_outcome(
            sol,
            np.asarray(sol.params),
            float(sol.cost),
            history_rows=None if history is None else len(history),
        )

    return PreparedFit(convert=jnp.asarray, solve=solve, outcome=outcome)


def time_callbacks_alone(
    make: Callable[[], list], info: nlls.StepInfo, calls: int = ISOLATED_CALLS
) -> float:
    """Seconds per between-segment call of the callbacks ``make()``, called on prepared infos.

    The callbacks are started with ``on_start`` on ``info`` at step 0, then called ``calls`` times
    with the step count going up by one each time (as after accepted steps, so a bar has something
    to draw), then ended; only the calls in between are timed.
    """
    infos = [
        dataclasses.replace(info, step=i, iteration=i, max_steps=calls) for i in range(calls + 1)
    ]
    callbacks = make()
    for callback in callbacks:
        if hasattr(callback, "on_start"):
            callback.on_start(infos[0])
    began = time.perf_counter()
    for current in infos[1:]:
        for callback in callbacks:
            callback(current)
    elapsed = time.perf_counter() - began
    for callback in callbacks:
        if hasattr(callback, "on_end"):
            callback.on_end(infos[-1])
    return elapsed / calls


def _sample_info(x0: jax.Array, steps: int) -> nlls.StepInfo:
    """A ``StepInfo`` like those a solve hands its callbacks (parameters as a JAX array)."""
    return nlls.StepInfo(
        step=0,
        iteration=0,
        params=x0,
        cost=1.2345,
        grad_norm=6.789e-3,
        damping=1e-3,
        step_norm=0.1,
        accepted=True,
        nfev=1,
        njev=1,
        time=0.0,
        status=nlls.Status.RUNNING,
        max_steps=steps,
    )


def _paired_ratio(times: tuple[float, ...], reference: tuple[float, ...]) -> float:
    """Median over the rounds of time / reference time in the same round (NaN without rounds).

    The variants are timed in interleaved rounds, so the two calls of a round ran under much the
    same machine load; this ratio is steadier than the ratio of the medians on a busy machine.
    """
    ratios = [t / r for t, r in zip(times, reference, strict=False) if r > 0]
    return statistics.median(ratios) if ratios else float("nan")


def _segments(iterations: int, every: int) -> int:
    """Compiled segments a solve of ``iterations`` iterations is cut into."""
    return max(1, math.ceil(iterations / every))


def measure(
    name: str,
    residual,
    args: tuple,
    x0: np.ndarray,
    options: dict,
    repeats: int,
    max_time_s: float,
    verbose: bool,
) -> dict:
    """Time every variant on one problem; return rows, identity checks and the isolated costs."""
    variant_list = variants()
    prepared = [_prepare(v, residual, args, options) for v in variant_list]
    timed = time_fits(prepared, x0, repeats, max_time_s=max_time_s)
    reference_outcome, reference_timing = timed[0]
    iterations = reference_outcome.steps + reference_outcome.extra["rejected"]
    rows = []
    for variant, (outcome, timing) in zip(variant_list, timed, strict=True):
        segments = 0 if variant.key == "none" else _segments(iterations, variant.every)
        extra_s = timing.median_s - reference_timing.median_s
        fastest_extra_s = timing.min_s - reference_timing.min_s
        row = {
            "key": variant.key,
            "variant": variant.label,
            "callback_every": None if variant.key == "none" else variant.every,
            "segments": segments,
            "median_s": timing.median_s,
            "min_s": timing.min_s,
            "times_s": list(timing.times_s),
            "first_s": timing.first_s,
            "ratio": timing.median_s / reference_timing.median_s,
            "fastest_ratio": timing.min_s / reference_timing.min_s,
            "paired_ratio": _paired_ratio(timing.times_s, reference_timing.times_s),
            "per_iteration_s": timing.median_s / iterations,
            "per_segment_overhead_s": extra_s / segments if segments else None,
            "fastest_per_segment_overhead_s": fastest_extra_s / segments if segments else None,
            "steps": outcome.steps,
            "rejected": outcome.extra.get("rejected"),
            "nfev": outcome.nfev,
            "njev": outcome.njev,
            "history_rows": outcome.extra.get("history_rows"),
            "stop": outcome.stop,
            "params_identical": bool(np.array_equal(outcome.x, reference_outcome.x)),
            "counts_equal": (
                outcome.steps == reference_outcome.steps
                and outcome.extra.get("rejected") == reference_outcome.extra["rejected"]
                and outcome.nfev == reference_outcome.nfev
                and outcome.njev == reference_outcome.njev
            ),
        }
        rows.append(row)
        if verbose:
            overhead = row["per_segment_overhead_s"]
            print(
                f"  {name:8s} {variant.label:52s} {1e3 * timing.median_s:9.2f} ms "
                f"({row['ratio']:.3f}×; paired {row['paired_ratio']:.3f}×; "
                f"fastest {row['fastest_ratio']:.3f}×)  "
                + ("" if overhead is None else f"{1e6 * overhead:8.1f} µs/segment  ")
                + f"identical={row['params_identical'] and row['counts_equal']}",
                flush=True,
            )
    one = next(r for r in rows if r["key"] == "history_one_segment")
    for row in rows:
        # Beyond the driver's fixed cost (three compiled programs instead of one, whatever the
        # number of segments), measured by the one-segment variant.
        more = row["segments"] - one["segments"]
        row["marginal_per_segment_s"] = (
            (row["median_s"] - one["median_s"]) / more if row["segments"] and more > 0 else None
        )
    info = _sample_info(jnp.asarray(x0), ISOLATED_CALLS)
    alone = {
        "history": time_callbacks_alone(lambda: [nlls.History()], info),
        "history_bar": time_callbacks_alone(lambda: [nlls.History(), _quiet_bar()], info),
        "history_bar_drawing": time_callbacks_alone(lambda: [nlls.History(), _drawing_bar()], info),
    }
    if verbose:
        print(
            f"  {name:8s} callbacks alone per call: "
            + ", ".join(f"{k} {1e6 * v:.1f} µs" for k, v in alone.items()),
            flush=True,
        )
    return {
        "problem": name,
        "iterations": iterations,
        "steps": reference_outcome.steps,
        "rejected": reference_outcome.extra["rejected"],
        "n_params": int(np.size(x0)),
        "stop": reference_outcome.stop,
        "rows": rows,
        "callbacks_alone_s": alone,
        "all_identical": all(r["params_identical"] and r["counts_equal"] for r in rows),
    }


def run(repeats: int = 5, max_time_s: float = 180.0, verbose: bool = True) -> dict:
    """Measure the callback overhead on the MLP and on one NIST fit; return a JSON-able dict."""
    from problems import load_nist

    x, y = mlp.data()
    mlp_options = {"method": "lm", "ftol": 0.0, "xtol": 0.0, "gtol": 0.0, "max_steps": MLP_STEPS}
    problems = [
        measure(
            f"MLP ({mlp.n_params()} parameters)",
            mlp.residual,
            (x, y),
            mlp.init_params(),
            mlp_options,
            repeats * MLP_ROUNDS_PER_REPEAT,
            max_time_s,
            verbose,
        )
    ]
    problem = load_nist(NIST_NAME)
    tight = nist.TIGHT
    nist_options = {
        "method": "lm",
        "ftol": tight,
        "xtol": tight,
        "gtol": tight,
        "max_steps": nist.BUDGET,
    }
    problems.append(
        measure(
            f"NIST {NIST_NAME} ({problem.start1.size} parameters, {problem.y.size} points)",
            problem.residual,
            (jnp.asarray(problem.x), jnp.asarray(problem.y)),
            np.asarray(problem.start1, dtype=np.float64),
            nist_options,
            repeats * NIST_ROUNDS_PER_REPEAT,
            max_time_s,
            verbose,
        )
    )
    main = next(r for r in problems[0]["rows"] if r["key"] == "history_bar")
    return {
        "repeats": repeats,
        "mlp_rounds": repeats * MLP_ROUNDS_PER_REPEAT,
        "nist_rounds": repeats * NIST_ROUNDS_PER_REPEAT,
        "mlp_steps": MLP_STEPS,
        "nist_name": NIST_NAME,
        "target_overhead": TARGET_OVERHEAD,
        "isolated_calls": ISOLATED_CALLS,
        "stderr_is_terminal": sys.stderr.isatty(),
        "settings": {
            "MLP": (
                f"method='lm', ftol=xtol=gtol=0, max_steps={MLP_STEPS}; data, start and residual "
                "of benchmarks/mlp.py"
            ),
            f"NIST {NIST_NAME}": (
                f"method='lm', ftol=xtol=gtol={tight:g}, max_steps={nist.BUDGET}; start 1 "
                "(as benchmarks/nist.py)"
            ),
        },
        "problems": problems,
        # Judged on the paired ratio, the steadiest of the three on a shared machine.
        "target_met": main["paired_ratio"] - 1.0 <= TARGET_OVERHEAD,
        "target_met_median": main["ratio"] - 1.0 <= TARGET_OVERHEAD,
        "target_met_fastest": main["fastest_ratio"] - 1.0 <= TARGET_OVERHEAD,
    }


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullet: History + ProgressBar after every iteration, on the MLP and on NIST."""
    mlp_problem, nist_problem = result["problems"][0], result["problems"][-1]
    main = _callback_row(mlp_problem, "history_bar")
    small = _callback_row(nist_problem, "history_bar")
    line = (
        f"- Callbacks (History + ProgressBar after every iteration): "
        f"{_percent(main.get('paired_ratio'))} on the MLP, paired "
        f"({'meets' if result['target_met'] else 'misses'} the ≤ "
        f"{100 * result['target_overhead']:g} % target), "
        f"{seconds(main['per_segment_overhead_s'])} per segment; on NIST "
        f"{result['nist_name']} {ratio(small['ratio'])} the time without callbacks "
        f"({seconds(small['per_segment_overhead_s'])} per segment against "
        f"{seconds(nist_problem['rows'][0]['per_iteration_s'])} per iteration)."
    )
    return [line]


def render(result: dict) -> str:
    """Time of each callback variant against no callbacks, per problem, and the verdict."""
    parts = [
        "## Callback overhead",
        "",
        run_line(result),
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


def _callbacks_verdict(result: dict) -> list[str]:
    """Sentences on the target (MLP) and on what dominates on the small NIST fit."""
    target = 100 * result["target_overhead"]
    mlp_problem, nist_problem = result["problems"][0], result["problems"][-1]
    main = _callback_row(mlp_problem, "history_bar")
    drawing = _callback_row(mlp_problem, "history_bar_drawing")
    met = "met" if result["target_met"] else "not met"
    few = result.get("mlp_rounds", 0) < 10
    lines = [
        f"**Target** (at most {target:g} % overhead on the MLP with History + ProgressBar after "
        f"every iteration): **{met}** on the paired ratio, {_percent(main.get('paired_ratio'))} "
        f"(ratio of the medians {_percent(main['ratio'])}, {seconds(main['median_s'])} against "
        f"{seconds(mlp_problem['rows'][0]['median_s'])} for {mlp_problem['iterations']} "
        f"iterations; fastest repeats {_percent(main['fastest_ratio'])}); "
        f"{_signed(main['per_segment_overhead_s'])} per segment against "
        f"{seconds(mlp_problem['rows'][0]['per_iteration_s'])} per iteration without callbacks. "
        f"With the bar drawing into a StringIO: {_percent(drawing.get('paired_ratio'))} paired."
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
    none = nist_problem["rows"][0]
    small = _callback_row(nist_problem, "history_bar")
    per_iteration = none["per_iteration_s"]
    per_segment = small["per_segment_overhead_s"]
    if per_segment is not None and per_segment > per_iteration:
        lines.append(
            f"On NIST {result['nist_name']} an iteration takes only {seconds(per_iteration)} "
            f"without callbacks, while each segment adds {seconds(per_segment)}, so the "
            f"per-segment cost (dispatch of the compiled segment, two small device→host transfers, "
            f"the callbacks) dominates: the solve takes {ratio(small['ratio'])} as long with callbacks "
            "after every iteration "
            f"({ratio(_callback_row(nist_problem, 'history_every_10')['ratio'])} "
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


def _callback_row(problem: dict, key: str) -> dict:
    return next(row for row in problem["rows"] if row["key"] == key)


def _percent(value: float | None) -> str:
    """A ratio such as 1.083 as an overhead, ``+8.3 %``."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * (value - 1):+.1f} %"


def _signed(value: float | None) -> str:
    """A duration that may be negative (an overhead lost in the noise)."""
    if value is None or not math.isfinite(value):
        return "—"
    return seconds(value) if value >= 0 else "−" + seconds(-value)


def _every(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0e}" if value >= 10**6 else str(value)
