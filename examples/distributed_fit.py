"""One fit run by several cooperating processes (``jax.distributed``), each holding its share of
the data.

Every process runs this same script with its own ``--process-id``; together they fit a small
network (1 → 16 → 16 → 1, tanh) to 8,000 samples of a noisy curve by Levenberg–Marquardt. Each
process generates only its own samples (rows ``K·8000/N`` to ``(K+1)·8000/N``) and hands them to
``nlls.fit`` as one global array (``jax.make_array_from_process_local_data``); ``fit(mesh=...)``
runs the solve as one program over every process's devices, and XLA's collectives (gloo on CPUs)
carry the sums over samples between them. The parameters, the cost and the stopping decisions are
the same in every process; the History and the Checkpoint are written by process 0.

Two processes on this machine::

    python examples/distributed_fit.py --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0 &
    python examples/distributed_fit.py --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

One process (the reference the others must reproduce)::

    python examples/distributed_fit.py --num-processes 1

Each prints, as its last line, ``final cost C``.
"""

from __future__ import annotations

import argparse

SAMPLES = 8000


def data(first: int, last: int):
    """Samples ``first`` to ``last - 1`` of the data set (the same numbers whoever makes them)."""
    import numpy as np

    x = np.linspace(-3.0, 3.0, SAMPLES)[first:last, None]
    noise = 0.05 * np.sin(37.0 * x) * np.cos(11.0 * x)
    return x, np.tanh(2.0 * x) * np.cos(x) + noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", default="127.0.0.1:12355", help="HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40, help="LM steps (default 40)")
    parser.add_argument("--checkpoint", default=None, help="save the solver state here")
    parser.add_argument("--resume", default=None, help="resume from this checkpoint")
    parser.add_argument("--timeout", type=int, default=60, help="seconds to wait for the others")
    options = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    if options.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=options.coordinator,
            num_processes=options.num_processes,
            process_id=options.process_id,
            initialization_timeout=options.timeout,
        )

    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import nlls

    mesh = Mesh(np.array(jax.devices()), ("data",))
    samples = NamedSharding(mesh, P("data"))
    share = SAMPLES // jax.process_count()
    first = jax.process_index() * share
    x_local, y_local = data(first, first + share)
    x = jax.make_array_from_process_local_data(samples, x_local, (SAMPLES, 1))
    y = jax.make_array_from_process_local_data(samples, y_local, (SAMPLES, 1))

    model = eqx.nn.MLP(1, 1, 16, 2, activation=jnp.tanh, key=jax.random.key(0))
    callbacks = [] if options.checkpoint is None else [nlls.Checkpoint(options.checkpoint, 10)]
    result = nlls.fit(
        model,
        x,
        y,
        mesh=mesh,
        max_steps=options.steps,
        ftol=0.0,
        xtol=0.0,
        gtol=0.0,
        callbacks=callbacks,
        resume=options.resume,
    )
    if jax.process_index() == 0:
        print(f"{jax.process_count()} process(es), {len(jax.devices())} device(s)")
        print(
            f"history: {len(result.history)} rows, last cost {result.history.as_dict()['cost'][-1]}"
        )
        print(result.solution)
    print(f"final cost {float(result.solution.cost)!r}", flush=True)


if __name__ == "__main__":
    main()
