"""``BENCHMARKS.md``: the machine header, the headline bullets and the suites' sections, in order.

Each suite module renders its own part from the JSON-able dict its ``run`` returns (as saved in
``bench-out/``): ``headline(result)``, its bullets under *Headline*, and ``render(result)``, its
section. This module only describes the machine and assembles those parts; nothing is measured here.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks import (
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
    scale,
    stochastic,
    threads,
    training,
)
from benchmarks.markdown import blas_line

#: The suite modules, in the order of the report; each has ``run``, ``headline`` and ``render``.
SUITE_MODULES = {
    "nist": nist,
    "minpack": minpack,
    "curvefit": curvefit,
    "mlp": mlp,
    "training": training,
    "choice": choice,
    "node": node,
    "callbacks": callbacks,
    "stochastic": stochastic,
    "scale": scale,
    "threads": threads,
    "implicit": implicit,
    "latency": latency,
    "distributed": distributed,
}
SUITES = tuple(SUITE_MODULES)
COMMAND = "make bench"


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
        "blas": threads.blas_libraries(),
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
            "`python -m benchmarks --only nist|minpack|mlp|training|callbacks|stochastic|scale|threads|implicit`). "
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
            + (blas_line(machine.get("blas", [])) or "none seen")
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
# Assembly
# ----------------------------------------------------------------------------------------------


def headline(results: dict) -> str:
    """The few numbers that summarise each suite, nlls against each peer: every suite's bullets."""
    lines = ["## Headline", ""]
    for suite, module in SUITE_MODULES.items():
        if results.get(suite):
            lines += module.headline(results[suite])
    return "\n".join(lines)


def render(results: dict, machine: dict) -> str:
    """The whole of ``BENCHMARKS.md`` from the results available (suites not run are listed)."""
    parts = [header(machine, results), headline(results)]
    for suite, module in SUITE_MODULES.items():
        if suite in results:
            parts.append(module.render(results[suite]))
        else:
            parts.append(f"*Suite `{suite}` not run: `python -m benchmarks --only {suite}`.*")
    return "\n\n".join(parts) + "\n"
