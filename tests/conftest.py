"""Tests run with float64 enabled (the library itself never changes this flag); float32 cases pass
explicit float32 arrays."""

import gc

import jax
import pytest

jax.config.update("jax_enable_x64", True)

# A compiled XLA CPU program holds about a hundred memory mappings (a solve's, about 180). A test
# worker that kept every program it compiled in the full suite passed Linux's default
# ``vm.max_map_count`` (65,530), and XLA then segfaulted inside the next compile. The library's plan
# cache lets its older plans go past 40,000 mappings (``nlls.plan._PlanCache``), but JAX's own caches
# (equinox's filter_jit, the tests' jitted helpers) are cleared here.
MAPPINGS_KEPT = 30_000


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After a test module, let every compiled program go if the worker holds more than
    ``MAPPINGS_KEPT`` memory mappings (clearing after every module slowed the suite by about a
    third: later modules recompile what they share)."""
    yield
    from nlls import plan

    if plan.mapped_regions() > MAPPINGS_KEPT:
        plan._cached_plan.cache_clear()
        jax.clear_caches()
        gc.collect()
