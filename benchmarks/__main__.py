"""Command line: ``python -m benchmarks [--only SUITE ...] [--repeats N] [--quick]``.

Runs the suites asked for (all fourteen by default: nist, minpack, curvefit, mlp, training,
choice, node, callbacks, stochastic, scale, threads, implicit, latency, distributed), prints progress and the markdown report, saves each suite's raw
results to ``bench-out/<suite>.json`` and writes ``BENCHMARKS.md`` at the repository root from every suite
result found in ``bench-out/`` (so the suites can be run one at a time and the report still covers
all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

# Benchmarks compare solvers in float64; the library itself never sets this.
jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for `problems`, the shared problem library

from benchmarks import (  # noqa: E402
    callbacks,
    choice,
    curvefit,
    distributed,
    implicit,
    latency,
    minpack,
    mlp,
    nist,
    node,
    report,
    scale,
    stochastic,
    threads,
    training,
)

# For threads: rounds of fresh processes, every workload under every setting once a round.
DEFAULT_REPEATS = {
    "nist": 5,
    "mlp": 5,
    "callbacks": 5,
    "threads": 3,
    "implicit": 7,
    "latency": latency.ROUNDS,
}
QUICK_REPEATS = {"nist": 1, "mlp": 1, "callbacks": 1, "threads": 1, "implicit": 1, "latency": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark nlls against its peers."
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=report.SUITES,
        default=list(report.SUITES),
        help="suites to run (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per fit after the warm-up call (default: "
        + ", ".join(f"{n} for {suite}" for suite, n in DEFAULT_REPEATS.items())
        + ")",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats: " + ", ".join(f"{n} for {s}" for s, n in QUICK_REPEATS.items()),
    )
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "bench-out", help="raw JSON results (bench-out/)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="markdown report to write"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-fit progress lines")
    return parser.parse_args(argv)


def repeats_for(suite: str, args: argparse.Namespace) -> int:
    """Timed repeats for ``suite``: ``--repeats`` if given, else the quick or default number."""
    if args.repeats is not None:
        return max(1, args.repeats)
    return (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)[suite]


def run_suite(suite: str, args: argparse.Namespace) -> dict:
    """Run one suite and return its results, stamped with date and wall time."""
    verbose = not args.quiet
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    if suite == "nist":
        result = nist.run(repeats=repeats_for(suite, args), verbose=verbose)
    elif suite == "minpack":
        result = minpack.run(verbose=verbose)
    elif suite == "curvefit":
        result = curvefit.run(verbose=verbose, batch=1000 if args.quick else curvefit.BATCH)
    elif suite == "training":
        result = training.run(verbose=verbose)
    elif suite == "node":
        result = node.run(verbose=verbose)
    elif suite == "choice":
        result = choice.run(verbose=verbose)
    elif suite == "callbacks":
        result = callbacks.run(repeats=repeats_for(suite, args), verbose=verbose)
    elif suite == "stochastic":
        result = stochastic.run(verbose=verbose)
    elif suite == "scale":
        result = scale.run(verbose=verbose, quick=args.quick)
    elif suite == "threads":
        result = threads.run(rounds=repeats_for(suite, args), verbose=verbose)
    elif suite == "implicit":
        result = implicit.run(repeats=repeats_for(suite, args), verbose=verbose)
    elif suite == "distributed":
        result = distributed.run(verbose=verbose)
    elif suite == "latency":
        result = latency.run(rounds=repeats_for(suite, args), verbose=verbose)
    else:
        result = mlp.run(repeats=repeats_for(suite, args), verbose=verbose)
    result["wall_s"] = time.perf_counter() - began
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    result["date"] = report.machine_info()["date"]
    return result


def load_saved(out_dir: Path) -> dict:
    """Suite results saved by earlier runs, by suite name."""
    saved = {}
    for suite in report.SUITES:
        path = out_dir / f"{suite}.json"
        if path.exists():
            saved[suite] = json.loads(path.read_text())
    return saved


def main(argv: list[str] | None = None) -> None:
    """Run the suites asked for, save their results, print and write the report."""
    args = parse_args(argv)
    machine = report.machine_info()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for suite in report.SUITES:
        if suite not in args.only:
            continue
        print(f"== {suite}", flush=True)
        result = run_suite(suite, args)
        result["machine"] = machine
        (args.out_dir / f"{suite}.json").write_text(json.dumps(result, indent=1, default=str))
        print(f"== {suite} done in {result['wall_s']:.1f} s", flush=True)
    results = load_saved(args.out_dir)
    text = report.render(results, machine)
    print()
    print(text)
    args.output.write_text(text)
    print(f"wrote {args.output} ({time.perf_counter() - began:.1f} s in all)")


if __name__ == "__main__":
    main()
