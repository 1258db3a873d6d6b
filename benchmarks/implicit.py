"""The cost of a derivative through a solve, against the solve itself.

``jax.grad`` of a loss of the fitted parameters with respect to the data does not differentiate the
loop: it solves once, then one tangent system at the solution (``nlls.implicit``): the Hessian of
the cost by ``n`` Hessian–vector products and its inverse on the normal path, the m×m system on
the minimum-norm path, conjugate gradients on Hessian–vector products on the matrix-free path. Its
cost therefore does not grow with the iterations, and is measured here as the time of
``jit(value_and_grad(loss))`` beside ``jit(solve)``, on fits that reach each path:

- an exponential decay ``a·exp(−k·x)`` on 30 noisy points, n = 2, solved to working precision
  (``normal``, QR steps);
- a degree-9 polynomial with a ridge penalty on 20 points (as in the README's example), n = 10
  (``normal``);
- the MLP of :mod:`benchmarks.mlp` (481 parameters, 200 residuals), 50 LM steps with the tests off,
  on the minimum-norm path (``min_norm``) and matrix-free (``krylov``).

The loss is the sum of squares of the fitted parameters (for the MLP, the mean squared error of the
fitted network on 50 validation points); the derivative is with respect to ``y``. Times are medians
of interleaved rounds (at least ``repeats``, and at least 2 s of them) after
one warm-up call each (which compiles, reported apart).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import nlls
from benchmarks import mlp
from benchmarks.markdown import opening, ratio, seconds, table

TIGHT = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 0.0}
MLP_STEPS = 50
#: rounds continue past ``repeats`` until they have taken this long (fits of microseconds)
MIN_TIMING_S = 2.0
MAX_ROUNDS = 2000


def _exponential(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) - y


def _ridge(coef, x, y, log_weight):
    return jnp.concatenate([jnp.polyval(coef, x) - y, jnp.exp(0.5 * log_weight) * coef])


def problems() -> list[dict]:
    """Each fit as a ``solve(y)`` returning the parameters and a ``loss(params)``, with its data."""
    x = jnp.linspace(0.0, 2.0, 30)
    y_exp = 2.0 * jnp.exp(-1.3 * x) + 0.3 * jnp.sin(9.0 * x)
    x_ridge = jnp.linspace(-1.0, 1.0, 20)
    y_ridge = jnp.sin(3.0 * x_ridge) + 0.2 * jnp.cos(17.0 * x_ridge)
    x_mlp, y_mlp = mlp.data()
    x_val = jnp.linspace(-0.97, 0.97, 50)
    start = jnp.asarray(mlp.init_params())

    def square_sum(params):
        return jnp.sum(params**2)

    def validation(params):
        return jnp.mean((mlp.mlp(params, x_val) - jnp.sin(3.0 * x_val)) ** 2)

    def network(linear):
        def solve(y):
            return nlls.least_squares(
                mlp.residual,
                start,
                (x_mlp, y),
                linear=linear,
                ftol=0.0,
                xtol=0.0,
                gtol=0.0,
                max_steps=MLP_STEPS,
            ).params

        return solve

    return [
        {
            "name": "exponential decay, m = 30, n = 2",
            "solve": lambda y: (
                nlls.least_squares(_exponential, jnp.ones(2), (x, y), **TIGHT).params
            ),
            "loss": square_sum,
            "y": y_exp,
        },
        {
            "name": "ridge polynomial, m = 30, n = 10",
            "solve": lambda y: (
                nlls.least_squares(
                    _ridge, jnp.zeros(10), (x_ridge, y, jnp.asarray(-0.5)), **TIGHT
                ).params
            ),
            "loss": square_sum,
            "y": y_ridge,
        },
        {
            "name": f"MLP, m = 200, n = {mlp.n_params()}, {MLP_STEPS} steps",
            "solve": network("auto"),
            "loss": validation,
            "y": y_mlp,
        },
        {
            "name": f"MLP matrix-free, m = 200, n = {mlp.n_params()}, {MLP_STEPS} steps",
            "solve": network("krylov"),
            "loss": validation,
            "y": y_mlp,
        },
    ]


def _timed(fn, y) -> float:
    began = time.perf_counter()
    jax.block_until_ready(fn(y))
    return time.perf_counter() - began


def run(repeats: int = 5, verbose: bool = True) -> dict:
    """Time ``jit(solve)`` and ``jit(value_and_grad(loss ∘ solve))`` on every problem."""
    rows = []
    for problem in problems():
        solve, loss, y = problem["solve"], problem["loss"], problem["y"]
        plain = jax.jit(solve)
        gradient = jax.jit(jax.value_and_grad(lambda y: loss(solve(y))))  # noqa: B023
        first = {"solve": _timed(plain, y), "grad": _timed(gradient, y)}
        times: dict[str, list[float]] = {"solve": [], "grad": []}
        began = time.perf_counter()
        while len(times["solve"]) < repeats or (
            time.perf_counter() - began < MIN_TIMING_S and len(times["solve"]) < MAX_ROUNDS
        ):
            times["solve"].append(_timed(plain, y))
            times["grad"].append(_timed(gradient, y))
        solve_s = statistics.median(times["solve"])
        grad_s = statistics.median(times["grad"])
        row = {
            "name": problem["name"],
            "solve_s": solve_s,
            "grad_s": grad_s,
            "ratio": grad_s / solve_s,
            "rounds": len(times["solve"]),
            "first_solve_s": first["solve"],
            "first_grad_s": first["grad"],
            "gradient_finite": bool(np.all(np.isfinite(np.asarray(gradient(y)[1])))),
        }
        rows.append(row)
        if verbose:
            print(
                f"  {row['name']}: solve {seconds(solve_s)}, value_and_grad {seconds(grad_s)} "
                f"({ratio(row['ratio'])})",
                flush=True,
            )
    return {"repeats": repeats, "rows": rows}


def headline(result: dict) -> list[str]:
    """One bullet: the gradient's time as a multiple of the solve's, smallest and largest."""
    ratios = [row["ratio"] for row in result["rows"]]
    return [
        f"- Derivatives through a solve (implicit function theorem): `jit(value_and_grad)` of a "
        f"loss of the fitted parameters takes {ratio(min(ratios))}–{ratio(max(ratios))} the time "
        f"of the solve alone."
    ]


def render(result: dict) -> str:
    """The table: solve, value and gradient, ratio and first calls, per problem."""
    rows = [
        [
            row["name"],
            seconds(row["solve_s"]),
            seconds(row["grad_s"]),
            ratio(row["ratio"]),
            f"{seconds(row['first_solve_s'])} / {seconds(row['first_grad_s'])}",
        ]
        for row in result["rows"]
    ]
    return "\n".join(
        [
            *opening("Derivatives through a solve", result, __doc__),
            "",
            table(
                ["fit", "solve", "value and gradient", "ratio", "first calls (compile)"],
                rows,
                "lrrrr",
            ),
        ]
    )
