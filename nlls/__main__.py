"""Command line: ``python -m nlls demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlls", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="fit a built-in example (a damped oscillation with noise) and print a report"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    demo.add_argument("--points", type=int, default=200, help="number of data points (default 200)")
    demo.add_argument(
        "--noise", type=float, default=0.02, help="standard deviation of the noise (default 0.02)"
    )
    options = parser.parse_args(argv)
    if options.command == "demo":
        from ._demo import run_demo

        run_demo(seed=options.seed, points=options.points, noise=options.noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
