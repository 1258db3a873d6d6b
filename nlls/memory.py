"""The memory budget of the Jacobian: which linear path fits, and how many columns or rows at once.

A dense path holds ``J`` (m×n) and its Gram matrix (n×n on the normal path, m×m on the minimum-norm
path) for the current point and for an accepted trial point, and a scaled copy of the new ``J``:
``linear.dense_bytes`` = 3 J + 2 Gram. Building ``J`` takes ``n`` JVPs (forward mode, one per column) or
``m`` VJPs (reverse mode, one per row); vmapped all at once their intermediate values can be many
times ``J`` itself (a network's hidden activations, once per column). So ``J`` is built in blocks of
``chunk`` columns or rows, with ``chunk · (bytes per product) + shared ≤ budget − dense_bytes``. The
bytes per product are measured, not guessed: XLA's memory analysis (``temp`` plus ``output`` bytes)
of compiled blocks of 1 and 9 products; the slope is the cost of one product, the rest (the forward
pass the products share) is ``shared``. Small problems (``J`` under 1/64 of the
budget) skip the measurement and build ``J`` in one vmap.

With ``linear="auto"`` the matrix-free path (``nlls.Krylov``) replaces a dense path whose ``J`` and
Gram matrix, or whose smallest block, would not fit. Its vectors are O(m + n); its Jacobi scaling
(when on) takes the column norms by blocks of JVPs under the same budget. A budget smaller than one
row or one column of ``J`` is refused.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from .linear import Krylov, choose_path, dense_bytes

SMALL_FRACTION = 64  # J below budget / 64: build it in one vmap without measuring
PROBE_WIDTH = 8  # products per block in the measurement


def default_jacobian_bytes() -> int:
    """A quarter of the memory available now: the device's limit on an accelerator, the free
    physical memory on a CPU (``os.sysconf``), 4 GiB when neither is known."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        available = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    else:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 16 * 2**30
    return max(int(available) // 4, 1)


def plan_memory(linear, jac_mode: str, problem, flat0, m: int, n: int, budget: int):
    """``(path, chunk)`` for an m×n Jacobian under ``budget`` bytes (see the module docstring).

    Raises:
        ValueError: the budget is smaller than one row or column of ``J``, or a dense path named
            explicitly does not fit it.
    """
    itemsize = np.dtype(flat0.dtype).itemsize
    smallest = itemsize * max(m, n)
    if budget < smallest:
        raise ValueError(
            f"max_jacobian_bytes={budget} is smaller than one row or column of the {m}×{n} "
            f"Jacobian ({smallest} bytes): no path can work within it; allow at least "
            f"{smallest} bytes (the matrix-free path needs a few vectors of {m} and {n} entries)"
        )
    path = choose_path(linear, m, n)
    if isinstance(path, Krylov):
        return path, _krylov_chunk(path, problem, flat0, m, n, budget)
    need = dense_bytes(path, m, n, itemsize)
    size = n if jac_mode == "fwd" else m
    if need <= budget and (jac_mode == "user" or need * SMALL_FRACTION <= budget):
        return path, None
    if need <= budget:
        per_product, shared = product_bytes(problem, flat0, jac_mode, m, n)
        chunk = (budget - need - shared) // per_product
        if chunk >= 1:
            return path, None if chunk >= size else int(chunk)
    if linear == "auto":
        krylov = choose_path("krylov", m, n)
        return krylov, _krylov_chunk(krylov, problem, flat0, m, n, budget)
    raise ValueError(
        f"linear={linear!r} holds copies of the {m}×{n} Jacobian and its Gram matrix ({need} bytes) and "
        f"builds J a block at a time, which does not fit max_jacobian_bytes={budget}; use "
        "linear='krylov' (matrix-free) or 'auto', or a larger budget"
    )


def _krylov_chunk(path: Krylov, problem, flat0, m: int, n: int, budget: int):
    """Columns per block of JVPs for the Jacobi scaling's column norms (when it is on)."""
    if not path.jacobi or np.dtype(flat0.dtype).itemsize * m * n * SMALL_FRACTION <= budget:
        return None  # no column norms, or all n JVPs at once are small beside the budget
    per_product, shared = product_bytes(problem, flat0, "fwd", m, n)
    chunk = max((budget - shared) // per_product, 1)
    return None if chunk >= n else int(chunk)


def product_bytes(problem, flat0, jac_mode: str, m: int, n: int) -> tuple[int, int]:
    """``(per_product, shared)`` bytes of a vmapped block of JVPs (``"fwd"``) or VJPs (``"rev"``):
    XLA's memory analysis (temporaries and output) of compiled blocks of 1 and ``PROBE_WIDTH + 1``
    products; the slope is what each product adds, the rest (the forward pass) is shared. At least
    the output's own size per product; that size alone when the backend gives no analysis."""
    itemsize = np.dtype(flat0.dtype).itemsize
    floor = itemsize * (m if jac_mode == "fwd" else n)
    if jac_mode == "fwd":

        def block(params, units):
            return jax.vmap(lambda v: jax.jvp(problem, (params,), (v,))[1])(units)

    else:

        def block(params, units):
            _, vjp = jax.vjp(problem, params)
            return jax.vmap(lambda u: vjp(u)[0])(units)

    params = jax.ShapeDtypeStruct(flat0.shape, flat0.dtype)
    sizes = []
    try:
        for width in (1, PROBE_WIDTH + 1):
            units = jax.ShapeDtypeStruct((width, n if jac_mode == "fwd" else m), flat0.dtype)
            analysis = jax.jit(block).lower(params, units).compile().memory_analysis()
            sizes.append(int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes))
    except Exception:  # no memory analysis on this backend
        return floor, 0
    per_product = max((sizes[1] - sizes[0]) // PROBE_WIDTH, floor)
    return per_product, max(sizes[0] - per_product, 0)
