"""NIST StRD nonlinear regression: every certified parameter to LRE ≥ 6 from both starts, with the
dense steps and with the matrix-free (Krylov) ones."""

import jax.numpy as jnp
import numpy as np
import pytest

import nlls
from problems import NIST_NAMES, load_nist, lre


@pytest.mark.parametrize("linear", ["auto", "krylov"])
@pytest.mark.parametrize("name", NIST_NAMES)
def test_lm_reaches_certified_parameters(name, linear):
    problem = load_nist(name)
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    for start in (problem.start1, problem.start2):
        sol = nlls.least_squares(
            problem.residual,
            jnp.asarray(start),
            args=(x, y),
            method="lm",
            linear=linear,
            ftol=1e-15,
            xtol=1e-15,
            gtol=0.0,
            max_steps=5000,
        )
        assert sol.stats.linear == ("krylov" if linear == "krylov" else "normal")
        errors = lre(problem.labelled(sol.params), problem.certified)
        assert errors.min() >= 6, f"{name} from {start}: LRE {np.round(errors, 2)}"
        assert bool(sol.success), sol.message
