"""The built-in demo: fit a damped oscillation to noisy data it generates itself."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import least_squares
from .termination import Status

TRUE_PARAMS = {"amplitude": 1.7, "decay": 0.35, "frequency": 2.2, "phase": 0.6, "offset": 0.15}
START = {"amplitude": 1.0, "decay": 0.1, "frequency": 2.0, "phase": 0.0, "offset": 0.0}


def oscillation(p, t):
    return (
        p["amplitude"] * jnp.exp(-p["decay"] * t) * jnp.cos(p["frequency"] * t + p["phase"])
        + (p["offset"])
    )


def residual(p, t, y):
    return oscillation(p, t) - y


def run_demo(seed: int = 0, points: int = 200, noise: float = 0.02) -> None:
    with jax.enable_x64(True):
        t = jnp.linspace(0.0, 10.0, points)
        rng = np.random.default_rng(seed)
        truth = {k: jnp.asarray(v) for k, v in TRUE_PARAMS.items()}
        y = oscillation(truth, t) + noise * jnp.asarray(rng.standard_normal(points))
        start = {k: jnp.asarray(v) for k, v in START.items()}
        print(
            f"nlls demo: y = A·exp(−k t)·cos(ω t + φ) + c, {points} points, noise σ = {noise}, "
            f"seed {seed}\n"
        )
        rows = []
        for method in ("lm", "gn", "dogleg"):
            least_squares(residual, start, args=(t, y), method=method)  # compile
            began = time.perf_counter()
            sol = least_squares(residual, start, args=(t, y), method=method)
            jax.block_until_ready(sol)
            elapsed = time.perf_counter() - began
            rows.append((method, sol, elapsed))
        print(
            f"{'method':8} {'status':18} {'steps':>5} {'nfev':>5} {'rejected':>8} "
            f"{'½‖r‖²':>12} {'time':>9}"
        )
        for method, sol, elapsed in rows:
            status = Status(int(sol.status)).name
            print(
                f"{method:8} {status:18} {int(sol.stats.steps):5d} {int(sol.stats.nfev):5d} "
                f"{int(sol.stats.rejected):8d} {float(sol.cost):12.6e} {elapsed * 1e3:7.2f} ms"
            )
        best = rows[0][1]
        # Standard errors from the covariance s²(JᵀJ)⁻¹, s² = ‖r‖²/(m − n), at the LM solution.
        flat, unravel = ravel_pytree(best.params)
        jac = jax.jacfwd(lambda q: residual(unravel(q), t, y))(flat)
        covariance = 2 * best.cost / (points - flat.size) * jnp.linalg.inv(jac.T @ jac)
        errors = np.sqrt(np.diag(np.asarray(covariance)))
        print(f"\nLevenberg–Marquardt fit ({Status(int(best.status)).message}):")
        print(f"{'parameter':10} {'true':>8} {'start':>8} {'fitted':>10} {'± std err':>10}")
        for (name, value), error in zip(best.params.items(), errors, strict=True):
            print(
                f"{name:10} {TRUE_PARAMS[name]:8.3f} {START[name]:8.3f} {float(value):10.5f} "
                f"{error:10.5f}"
            )
        rms = float(jnp.sqrt(2 * best.cost / points))
        print(
            f"\nresidual RMS {rms:.5f} (noise σ {noise}); gradient ‖Jᵀr‖∞ "
            f"{float(jnp.max(jnp.abs(best.grad))):.2e}"
        )
