"""Command line: ``python -m nlls demo``, ``python -m nlls --version``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="python -m nlls", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nlls {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a neural ODE (Lotka–Volterra UDE) by LM, Adam and Adam → L-BFGS",
        description="Train the Lotka–Volterra universal differential equation (354-parameter "
        "network, 21 noisy observations) by Levenberg–Marquardt, Adam, and Adam followed by "
        "L-BFGS; print a table and draw loss against wall time and the fitted trajectories.",
    )
    demo.add_argument(
        "--method",
        nargs="+",
        choices=("lm", "adam", "adam+lbfgs"),
        default=["lm", "adam", "adam+lbfgs"],
        help="training recipes to run (default: all three)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of data and network (default 0)")
    demo.add_argument("--steps", type=int, default=200, help="LM steps (default 200)")
    demo.add_argument("--adam-steps", type=int, default=5000, help="Adam steps (default 5000)")
    demo.add_argument(
        "--lbfgs-steps", type=int, default=1000, help="L-BFGS steps after Adam (default 1000)"
    )
    demo.add_argument(
        "--learning-rate", type=float, default=3e-2, help="Adam's learning rate (default 3e-2)"
    )
    demo.add_argument(
        "--output", default="nlls-demo.png", help="figure to write (default nlls-demo.png)"
    )
    options = parser.parse_args(argv)
    if options.command == "demo":
        import jax

        jax.config.update("jax_enable_x64", True)  # the command line's choice, not the library's
        from ._demo import run_demo

        run_demo(
            methods=tuple(options.method),
            seed=options.seed,
            lm_steps=options.steps,
            adam_steps=options.adam_steps,
            lbfgs_steps=options.lbfgs_steps,
            learning_rate=options.learning_rate,
            output=options.output,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
