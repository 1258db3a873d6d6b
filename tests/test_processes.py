"""One fit as two cooperating processes (``examples/distributed_fit.py``, ``jax.distributed`` with
gloo collectives on 127.0.0.1), against the same fit in one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "distributed_fit.py"
TIMEOUT = 240  # seconds for a whole run; the processes also give up waiting for each other


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment():
    return {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}


def _run(processes: int, *options: str) -> list[str]:
    """The outputs of the example run as ``processes`` processes (each one's stdout)."""
    command = [sys.executable, str(EXAMPLE), "--num-processes", str(processes), *options]
    if processes == 1:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, env=_environment()
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return [done.stdout]
    address = f"127.0.0.1:{_free_port()}"
    children = [
        subprocess.Popen(
            [*command, "--coordinator", address, "--process-id", str(k), "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
        )
        for k in range(processes)
    ]
    outputs = []
    try:
        for child in children:
            out, err = child.communicate(timeout=TIMEOUT)
            assert child.returncode == 0, err[-4000:]
            outputs.append(out)
    finally:
        for child in children:
            child.kill()
    return outputs


def _final_cost(output: str) -> float:
    last = output.strip().splitlines()[-1]
    assert last.startswith("final cost "), output
    return float(last.removeprefix("final cost "))


@pytest.fixture(scope="module")
def one_process() -> float:
    return _final_cost(_run(1)[0])


def test_two_processes_reproduce_one(one_process):
    outputs = _run(2)
    costs = [_final_cost(out) for out in outputs]
    assert costs[0] == costs[1]  # the same replicated number in both processes
    assert abs(costs[0] - one_process) <= 1e-9 * one_process
    assert "2 process(es), 2 device(s)" in outputs[0]
    assert "history: 53 rows" in outputs[0]  # the History of the fit, on process 0


@pytest.mark.slow  # two more pairs of processes (about 20 s); make test-all
def test_checkpoint_and_resume_with_two_processes(one_process, tmp_path):
    """Process 0 writes the checkpoint of 20 steps; both processes resume it to 40 steps and end
    where the uninterrupted fit ends."""
    path = tmp_path / "fit.ckpt"
    first = _run(2, "--steps", "20", "--checkpoint", str(path))
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))
    halfway = _final_cost(first[0])
    assert halfway > one_process
    resumed = _run(2, "--steps", "40", "--resume", str(path))
    costs = [_final_cost(out) for out in resumed]
    assert costs[0] == costs[1]
    assert abs(costs[0] - one_process) <= 1e-9 * one_process
