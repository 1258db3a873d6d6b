"""Data sharded over devices: how a solve's rows are laid out, and what the linear algebra does
with that layout.

nlls has no communication layer of its own. A solve is one jitted program; when its array
arguments are ``jax.Array``s sharded over a ``jax.sharding.Mesh``, XLA's partitioner splits every
operation and inserts the collectives. This module only tells the partitioner what it cannot
guess, for the two operations where its default is to gather the whole Jacobian on every device:

* **The m×m Gram matrix of the minimum-norm path**, ``K = Jₛ Jₛᵀ``. With the rows of ``J`` spread
  over ``D`` devices, each entry pairs rows of two devices, so the default gathers ``J``. Spreading
  ``Jₛ`` by *columns* instead (an all-to-all: every device still holds 1/D of it) makes ``K`` a sum
  of ``D`` local products, ``K = Σ_d Jₛ[:, C_d] Jₛ[:, C_d]ᵀ``: one all-reduce of m×m numbers.
* **The QR of a tall Jacobian with few columns** (``n ≤ QR_MAX_N`` on the normal path). A
  Householder QR of row-sharded ``[Jₛ r]`` is not partitioned; the default gathers it. A tall-skinny
  QR (TSQR) factors each device's block of rows on its own and then the ``D`` stacked
  ``(n+1)×(n+1)`` triangles: ``[Jₛ r] = diag(Q_d) [R_1; …; R_D]`` and ``[R_1; …; R_D] = Q' R`` give
  ``[Jₛ r] = (diag(Q_d) Q') R``, the same ``R`` up to the signs of its rows (which the solves do
  not see), as stable as one QR (Demmel, Grigori, Hoemmen & Langou 2012).

The normal path's Gram ``JₛᵀJₛ`` and ``Jₛᵀr``, the column norms, ``Jᵀz`` and the Krylov products are
sums over rows: the partitioner computes them locally and all-reduces n numbers (n×n for the Gram),
with no hint. The residual and ``J`` stay sharded by rows throughout.

The layout is found from the arguments (``layout_of``): an array argument placed with a
``NamedSharding`` whose first dimension is split over one mesh axis says that the samples, and so
the residual's rows, are split over that axis. The hints are layout only: they change where
numbers live, never the numbers a device computes, so a layout guessed wrongly costs traffic, not
accuracy. Under the caller's own ``jax.jit`` the arguments are tracers, which carry no placement:
no hints, and the partitioner's defaults apply.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class Rows:
    """The residual's rows split evenly over the mesh axis ``axis`` (``count`` devices)."""

    mesh: Mesh
    axis: str

    @property
    def count(self) -> int:
        return int(self.mesh.shape[self.axis])

    def by_rows(self, array):
        """``array`` split along its first dimension (the samples, or the rows of ``J``)."""
        return jax.lax.with_sharding_constraint(array, NamedSharding(self.mesh, P(self.axis)))

    def by_columns(self, matrix):
        """``matrix`` split along its second dimension (the parameters' columns of ``J``)."""
        spec = P(None, self.axis)
        return jax.lax.with_sharding_constraint(matrix, NamedSharding(self.mesh, spec))


