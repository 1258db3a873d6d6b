"""Training models: time to a target MSE, and the MSE reached in equal wall time, for nlls LM against
first-order training (optax Adam and L-BFGS) and the JAX least-squares peers.

Problems:

- *wide MLP*: the 1→20→20→1 tanh MLP of the ``mlp`` suite (481 parameters, 200 points of sin(3x)),
  target MSE 1e-8;
- *tall MLP*: a 1→32→32→1 tanh MLP (1153 parameters) on 20,000 points of
  ``sin(3x) + 0.3 cos(10x)`` on [−1, 1], target MSE 1e-6;
- *demo*: the Lotka–Volterra universal differential equation of ``python -m nlls demo``; its target
  is the final training loss of the Adam → L-BFGS recipe, as the demo measures it (run by the demo
  module itself and reported beside these).

Protocol (the same for every method, so that no method pays for another's way of reporting):

- every run is a fresh fit from the same start with a budget of ``b`` steps (accepted steps for
  nlls, iterations for the peers, optimiser updates for Adam and L-BFGS) and no callbacks, timed
  after a warm-up call that compiles its program (a call with the same budget for the peers, whose
  step limit is static and compiles anew; a one-step call for nlls and the optax baselines, which
  take the budget as data), so compilation is excluded for every method;
- the budget doubles from a small start until the final MSE is at or below the target, or a run takes
  longer than the method's time cap; the last bracket is then bisected three times;
- *time to target* is the wall time of the smallest budget found that reaches the target;
- *MSE in equal time*: the best MSE of the runs of each method that took no longer than nlls LM's
  time to target (or than LM's longest run, when LM did not reach it).

Solver settings: nlls LM through ``nlls.fit`` (per-sample Jacobian, ``ftol = xtol = gtol = 0``, the
budget as ``max_steps``); Adam (``nlls.baselines.adam``, optax, learning rate 1e-3 and 1e-2, the
better reported) and L-BFGS (``nlls.baselines.lbfgs``, optax's L-BFGS with its zoom line search),
full batch, minimising the MSE; optimistix ``LevenbergMarquardt`` (``rtol = atol = 0``) and jaxopt
``LevenbergMarquardt`` (matrix-free CG, ``tol = 0``) on the flat residual, each inside one
``jax.jit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks.markdown import ratio, run_line, seconds, table

BISECTIONS = 3


@dataclass(frozen=True)
class MLPProblem:
    """A tanh MLP ``layers`` on flat parameters, fitted to ``target(x)`` on ``points`` points."""

    name: str
    layers: tuple[int, ...]
    points: int
    target_mse: float
    function: Callable
    time_cap_s: float
    first_budget: int

    def shapes(self):
        return [((i, o), (o,)) for i, o in zip(self.layers[:-1], self.layers[1:], strict=True)]

    @property
    def n_params(self) -> int:
        return sum(w[0] * w[1] + b[0] for w, b in self.shapes())

    def init(self, seed: int = 0) -> jax.Array:
        """Weights ~ N(0, 1/fan_in), biases 0, layer by layer (as the ``mlp`` suite)."""
        key = jax.random.key(seed)
        pieces = []
        for (fan_in, fan_out), bias in self.shapes():
            key, sub = jax.random.split(key)
            weight = jax.random.normal(sub, (fan_in, fan_out), dtype=jnp.float64)
            pieces += [(weight / np.sqrt(fan_in)).ravel(), jnp.zeros(bias, jnp.float64)]
        return jnp.concatenate(pieces)

    def apply(self, flat: jax.Array, x: jax.Array) -> jax.Array:
        """The network on a batch ``x`` of shape (N,)."""
        h = x[:, None]
        offset = 0
        shapes = self.shapes()
        for index, ((fan_in, fan_out), bias) in enumerate(shapes):
            weight = flat[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out)
            offset += fan_in * fan_out
            h = h @ weight + flat[offset : offset + bias[0]]
            offset += bias[0]
            if index < len(shapes) - 1:
                h = jnp.tanh(h)
        return h[:, 0]

    def one(self, flat: jax.Array, xi: jax.Array) -> jax.Array:
        """The network on one point (the per-sample model ``nlls.fit`` takes)."""
        return self.apply(flat, xi[None])[0]

    def residual(self, flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return self.apply(flat, x) - y

    def data(self):
        x = jnp.linspace(-1.0, 1.0, self.points, dtype=jnp.float64)
        return x, self.function(x)


PROBLEMS = (
    MLPProblem(
        "wide MLP",
        (1, 20, 20, 1),
        200,
        1e-8,
        lambda x: jnp.sin(3.0 * x),
        time_cap_s=20.0,
        first_budget=8,
    ),
    MLPProblem(
        "tall MLP",
        (1, 32, 32, 1),
        20_000,
        1e-6,
        lambda x: jnp.sin(3.0 * x) + 0.3 * jnp.cos(10.0 * x),
        time_cap_s=25.0,
        first_budget=4,
    ),
)


def _nlls_fit(problem: MLPProblem, method: str, **options) -> Callable:
    x, y = problem.data()

    def run(budget: int, start):
        result = nlls.fit(
            (problem.one, start), x, y, method=method, max_steps=budget, history=False, **options
        )
        return jax.block_until_ready(result.model[1])

    return run


def _optimistix(problem: MLPProblem) -> Callable:
    import optimistix as optx

    x, y = problem.data()
    compiled = {}

    def run(budget: int, start):
        if budget not in compiled:
            solver = optx.LevenbergMarquardt(rtol=0.0, atol=0.0)

            def solve(y0, data):
                return optx.least_squares(
                    lambda p, d: problem.residual(p, *d),
                    solver,
                    y0,
                    data,
                    max_steps=budget,
                    throw=False,
                ).value

            compiled[budget] = jax.jit(solve)
        return jax.block_until_ready(compiled[budget](start, (x, y)))

    run.static_budget = True
    return run


def _jaxopt(problem: MLPProblem) -> Callable:
    import jaxopt

    x, y = problem.data()
    compiled = {}

    def run(budget: int, start):
        if budget not in compiled:
            solver = jaxopt.LevenbergMarquardt(
                residual_fun=problem.residual, maxiter=budget, tol=0.0, xtol=0.0, gtol=0.0
            )
            compiled[budget] = jax.jit(solver.run)
        return jax.block_until_ready(compiled[budget](start, x, y).params)

    run.static_budget = True
    return run


def methods(problem: MLPProblem) -> dict[str, Callable]:
    """Every method as ``run(budget, start) -> flat params``; nlls LM first (the reference)."""
    return {
        "nlls LM (fit)": _nlls_fit(problem, "lm", ftol=0.0, xtol=0.0, gtol=0.0),
        "optax Adam lr=1e-3": _nlls_fit(problem, "adam", learning_rate=1e-3),
        "optax Adam lr=1e-2": _nlls_fit(problem, "adam", learning_rate=1e-2),
        "optax L-BFGS": _nlls_fit(problem, "lbfgs", gtol=0.0),
        "optimistix LM": _optimistix(problem),
        "jaxopt LM (CG)": _jaxopt(problem),
    }


def _timed(run: Callable, budget: int, start) -> float:
    """Seconds of one ``run(budget, start)`` after a warm-up: a call with this budget when the
    budget is static (compiled into the program: optimistix, jaxopt), a one-step call otherwise
    (nlls and the optax baselines take the budget as data and compile once)."""
    run(budget if getattr(run, "static_budget", False) else 1, start)
    tic = time.perf_counter()
    run(budget, start)
    return time.perf_counter() - tic


def search(run: Callable, mse: Callable, target: float, cap_s: float, first: int, start):
    """Budgets doubling from ``first`` until the target MSE is reached or a run exceeds ``cap_s``,
    then bisected; returns every run as (budget, seconds, mse) and the first budget that reached it."""
    runs = {}

    def attempt(budget: int):
        seconds = _timed(run, budget, start)
        runs[budget] = (seconds, mse(run(budget, start)))
        return runs[budget]

    budget, below = first, 0
    while True:
        seconds, value = attempt(budget)
        if value <= target:
            break
        if seconds > cap_s:
            return runs, None
        below, budget = budget, budget * 2
    above = budget
    for _ in range(BISECTIONS):
        if above - below <= 1:
            break
        middle = (above + below) // 2
        if attempt(middle)[1] <= target:
            above = middle
        else:
            below = middle
    return runs, above


def _mse_function(problem: MLPProblem) -> Callable:
    x, y = problem.data()
    compiled = jax.jit(lambda flat: jnp.mean(problem.residual(flat, x, y) ** 2))
    return lambda flat: float(compiled(jnp.asarray(flat)))


def demo_problem(verbose: bool = True, seed: int = 0) -> dict:
    """The demo's neural ODE: LM, Adam and Adam → L-BFGS as the demo runs them (times from their
    Histories, compilation excluded, callbacks included), and optimistix LM by the budget protocol
    on the same shooting residual in forward mode (its Jacobian is built by JVPs)."""
    from nlls import _demo, ode

    data = _demo.make_data(seed)
    residuals = data.ys.size

    def fresh(name):
        return _demo.Run(name, model=_demo.make_field(seed, data.ys.dtype))

    lm = _demo.train_stage(fresh("nlls LM"), "lm", data, max_steps=200)
    adam = _demo.train_stage(
        fresh("optax Adam lr=3e-2"), "adam", data, max_steps=5000, learning_rate=3e-2
    )
    adam_lbfgs = _demo.train_stage(
        adam.continued("optax Adam → L-BFGS"), "lbfgs", data, max_steps=1000
    )
    target = min(adam.mse[-1], adam_lbfgs.mse[-1])
    rows = []
    for recipe in (lm, adam, adam_lbfgs):
        rows.append(
            {
                "method": recipe.name,
                "steps": recipe.steps,
                "final_mse": recipe.mse[-1],
                "time_s": recipe.times[-1],
                "time_to_target_s": recipe.time_to(target),
            }
        )
    residual, params0, args = ode.shooting_residual(
        _demo.make_field(seed, data.ys.dtype),
        data.ts,
        data.ys,
        physics=_demo.known_terms,
        rtol=_demo.ODE_TOLERANCE,
        atol=_demo.ODE_TOLERANCE,
        mode="fwd",
    )

    def flat_residual(params, data_args):
        return jax.flatten_util.ravel_pytree(residual(params, *data_args))[0]

    mse_compiled = eqx.filter_jit(lambda p: jnp.mean(flat_residual(p, args) ** 2))
    compiled = {}

    def optimistix_run(budget, start):
        import optimistix as optx

        if budget not in compiled:
            solver = optx.LevenbergMarquardt(rtol=0.0, atol=0.0)
            compiled[budget] = eqx.filter_jit(
                lambda y0, a: (
                    optx.least_squares(
                        flat_residual, solver, y0, a, max_steps=budget, throw=False
                    ).value
                )
            )
        return jax.block_until_ready(compiled[budget](start, args))

    optimistix_run.static_budget = True
    try:
        runs, reached = search(
            optimistix_run, lambda p: float(mse_compiled(p)), target, 30.0, 32, params0
        )
        rows.append(
            {
                "method": "optimistix LM",
                "steps": reached,
                "final_mse": min(m for _, m in runs.values()),
                "time_s": max(s for s, _ in runs.values()),
                "time_to_target_s": runs[reached][0] if reached else math.nan,
                "runs": sorted((b, s, m) for b, (s, m) in runs.items()),
            }
        )
    except Exception as error:  # noqa: BLE001 - a benchmark records failures
        rows.append({"method": "optimistix LM", "error": str(error).splitlines()[0][:200]})
    reference = rows[0]["time_to_target_s"]
    for row in rows:
        row["time_ratio"] = row.get("time_to_target_s", math.nan) / reference
        if verbose:
            print(
                f"    {row['method']:22s} time to target {row.get('time_to_target_s', math.nan):.3f}"
                f" s, final MSE {row.get('final_mse', math.nan):.3g}",
                flush=True,
            )
    return {
        "problem": "demo (Lotka–Volterra UDE)",
        "n_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params0))),
        "residuals": residuals,
        "target_mse": target,
        "rows": rows,
    }


def run(verbose: bool = True) -> dict:
    """Every method on every problem; see the module docstring for the protocol."""
    results = []
    for problem in PROBLEMS:
        mse = _mse_function(problem)
        start = problem.init()
        if verbose:
            print(
                f"  {problem.name}: {problem.n_params} parameters, {problem.points} points, "
                f"target MSE {problem.target_mse:g}",
                flush=True,
            )
        rows = []
        for label, runner in methods(problem).items():
            try:
                runs, reached = search(
                    runner, mse, problem.target_mse, problem.time_cap_s, problem.first_budget, start
                )
            except Exception as error:  # noqa: BLE001 - a benchmark records failures
                message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                rows.append({"method": label, "error": message, "runs": []})
                print(f"    {label}: raised {message}", flush=True)
                continue
            row = {
                "method": label,
                "runs": sorted((b, s, m) for b, (s, m) in runs.items()),
                "budget_to_target": reached,
                "time_to_target_s": runs[reached][0] if reached else math.nan,
                "best_mse": min(m for _, m in runs.values()),
            }
            rows.append(row)
            if verbose:
                got = (
                    f"target in {row['time_to_target_s']:.3f} s ({reached} steps)"
                    if reached
                    else f"target not reached (best MSE {row['best_mse']:.3g})"
                )
                print(f"    {label:22s} {got}", flush=True)
        reference = rows[0]
        lm_reached = math.isfinite(reference.get("time_to_target_s", math.nan))
        equal_time = reference.get("time_to_target_s", math.nan)
        if not lm_reached:  # LM did not reach the target: its longest run
            equal_time = max((s for _, s, _ in reference["runs"]), default=math.nan)
        for row in rows:
            within = [(b, s, m) for b, s, m in row.get("runs", []) if s <= equal_time]
            row["mse_in_equal_time"] = min((m for _, _, m in within), default=math.nan)
            row["time_ratio"] = (
                row["time_to_target_s"] / equal_time
                if lm_reached and math.isfinite(row.get("time_to_target_s", math.nan))
                else math.nan
            )
        results.append(
            {
                "problem": problem.name,
                "layers": list(problem.layers),
                "n_params": problem.n_params,
                "points": problem.points,
                "target_mse": problem.target_mse,
                "time_cap_s": problem.time_cap_s,
                "initial_mse": mse(start),
                "equal_time_s": equal_time,
                "lm_reached": lm_reached,
                "rows": rows,
            }
        )
    if verbose:
        print("  demo (Lotka–Volterra UDE)", flush=True)
    return {"problems": results, "demo": demo_problem(verbose), "bisections": BISECTIONS}


# ----------------------------------------------------------------------------------------------
# Report: this suite's headline bullets and its section of BENCHMARKS.md
# ----------------------------------------------------------------------------------------------


def headline(result: dict) -> list[str]:
    """The headline bullets: the demo, then each problem's time to target against the others."""
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


def render(result: dict) -> str:
    """Time to a target MSE and MSE in equal time: LM against first-order training and peers."""
    parts = [
        "## Training models: time to a target MSE",
        "",
        run_line(result),
        "",
        __doc__.split("\n\n", 1)[1].strip(),
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


def _lm_reached(problem: dict) -> bool:
    return math.isfinite(problem["rows"][0].get("time_to_target_s", math.nan))
