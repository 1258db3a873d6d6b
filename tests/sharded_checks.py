"""Measurements on 4 host devices, run by ``tests/test_sharding.py`` in a child process (the flag
that makes several CPU devices must be set before JAX starts, and the test process keeps one).

Prints one JSON object: for each check, the numbers the tests compare. Nothing is asserted here.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import re  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_enable_x64", True)

import nlls  # noqa: E402
from nlls import plan, sharding  # noqa: E402
from nlls.problem import Samples  # noqa: E402

MESH = Mesh(np.array(jax.devices()), ("data",))
ONE = Mesh(np.array(jax.devices()[:1]), ("data",))
COLLECTIVE = re.compile(
    r"= ([a-z0-9]+)\[([0-9,]*)\][^ ]* (all-gather|all-reduce|all-to-all|reduce-scatter|"
    r"collective-permute)(?:-start)?\("
)


def spread(array, mesh=MESH):
    return jax.device_put(array, NamedSharding(mesh, P("data")))


def placement(array) -> dict:
    return {"devices": len(array.sharding.device_set), "spec": str(array.sharding.spec)}


def mlp_data(samples: int):
    x = jnp.linspace(-2.0, 2.0, samples)[:, None]
    return x, jnp.sin(2.0 * x) + 0.1 * jnp.cos(5.0 * x)


def mlp(width: int, depth: int = 2):
    return eqx.nn.MLP(1, 1, width, depth, activation=jnp.tanh, key=jax.random.key(0))


def fit_equality() -> dict:
    """The acceptance fit: a 4,000-sample MLP, 30 LM steps, one device against ``mesh=``."""
    x, y = mlp_data(4000)
    options = dict(max_steps=30, ftol=0.0, xtol=0.0, gtol=0.0, history=False)
    one = nlls.fit(mlp(8), x, y, **options)
    four = nlls.fit(mlp(8), x, y, mesh=MESH, **options)
    return {
        "cost_one": float(one.solution.cost),
        "cost_four": float(four.solution.cost),
        "steps": int(four.solution.stats.steps),
        "residual": placement(four.solution.residual),
    }


def least_squares_equality() -> dict:
    """A three-parameter exponential fit on arguments the user shards."""
    t = jnp.linspace(0.0, 3.0, 4000)
    observed = 2.0 * jnp.exp(-1.3 * t) + 0.5 + 0.01 * jnp.sin(40.0 * t)

    def residual(p, t, observed):
        return p[0] * jnp.exp(-p[1] * t) + p[2] - observed

    start = jnp.array([1.0, 1.0, 0.0])
    one = nlls.least_squares(residual, start, args=(t, observed))
    four = nlls.least_squares(residual, start, args=(spread(t), spread(observed)))
    return {
        "params_one": np.asarray(one.params).tolist(),
        "params_four": np.asarray(four.params).tolist(),
        "residual": placement(four.residual),
    }


def _compiled_solve(fit):
    """The compiled program of the one solve ``fit()`` runs, as ``least_squares`` compiles it."""
    captured = {}
    original = plan.Plan.solve

    def capture(self, params0, inputs, max_steps):
        captured["program"] = self._one_program.lower(params0, inputs, max_steps).compile()
        return original(self, params0, inputs, max_steps)

    plan.Plan.solve = capture
    try:
        result = fit()
    finally:
        plan.Plan.solve = original
    return captured["program"], result


def footprint(linear: str, samples: int, width: int) -> dict:
    """Per-device temporary memory of the compiled solve on 4 devices and on 1, the largest
    collective, and the Jacobian's size, for one linear path."""
    x, y = mlp_data(samples)
    model = mlp(width)
    n = sum(
        leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    )
    out = {"m": samples, "n": int(n), "jacobian_bytes": samples * int(n) * 8}
    for mesh, name in ((ONE, "one"), (MESH, "four")):
        program, result = _compiled_solve(
            lambda mesh=mesh: nlls.fit(
                model, x, y, mesh=mesh, max_steps=3, history=False, linear=linear
            )
        )
        out[f"temp_{name}"] = int(program.memory_analysis().temp_size_in_bytes)
        sizes = [
            (int(np.prod([int(d) for d in dims.split(",") if d] or [1])), kind)
            for _, dims, kind in COLLECTIVE.findall(program.as_text())
        ]
        out[f"largest_gather_{name}"] = max(
            [size for size, kind in sizes if kind == "all-gather"], default=0
        )
        out[f"collectives_{name}"] = len(sizes)
        out["path"] = result.solution.stats.linear
    return out


