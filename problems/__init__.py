"""Shared problems for the ``nlls`` tests and benchmarks (not part of the installed library).

Three families live here:

* the NIST StRD nonlinear-regression data sets (:func:`load_nist`, in :mod:`problems.nist`): the
  19 sets of ``../shared/data/nist`` and the eight higher-difficulty sets of
  ``problems/data/nist``, with the model formulas written in ``jax.numpy``;
* the 53 runs of the MINPACK-1 ``lmder`` test driver over 18 Moré–Garbow–Hillstrom problems
  (:func:`minpack_runs`, in :mod:`problems.minpack`), with MINPACK's reference results parsed
  from ``lmddrv.ref``;
* small generic helpers (:func:`random_linear_problem`, :func:`lre`, in :mod:`problems.common`).

References:
    NIST Statistical Reference Datasets, nonlinear regression,
    https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml
    J.J. Moré, B.S. Garbow, K.E. Hillstrom, "Testing Unconstrained Optimization Software",
    ACM TOMS 7(1):17–41, 1981 (MGH), and the MINPACK-1 test driver ``lmddrv`` / ``ssqfcn``.

All residual and model functions are pure ``jax.numpy`` functions that keep the dtype of their
inputs (float32 or float64). This package never enables 64-bit mode; callers that want float64
must call ``jax.config.update("jax_enable_x64", True)`` themselves.

The package sits at the repository root beside ``nlls``: ``pytest`` (``pythonpath`` in
``pyproject.toml``) and ``python -m benchmarks`` run from the root find it there.
"""

from problems.common import DATA_DIR, LRE_CAP, lre, random_linear_problem
from problems.minpack import (
    MINPACK_NAMES,
    MinpackRun,
    minpack_residual,
    minpack_runs,
    minpack_start,
)
from problems.nist import NIST_HIGHER_NAMES, NIST_NAMES, NistProblem, load_nist, nist_names

__all__ = [
    "DATA_DIR",
    "LRE_CAP",
    "MINPACK_NAMES",
    "NIST_HIGHER_NAMES",
    "NIST_NAMES",
    "MinpackRun",
    "NistProblem",
    "load_nist",
    "lre",
    "minpack_residual",
    "minpack_runs",
    "minpack_start",
    "nist_names",
    "random_linear_problem",
]
