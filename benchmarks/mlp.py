"""A wide problem: a 1→20→20→1 tanh MLP (481 parameters) fitted to sin(3x) on 200 points.

With more parameters (481) than residuals (200) this is the underdetermined regime of network
fitting. Every solver gets the same flat float64 parameter vector (initialised with seed 0: weights
normal with variance 1/fan-in, biases zero) and runs 300 Levenberg–Marquardt iterations with its
convergence tests switched off:

- nlls LM: ``ftol = xtol = gtol = 0``, ``max_steps = 300``, everything else default (``jac="auto"``,
  ``linear="auto"``, which pick reverse mode and the m×m min-norm step here). nlls counts accepted
  steps towards ``max_steps`` and rejected ones apart; its iterations are accepted + rejected;
- nlls LM with the per-sample Jacobian: the same, given ``jac=per_sample_jacobian`` (a vmap over
  samples of each sample's gradient, what ``nlls.fit`` builds for a model) instead of differentiating
  the batched residual;
- optimistix LevenbergMarquardt: ``rtol = atol = 0``, ``max_steps = 300``, default QR step solver;
- jaxopt LevenbergMarquardt: ``tol = xtol = gtol = 0``, ``maxiter = 300``, its default matrix-free CG
  step solver.

Reported: time per iteration (median total time after compilation divided by the iterations the
solver actually did; also the fastest repeat, which a busy machine disturbs least) and the final
mean squared error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.markdown import ratio, run_line, seconds, settings_table, table
from benchmarks.peers import Jaxopt, Nlls, Optimistix, time_fits

LAYERS = (1, 20, 20, 1)
POINTS = 200
ITERATIONS = 300
SEED = 0

SETTINGS = {
    "nlls lm": f"method='lm', ftol=xtol=gtol=0, max_steps={ITERATIONS}",
    "nlls lm (per-sample jac)": "the same with jac=per_sample_jacobian (as nlls.fit builds it)",
    "optimistix LevenbergMarquardt": f"rtol=atol=0, max_steps={ITERATIONS}, throw=False",
    "jaxopt LevenbergMarquardt": f"solver=CG (default), tol=xtol=gtol=0, maxiter={ITERATIONS}",
}


def _shapes() -> list[tuple[tuple[int, int], tuple[int]]]:
    """(weight shape, bias shape) per layer; weights are (fan_in, fan_out)."""
    return [((i, o), (o,)) for i, o in zip(LAYERS[:-1], LAYERS[1:], strict=True)]


def n_params() -> int:
    """Number of parameters of the network (481 for 1→20→20→1)."""
    return sum(w[0] * w[1] + b[0] for w, b in _shapes())


def init_params(seed: int = SEED) -> np.ndarray:
    """Flat float64 parameters: weights ~ N(0, 1/fan_in), biases 0, layer by layer."""
    key = jax.random.key(seed)
    pieces = []
    for (fan_in, fan_out), bias_shape in _shapes():
        key, sub = jax.random.split(key)
        weight = jax.random.normal(sub, (fan_in, fan_out), dtype=jnp.float64) / np.sqrt(fan_in)
        pieces += [weight.ravel(), jnp.zeros(bias_shape, dtype=jnp.float64)]
    return np.asarray(jnp.concatenate(pieces))


def mlp(flat: jax.Array, x: jax.Array) -> jax.Array:
    """The network on inputs ``x`` (N,), reading its layers out of the flat parameter vector."""
    h = x[:, None]
    offset = 0
    shapes = _shapes()
    for index, (weight_shape, bias_shape) in enumerate(shapes):
        size = weight_shape[0] * weight_shape[1]
        weight = flat[offset : offset + size].reshape(weight_shape)
        offset += size
        bias = flat[offset : offset + bias_shape[0]]
        offset += bias_shape[0]
        h = h @ weight + bias
        if index < len(shapes) - 1:
            h = jnp.tanh(h)
    return h[:, 0]


def residual(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """``mlp(flat, x) - y``: one residual per data point."""
    return mlp(flat, x) - y


def per_sample_jacobian(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """The (points, parameters) Jacobian of ``residual`` as a vmap over points of each point's
    gradient: the per-sample structure that ``nlls.fit`` exploits."""
    del y

    def one_point(params, xi):
        return mlp(params, xi[None])[0]

    return jax.vmap(jax.grad(one_point), in_axes=(None, 0))(flat, x)


def data() -> tuple[jax.Array, jax.Array]:
    """200 evenly spaced points of sin(3x) on [-1, 1]."""
    x = jnp.linspace(-1.0, 1.0, POINTS, dtype=jnp.float64)
    return x, jnp.sin(3.0 * x)


def solvers() -> list:
    """nlls first (the ratios are nlls with the per-sample Jacobian / other), then the peers, all with tests switched off."""
    return [
        Nlls(
            "lm",
            label="nlls lm (per-sample jac)",
            jac=per_sample_jacobian,
            ftol=0.0,
            xtol=0.0,
            gtol=0.0,
            max_steps=ITERATIONS,
        ),
        Nlls("lm", ftol=0.0, xtol=0.0, gtol=0.0, max_steps=ITERATIONS),
        Optimistix("lm", rtol=0.0, atol=0.0, max_steps=ITERATIONS),
        Jaxopt(maxiter=ITERATIONS, tol=0.0, xtol=0.0, gtol=0.0),
    ]


def iterations(label: str, outcome) -> int:
    """Iterations the solver did: nlls counts rejected steps apart, the peers count them as steps."""
    if label.startswith("nlls"):
        return outcome.steps + outcome.extra["rejected"]
    return outcome.steps


def run(repeats: int = 5, max_time_s: float = 240.0, verbose: bool = True) -> dict:
    """Fit the MLP with every solver; return per-solver times, iterations and final MSE.

    After one warm-up call each, the solvers are timed in up to ``repeats`` interleaved rounds,
    stopping once the rounds have taken ``max_time_s`` (the slowest peer takes most of a round).
    """
    x, y = data()
    x0 = init_params()
    assert x0.size == n_params() == 481
    initial_mse = float(jnp.mean(residual(jnp.asarray(x0), x, y) ** 2))
    solver_list = solvers()
    prepared = [solver.prepare(residual, (x, y)) for solver in solver_list]
    timed = time_fits(prepared, x0, repeats, max_time_s=max_time_s)
    rows = []
    for solver, (outcome, timing) in zip(solver_list, timed, strict=True):
        done = iterations(solver.label, outcome) if outcome.steps is not None else 0
        row = {
            "solver": solver.label,
            "iterations": done,
            "accepted": outcome.steps if solver.label.startswith("nlls") else None,
            "total_s": timing.median_s,
            "times_s": list(timing.times_s),
            "first_s": timing.first_s,
            "per_iteration_s": timing.median_s / done if done else float("nan"),
            "best_per_iteration_s": timing.min_s / done if done else float("nan"),
            "mse": 2.0 * outcome.cost / POINTS,
            "stop": outcome.stop,
            "message": outcome.message,
            "extra": outcome.extra,
        }
        rows.append(row)
        if verbose:
            print(
                f"  {solver.label:30s} {done:4d} iterations  "
                f"{1e3 * row['per_iteration_s']:8.3f} ms/iteration  MSE {row['mse']:.3e}  "
                f"(median of {len(timing.times_s)}: {row['total_s']:.3f} s; "
                f"first call {row['first_s']:.2f} s)",
                flush=True,
            )
    reference = rows[0]
    for row in rows:
        row["per_iteration_ratio"] = reference["per_iteration_s"] / row["per_iteration_s"]
        row["best_per_iteration_ratio"] = (
            reference["best_per_iteration_s"] / row["best_per_iteration_s"]
        )
        row["total_ratio"] = reference["total_s"] / row["total_s"]
        row["mse_ratio"] = reference["mse"] / row["mse"]
    return {
        "settings": SETTINGS,
        "repeats": repeats,
        "layers": list(LAYERS),
        "n_params": n_params(),
        "points": POINTS,
        "initial_mse": initial_mse,
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullets: nlls LM's time per iteration and final MSE, then each peer's."""
    rows = result["rows"]
    lm = rows[0]
    lines = [
        f"- MLP ({result['n_params']} parameters, {result['points']} points): nlls LM "
        f"{seconds(lm['per_iteration_s'])} per iteration, final MSE {lm['mse']:.3g}."
    ]
    for row in rows[1:]:
        lines.append(
            f"  - vs {row['solver']}: {seconds(row['per_iteration_s'])} per iteration, "
            f"final MSE {row['mse']:.3g}; time per iteration nlls / peer = "
            f"{ratio(row['per_iteration_ratio'])} (fastest repeats: "
            f"{ratio(row.get('best_per_iteration_ratio'))})"
        )
    return lines


def render(result: dict) -> str:
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
            run_line(result),
            "",
            f"A {layers} tanh MLP ({result['n_params']} parameters) fitted to sin(3x) on "
            f"{result['points']} evenly spaced points of [−1, 1] (seed-0 init, initial MSE "
            f"{result['initial_mse']:.3g}); 300 iterations with the convergence tests off. *time /",
            "iteration* = median total time after compilation / iterations done (*fastest repeat*:",
            "the same with the fastest timed repeat, the one a busy machine disturbed least); nlls",
            "counts rejected steps apart from its `max_steps`, so its iterations are accepted +",
            "rejected.",
            "",
            settings_table(result["settings"]),
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
