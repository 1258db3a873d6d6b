"""What every problem family shares: where the reference data live, the LRE score and random
linear problems.

:data:`DATA_DIR` is ``shared/data`` beside the repository (read, never written); :func:`lre` is
the NIST StRD accuracy score; :func:`random_linear_problem` draws a linear least-squares problem
``min ||A x - b||`` of a chosen rank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

__all__ = ["DATA_DIR", "LRE_CAP", "lre", "random_linear_problem"]

Array = jax.Array
ResidualFn = Callable[[Array], Array]

#: ``shared/data`` next to the project root (the project root is this file's grandparent).
DATA_DIR: Path = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Maximum log relative error reported by :func:`lre` (the NIST certified values have 11 digits).
LRE_CAP = 11.0


# ---------------------------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------------------------


def lre(estimate: npt.ArrayLike, certified: npt.ArrayLike) -> np.ndarray:
    """Log relative error per component, ``-log10(|x - c| / |c|)``, clipped to ``[0, 11]``.

    The usual accuracy score for the NIST StRD (McCullough 1998; Mondragon & Borchers 2005): the
    number of correct significant digits. Exact agreement gives the cap 11; a component whose
    certified value is zero is scored by its absolute error ``-log10|x|``; a non-finite estimate
    scores 0.
    """
    x = np.asarray(estimate, dtype=np.float64)
    c = np.asarray(certified, dtype=np.float64)
    err = np.abs(x - c)
    scale = np.where(c == 0.0, 1.0, np.abs(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = -np.log10(err / scale)
    digits = np.where(err == 0.0, LRE_CAP, digits)
    digits = np.where(np.isfinite(x), digits, 0.0)
    return np.clip(np.nan_to_num(digits, nan=0.0), 0.0, LRE_CAP)


def _numpy_rng(key_or_seed: int | Array | np.random.Generator) -> np.random.Generator:
    """A numpy generator from an int seed, a numpy generator or a JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)):
        return np.random.default_rng(int(key_or_seed))
    key = key_or_seed
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def random_linear_problem(
    key_or_seed: int | Array | np.random.Generator,
    m: int,
    n: int,
    rank: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A random linear least-squares problem ``min ||A x - b||``, as float64 numpy arrays.

    ``A`` (m, n) has standard-normal entries; with ``rank`` given it is the product of an
    (m, rank) and a (rank, n) standard-normal matrix, hence has exactly that rank (almost surely).
    ``b`` (m,) is standard normal, so the problem generally has a nonzero residual.

    Args:
        key_or_seed: an int seed, a ``numpy.random.Generator`` or a JAX PRNG key.
        m: number of rows (residuals).
        n: number of columns (unknowns).
        rank: optional rank of ``A``, at most ``min(m, n)``.
    """
    if m < 1 or n < 1:
        raise ValueError(f"need m, n >= 1, got m={m}, n={n}")
    rng = _numpy_rng(key_or_seed)
    if rank is None:
        a = rng.standard_normal((m, n))
    else:
        if not 0 <= rank <= min(m, n):
            raise ValueError(f"rank must be in [0, min(m, n)] = [0, {min(m, n)}], got {rank}")
        a = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    b = rng.standard_normal(m)
    return a.astype(np.float64), b.astype(np.float64)
