"""Markdown building blocks for ``BENCHMARKS.md``, shared by the suites' sections and the report.

Tables, durations, ratios and numbers as the report prints them, and the lines every section
opens with (how the suite was run, the settings each solver was given).
"""

from __future__ import annotations

import math


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


def opening(title: str, result: dict, doc: str | None) -> list[str]:
    """A section's first lines: its title, the run line, and the module docstring after its first
    paragraph (what was measured, and how)."""
    return [f"## {title}", "", run_line(result), "", (doc or "").split("\n\n", 1)[1].strip()]


def run_line(result: dict) -> str:
    """The italic line under a section's title: date, wall time, load and repeats of its run."""
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


def settings_table(settings: dict) -> str:
    """The settings each solver was given, as a two-column table."""
    return table(["Solver", "Given"], [[k, f"`{v}`"] for k, v in settings.items()])


def blas_line(libraries: list[dict]) -> str:
    """The BLAS libraries as threadpoolctl reports them, one clause each."""
    return "; ".join(
        f"`{lib['library']}` ({lib['internal_api']} {lib['version']}, "
        f"{lib['threading_layer']}): {lib['num_threads']} threads"
        for lib in libraries
    )
