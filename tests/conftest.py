"""Tests run with float64 enabled (the library itself never changes this flag); float32 cases pass
explicit float32 arrays."""

import jax

jax.config.update("jax_enable_x64", True)
