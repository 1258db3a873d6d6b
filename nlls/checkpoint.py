"""The checkpoint file: the full solver state of a solve, written atomically, read back only when it
matches the problem being solved.

Format: a NumPy ``.npz`` archive (no pickles) holding

* ``meta``: a JSON string with ``format`` (``"nlls-checkpoint"``), ``version``, the problem
  ``signature`` (method and its options, linear path, AD mode, tolerances, parameter structure, shapes
  and dtypes, residual size), the tree structure of the solver state, and ``step``/``iteration``;
* ``state_0`` … ``state_k``: the leaves of the solver state (``nlls.loop.LoopState``), bit for bit;
* ``params``: the current parameters, flattened (for reading a checkpoint by hand).

The file is written to a temporary file in the same folder, flushed to disk, and renamed over the
target, so a crash while saving leaves the previous checkpoint intact (the next save removes the
temporary file such a crash left). Each archive member carries a
CRC that is checked on reading, so a damaged file is refused, never half-used.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .sharding import host_value, leads

FORMAT = "nlls-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that belongs to another problem or solver."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be written; the solve went on (``nlls.Checkpoint``)."""


def save(path: str | os.PathLike, state, signature: str) -> None:
    """Write ``state`` (a solver state pytree) to ``path`` atomically. In a run of several
    processes (``jax.distributed``) every process must call this at the same point: the parts of
    the state spread over processes are gathered, and process 0 writes the file."""
    path = Path(path)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    arrays = {f"state_{i}": host_value(leaf) for i, leaf in enumerate(leaves)}
    params = host_value(state.point.params)
    if not leads():
        return
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "signature": signature,
        "treedef": str(treedef),
        "step": int(state.steps),
        "iteration": int(state.iterations),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # A process killed while writing leaves its temporary file behind: remove those of this target.
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(
                file,
                meta=np.array(json.dumps(meta)),
                params=params,
                **arrays,
            )
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint (signature, step, iteration)."""
    return _read(path)[0]


def load(path: str | os.PathLike, like, signature: str):
    """The solver state saved at ``path``, checked against ``signature`` and the structure, shapes and
    dtypes of ``like`` (a state or its ``jax.eval_shape``)."""
    meta, arrays = _read(path)
    if meta["signature"] != signature:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} was saved by a different solve and cannot be resumed "
            f"here.\n  saved:   {meta['signature']}\n  current: {signature}"
        )
    expected, treedef = jax.tree_util.tree_flatten(like)
    if meta["treedef"] != str(treedef) or len(arrays) != len(expected):
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} holds a solver state of another structure "
            "(saved by another version of nlls?); it cannot be resumed"
        )
    leaves = []
    for i, (saved, want) in enumerate(zip(arrays, expected, strict=True)):
        if saved.shape != tuple(want.shape) or saved.dtype != want.dtype:
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r}: state leaf {i} is {saved.dtype}{list(saved.shape)}, "
                f"expected {want.dtype}{list(want.shape)}; it cannot be resumed"
            )
        leaves.append(jnp.asarray(saved))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            count = sum(1 for name in archive.files if name.startswith("state_"))
            arrays = [archive[f"state_{i}"] for i in range(count)]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
    ) as error:
        raise CheckpointError(
            f"{path!r} is not a readable nlls checkpoint (corrupt or another kind of file): {error}"
        ) from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not an nlls checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path!r} is an nlls checkpoint of format version {meta.get('version')}, "
            f"this nlls reads version {VERSION}"
        )
    return meta, arrays
