"""More than one device: one fit with its samples split over 1, 2, 4 and 8 host devices, and over
1 and 2 processes (``jax.distributed``, gloo collectives).

Workload (float64): ``nlls.fit`` of the 1→32→32→1 tanh MLP (1,153 parameters) to 16,000 points of
a noisy curve, 15 LM steps with the tests off (the normal path's n×n Gram matrix, a Jacobian of
16,000×1,153), the data split over the mesh by ``fit(mesh=...)``. Each setting runs in a fresh
process (the device count is fixed when JAX starts): the time per iteration is the median of 3
warm calls (compilation excluded) over the iterations they ran; the memory per
device is XLA's memory analysis of the compiled solve (its temporaries: the Jacobian, the Gram
matrix, the work arrays), the number ``nlls.sharding`` is tested on. The processes' run splits the
same data over 1 or 2 processes of one device each, on 127.0.0.1.

This machine has 2 cores: host devices beyond 2 share them, so the time cannot fall below about half
of one device's, and the run with several devices mostly shows what the split costs (collectives,
partitioned programs) and what it saves (memory per device). The speed-up that sharding is for
needs devices with their own compute: several GPUs, or several machines. (One device already
spreads its matrix products over both cores.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.markdown import opening, seconds, table

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 16_000
STEPS = 15
CALLS = 3
DEVICES = (1, 2, 4, 8)
PROCESSES = (1, 2)


def _workload(mesh) -> dict:
    """Fit the MLP on ``mesh``; the time per iteration and the compiled solve's memory."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import nlls
    from nlls import plan

    share = SAMPLES // jax.process_count()
    first = jax.process_index() * share
    x_all = np.linspace(-3.0, 3.0, SAMPLES)[:, None]
    y_all = np.tanh(2.0 * x_all) * np.cos(x_all) + 0.05 * np.sin(37.0 * x_all)
    samples = NamedSharding(mesh, P("data"))
    x = jax.make_array_from_process_local_data(samples, x_all[first : first + share])
    y = jax.make_array_from_process_local_data(samples, y_all[first : first + share])
    model = eqx.nn.MLP(1, 1, 32, 2, activation=jnp.tanh, key=jax.random.key(0))
    options = dict(mesh=mesh, max_steps=STEPS, ftol=0.0, xtol=0.0, gtol=0.0, history=False)

    captured = {}
    original = plan.Plan.solve

    def capture(self, params0, inputs, max_steps):  # the compiled program of this solve
        captured["program"] = self._one_program.lower(params0, inputs, max_steps).compile()
        return original(self, params0, inputs, max_steps)

    plan.Plan.solve = capture
    try:
        began = time.perf_counter()
        result = nlls.fit(model, x, y, **options)
        first_call = time.perf_counter() - began
    finally:
        plan.Plan.solve = original
    memory = captured["program"].memory_analysis()
    times = []
    for _ in range(CALLS):
        began = time.perf_counter()
        result = nlls.fit(model, x, y, **options)
        jax.block_until_ready(result.solution.cost)
        times.append(time.perf_counter() - began)
    iterations = int(result.solution.stats.steps) + int(result.solution.stats.rejected)
    return {
        "devices": len(jax.devices()),
        "processes": jax.process_count(),
        "first_call_s": first_call,
        "call_s": statistics.median(times),
        "iterations": iterations,
        "per_iteration_s": statistics.median(times) / iterations,
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "cost": float(result.solution.cost),
        "jacobian_bytes": SAMPLES * 1153 * 8,
    }


def _child(devices: int, processes: int, process_id: int, coordinator: str) -> None:
    """One setting in this process: print its JSON line (process 0 only)."""
    if devices > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax
    import numpy as np
    from jax.sharding import Mesh

    jax.config.update("jax_enable_x64", True)
    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    result = _workload(Mesh(np.array(jax.devices()), ("data",)))
    if process_id == 0:
        print(json.dumps(result), flush=True)


def _environment() -> dict:
    return {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}


def _spawn(devices: int, processes: int) -> dict:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{probe.getsockname()[1]}"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.distributed",
                "--devices",
                str(devices),
                "--processes",
                str(processes),
                "--process-id",
                str(k),
                "--coordinator",
                coordinator,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
        )
        for k in range(processes)
    ]
    outputs = [child.communicate(timeout=1800) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"distributed benchmark child failed:\n{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def run(verbose: bool = True) -> dict:
    rows = []
    for devices in DEVICES:
        rows.append(
            {"setting": f"{devices} device{'s' if devices > 1 else ''}", **_spawn(devices, 1)}
        )
        if verbose:
            print(f"{rows[-1]['setting']}: {rows[-1]['per_iteration_s'] * 1e3:.1f} ms/iteration")
    for processes in PROCESSES[1:]:
        rows.append({"setting": f"{processes} processes × 1 device", **_spawn(1, processes)})
        if verbose:
            print(f"{rows[-1]['setting']}: {rows[-1]['per_iteration_s'] * 1e3:.1f} ms/iteration")
    return {"rows": rows, "samples": SAMPLES, "steps": STEPS, "calls": CALLS}


def headline(result: dict) -> list[str]:
    rows = result["rows"]
    one = rows[0]
    four = next(r for r in rows if r["setting"] == "4 devices")
    pair = next(r for r in rows if r["processes"] == 2)
    return [
        f"- Sharded fit ({result['samples']:,} samples, 1,153 parameters): memory per device "
        f"{four['temp_bytes'] / one['temp_bytes']:.2f}× one device's on 4 host devices; "
        f"{pair['per_iteration_s'] * 1e3:.0f} ms per iteration as 2 processes against "
        f"{one['per_iteration_s'] * 1e3:.0f} ms in one (2 cores: no speed-up to be had here); "
        f"costs equal to {_spread(rows):.0e} relative."
    ]


def _spread(rows) -> float:
    costs = [r["cost"] for r in rows]
    return (max(costs) - min(costs)) / min(costs)


def render(result: dict) -> str:
    one = result["rows"][0]
    lines = [
        *opening("More than one device: samples split over devices and processes", result, __doc__),
        "",
        table(
            [
                "setting",
                "time / iteration",
                "vs 1 device",
                "memory / device (MB)",
                "vs 1 device",
                "first call",
                "final cost",
            ],
            [
                [
                    r["setting"],
                    f"{r['per_iteration_s'] * 1e3:.1f} ms",
                    f"{r['per_iteration_s'] / one['per_iteration_s']:.2f}×",
                    f"{r['temp_bytes'] / 1e6:.1f}",
                    f"{r['temp_bytes'] / one['temp_bytes']:.2f}×",
                    seconds(r["first_call_s"]),
                    f"{r['cost']:.12g}",
                ]
                for r in result["rows"]
            ],
            "lrrrrrr",
        ),
        "",
        f"The Jacobian alone is {one['jacobian_bytes'] / 1e6:.0f} MB; the final costs agree to "
        f"{_spread(result['rows']):.1e} relative (the same {result['steps']} steps; sums over "
        "samples in another order).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="127.0.0.1:12355")
    arguments = parser.parse_args()
    _child(arguments.devices, arguments.processes, arguments.process_id, arguments.coordinator)