def data_axis(mesh: Mesh) -> str:
    """The mesh axis the samples are split over: ``"data"`` when the mesh has such an axis, else
    its only axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = tuple(mesh.axis_names)
    if "data" in names:
        return "data"
    if len(names) == 1:
        return names[0]
    raise ValueError(
        f"the mesh has axes {names} and none is called 'data': call the axis that the samples "
        "are split over 'data'"
    )


def shard_samples(tree, mesh: Mesh, axis: str, what: str = "the data"):
    """Every array leaf of ``tree`` placed with its first dimension (the samples) split over the
    mesh axis ``axis``, the other dimensions whole. A leaf already placed so is kept as it is
    (a ``jax.Array`` spread over several processes, as ``jax.make_array_from_process_local_data``
    builds it, cannot be moved from one process)."""
    sharding = NamedSharding(mesh, P(axis))
    count = int(mesh.shape[axis])

    def place(leaf):
        if not hasattr(leaf, "shape") or np.ndim(leaf) == 0:
            return leaf
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        if leaf.shape[0] % count:
            raise ValueError(
                f"{what} has {leaf.shape[0]} samples, which the mesh axis {axis!r} cannot split "
                f"into {count} equal parts: give a multiple of {count} samples (or a mesh with "
                "fewer devices on that axis)"
            )
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(place, tree)


def layout_of(tree) -> Rows | None:
    """The row layout that the array leaves of ``tree`` announce: the first leaf whose first
    dimension is split over exactly one mesh axis of more than one device; ``None`` when no leaf
    is (single-device arrays, tracers, NumPy arrays, replicated arrays)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
            continue
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, NamedSharding) or leaf.ndim == 0:
            continue
        first = sharding.spec[0] if len(sharding.spec) else None
        if isinstance(first, tuple) and len(first) == 1:
            first = first[0]
        if isinstance(first, str) and sharding.mesh.shape[first] > 1:
            return Rows(sharding.mesh, first)
    return None


def gram_rows(scaled, layout: Rows | None):
    """``Jₛ Jₛᵀ`` (m×m) with ``Jₛ`` split by columns first when its rows are sharded."""
    if layout is not None:
        scaled = layout.by_columns(scaled)
    return scaled @ scaled.T


def qr_r(augmented, layout: Rows | None):
    """The ``R`` factor of a tall matrix (``jnp.linalg.qr(mode="r")``, at least as many rows as
    columns), by TSQR over the layout's ``D`` blocks of rows when there is one and the rows split
    evenly."""
    rows, columns = augmented.shape
    count = 1 if layout is None else layout.count
    if count == 1 or rows % count:
        return jnp.linalg.qr(augmented, mode="r")
    blocks = augmented.reshape(count, rows // count, columns)
    blocks = layout.by_rows(blocks)
    short = max(columns - rows // count, 0)  # a block with fewer rows than columns: zero rows
    blocks = jnp.pad(blocks, ((0, 0), (0, short), (0, 0)))
    triangles = jax.vmap(lambda block: jnp.linalg.qr(block, mode="r")[:columns])(blocks)
    return jnp.linalg.qr(triangles.reshape(count * columns, columns), mode="r")


# Several processes (``jax.distributed``): every process runs the same Python, the same compiled
# programs on its own devices, and the host-side logic between them. What one process decides
# alone (a time limit, Ctrl-C, a callback's verdict) must be made the same everywhere, or the
# others would wait in the next collective for ever; what is written to disk is written once.


def leads() -> bool:
    """Whether this process writes what is written once (checkpoints, progress bars): process 0."""
    return jax.process_index() == 0


def host_value(array) -> np.ndarray:
    """The whole of ``array`` as a NumPy array in this process. An array spread over several
    processes is gathered from all of them: a collective, which every process must reach at the
    same point of the run."""
    if (
        isinstance(array, jax.Array)
        and not array.is_fully_addressable
        and not array.is_fully_replicated
    ):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def agreed(flags: tuple[bool, ...]) -> tuple[bool, ...]:
    """Process 0's ``flags`` in every process (one small broadcast when there are several)."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    shared = multihost_utils.broadcast_one_to_all(np.asarray(flags, dtype=np.int32))
    return tuple(bool(flag) for flag in np.asarray(shared))


def placed_like(leaves: list, shardings: list) -> list:
    """Host arrays (the same in every process) placed as the program expects its inputs: each
    process fills its own devices' parts."""
    return [
        jax.make_array_from_callback(leaf.shape, placement, lambda index, leaf=leaf: leaf[index])
        for leaf, placement in zip(leaves, shardings, strict=True)
    ]
