"""Data sharded over devices (``nlls.sharding``, ``fit(..., mesh=...)``).

The measurements on 4 devices run in a child process (``tests/sharded_checks.py``), since the flag
that makes several CPU devices must be set before JAX starts; this process keeps its one device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import nlls
from nlls import sharding

CHECKS = Path(__file__).with_name("sharded_checks.py")


@pytest.fixture(scope="module")
def four_devices() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, str(CHECKS)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    return result


def relative(a, b):
    return abs(a - b) / abs(b)


def test_fit_on_a_mesh_equals_one_device(four_devices):
    """The acceptance fit: 4,000 samples, 30 LM steps, float64: the same cost to 1e-9 relative,
    the residual still split over the 4 devices."""
    fit = four_devices["fit"]
    assert fit["steps"] == 30
    assert relative(fit["cost_four"], fit["cost_one"]) < 1e-9
    assert fit["residual"] == {"devices": 4, "spec": "P('data',)"}


def test_least_squares_on_sharded_arguments(four_devices):
    result = four_devices["least_squares"]
    np.testing.assert_allclose(result["params_four"], result["params_one"], rtol=1e-12)
    np.testing.assert_allclose(result["params_one"], [2.0, 1.3, 0.5], rtol=1e-2)
    assert result["residual"] == {"devices": 4, "spec": "P('data',)"}


@pytest.mark.parametrize("path", ["qr", "gram", "min_norm", "krylov"])
def test_jacobian_is_not_gathered(four_devices, path):
    """Per device, the compiled solve holds its quarter of what one device holds plus less than
    one Jacobian's worth (a gathered J would add a whole one), and no all-gather moves a quarter
    of J's entries: J stays split, only sums over rows (and TSQR's small triangles) travel."""
    result = four_devices[path]
    expected = {"qr": "normal", "gram": "normal", "min_norm": "min_norm", "krylov": "krylov"}
    assert result["path"] == expected[path]
    jacobian = result["jacobian_bytes"]
    assert result["temp_four"] - result["temp_one"] / 4 < jacobian, result
    assert result["largest_gather_four"] < result["m"] * result["n"] / 4, result
    assert result["collectives_four"] > 0 and result["collectives_one"] == 0


def test_tall_paths_hold_a_quarter(four_devices):
    """Where J dominates the memory (tall: 8,000 rows), a device holds about a quarter of it."""
    for path in ("qr", "gram", "krylov"):
        result = four_devices[path]
        assert result["temp_four"] < 0.3 * result["temp_one"], (path, result)


def test_sharded_minibatches(four_devices):
    result = four_devices["minibatch"]
    first, second = result["costs"]
    assert first == second  # the same seed and mesh: the same run, bit for bit
    assert first < 1e-3 * result["start_cost"]
    assert result["batch_collectives"] == 0  # each device gathers from its own samples
    assert result["batch_equal"]
    assert result["batch"] == {"devices": 4, "spec": "P('data',)"}


def test_batch_of_fits_split_over_devices(four_devices):
    result = four_devices["batch_of_fits"]
    assert result["max_difference"] == 0.0
    assert result["rate_error"] < 0.02
    assert result["params"]["devices"] == 4


def test_uneven_data_is_refused(four_devices):
    messages = four_devices["errors"]
    assert "4002 samples" in messages["samples"] and "multiple of 4" in messages["samples"]
    assert "batch_size=402" in messages["batch"] and "4 devices" in messages["batch"]


def test_readme_block_runs_on_four_devices(four_devices):
    result = four_devices["readme"]
    assert result["residual"] == {"devices": 4, "spec": "P('data',)"}
    assert result["mse"] < 1e-6


class _Blocks:
    """A stand-in layout of 4 row blocks on one device: TSQR's arithmetic without the placement."""

    count = 4

    @staticmethod
    def by_rows(array):
        return array


@pytest.mark.parametrize("rows", [400, 12])  # 12: blocks of 3 rows, fewer than the 5 columns
def test_tsqr_gives_the_r_of_one_qr(rows):
    matrix = jax.random.normal(jax.random.key(1), (rows, 5))
    reference = jnp.linalg.qr(matrix, mode="r")
    blocked = sharding.qr_r(matrix, _Blocks())
    signs = jnp.sign(jnp.diagonal(reference)) * jnp.sign(jnp.diagonal(blocked))
    np.testing.assert_allclose(signs[:, None] * blocked, reference, rtol=1e-12, atol=1e-12)


def test_layout_of_plain_arrays_is_none():
    assert sharding.layout_of((jnp.ones(8), np.ones(8), 3.0)) is None


def test_mesh_axis_choice_and_errors():
    devices = np.array(jax.devices()[:1])
    assert sharding.data_axis(Mesh(devices, ("batch",))) == "batch"
    assert sharding.data_axis(Mesh(devices.reshape(1, 1), ("model", "data"))) == "data"
    with pytest.raises(ValueError, match="none is called 'data'"):
        sharding.data_axis(Mesh(devices.reshape(1, 1), ("a", "b")))
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        sharding.data_axis("data")


def test_fit_on_a_one_device_mesh():
    """A mesh of one device is the plain fit (same parameters), and checks batch_size."""
    x = jnp.linspace(-1.0, 1.0, 64)[:, None]
    y = jnp.sin(2.0 * x)
    model = eqx.nn.MLP(1, 1, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    plain = nlls.fit(model, x, y, max_steps=20, history=False)
    meshed = nlls.fit(model, x, y, max_steps=20, history=False, mesh=mesh)
    assert float(meshed.solution.cost) == float(plain.solution.cost)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        nlls.fit(model, x, y, mesh="data")
