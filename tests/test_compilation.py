"""The opt-in persistent compilation cache: a second process reads the solve's programs from disk."""

import os
import subprocess
import sys

import pytest

import nlls

SCRIPT = """
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import nlls
x = jnp.linspace(0.0, 4.0, 30)
y = 2.0 * jnp.exp(-1.3 * x) + 0.5
sol = nlls.least_squares(lambda p: p[0] * jnp.exp(-p[1] * x) + p[2] - y, jnp.asarray([1.0, 1.0, 0.0]))
print(repr(sol.params.tolist()))
"""


def _run(environment):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_environment_variable_turns_the_cache_on_and_a_new_process_hits_it(tmp_path):
    directory = tmp_path / "cache"
    environment = {**os.environ, "NLLS_COMPILATION_CACHE": str(directory)}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    first = _run(environment)
    entries = sorted(os.listdir(directory))
    assert entries, "the first process wrote no compiled program"
    second = _run(environment)
    assert sorted(os.listdir(directory)) == entries  # everything was found: nothing new written
    assert second == first


@pytest.mark.parametrize("value", ["", "0", "off"])
def test_the_cache_stays_off_unless_asked_for(value, monkeypatch):
    monkeypatch.setenv("NLLS_COMPILATION_CACHE", value)
    assert nlls.compilation.enable_from_environment() is None


def test_plan_cache_lets_old_plans_go_past_the_mapping_budget(monkeypatch):
    """Past ``MAPPINGS_KEPT`` memory mappings a new plan sends the older half away, with their
    compiled programs (a process past Linux's ``vm.max_map_count`` cannot compile at all)."""
    import jax.numpy as jnp

    import nlls
    from nlls import plan

    assert plan.mapped_regions() > 0  # Linux: the count is read
    cache = plan._PlanCache(maxsize=128)
    monkeypatch.setattr(plan, "_cached_plan", cache)
    x = jnp.linspace(0.0, 1.0, 20)
    for power in (1, 2, 3, 4):
        nlls.least_squares(lambda p, x, power=power: p[0] * x**power - 1.0, jnp.ones(1), args=(x,))
    assert cache.cache_info().currsize == 4 and cache.cache_info().misses == 4
    monkeypatch.setattr(cache, "MAPPINGS_KEPT", 0)
    nlls.least_squares(lambda p, x: p[0] * x**5 - 1.0, jnp.ones(1), args=(x,))
    assert cache.cache_info().currsize == 3  # two of the four old plans let go, the new one kept