def minibatch() -> dict:
    """Sharded minibatch LM: reproducible, and each device gathers its part of a batch from its
    own samples (no collective in the gather)."""
    x, y = mlp_data(4000)
    runs = [
        nlls.fit(mlp(8), x, y, batch_size=400, epochs=3, mesh=MESH, history=False) for _ in range(2)
    ]
    data = (spread(x), spread(y))
    layout = sharding.layout_of(data)
    indices = jnp.tile(jnp.arange(100, dtype=jnp.int32)[None], (4, 1))
    take = jax.jit(lambda data, indices: Samples(data, None, 4000, 400, 1, layout).take(indices))
    text = take.lower(data, indices).compile().as_text()
    batch = take(data, indices)
    expected = np.concatenate([np.asarray(x)[k * 1000 : k * 1000 + 100] for k in range(4)])
    start_cost = float(0.5 * jnp.sum((jax.vmap(mlp(8))(x) - y) ** 2))
    return {
        "costs": [float(run.solution.cost) for run in runs],
        "start_cost": start_cost,
        "batch_collectives": len(COLLECTIVE.findall(text)),
        "batch_equal": bool(np.array_equal(np.asarray(batch[0]), expected)),
        "batch": placement(batch[0]),
    }


def batch_of_fits() -> dict:
    """1,000 independent exponential fits under vmap, the batch axis over 4 devices."""
    t = jnp.linspace(0.0, 2.0, 40)
    rates = jnp.linspace(0.5, 2.0, 1000)
    curves = 3.0 * jnp.exp(-rates[:, None] * t) + 0.01 * jnp.cos(7.0 * t + rates[:, None])

    def one_fit(curve):
        def residual(p, t, curve):
            return p[0] * jnp.exp(-p[1] * t) - curve

        return nlls.least_squares(residual, jnp.array([1.0, 1.0]), args=(t, curve)).params

    fits = jax.jit(jax.vmap(one_fit))
    alone = fits(curves)
    spread_params = fits(spread(curves))
    return {
        "max_difference": float(jnp.max(jnp.abs(alone - spread_params))),
        "rate_error": float(jnp.max(jnp.abs(spread_params[:, 1] - rates))),
        "params": placement(spread_params),
    }


def readme() -> dict:
    """The README's block of "More than one device", run as written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "mesh=mesh" in b)
    scope: dict = {}
    exec(block, scope)
    result = scope["result"]
    return {"residual": placement(result.solution.residual), "mse": float(result.mse)}


def errors() -> dict:
    """The messages for data or batches that the mesh cannot split evenly."""
    x, y = mlp_data(4002)
    messages = {}
    for name, options in (("samples", {}), ("batch", {"batch_size": 402})):
        data = (x, y) if name == "samples" else (x[:4000], y[:4000])
        try:
            nlls.fit(mlp(4), *data, mesh=MESH, max_steps=1, **options)
        except ValueError as error:
            messages[name] = str(error)
    return messages


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "devices": len(jax.devices()),
                "fit": fit_equality(),
                "least_squares": least_squares_equality(),
                "qr": footprint("normal", 8000, 4),  # n ≤ 64: the QR of [J r] (TSQR)
                "gram": footprint("normal", 8000, 24),  # n > 64: the n×n Gram matrix
                "min_norm": footprint("min_norm", 256, 96),
                "krylov": footprint("krylov", 8000, 24),
                "minibatch": minibatch(),
                "batch_of_fits": batch_of_fits(),
                "errors": errors(),
                "readme": readme(),
            }
        )
    )
