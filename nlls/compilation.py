"""Compiled programs kept on disk between processes: JAX's persistent compilation cache, opt-in.

Most of the first call of a small fit is XLA compiling the solve (about a second here; the warm
call takes a millisecond). Within a process nlls keeps its compiled plans (``nlls.plan``); across
processes (a script run again, a notebook kernel restarted) only JAX's persistent cache can. It is
off unless asked for, because it writes to disk and it is JAX's global setting, shared with the
rest of the program: nlls never changes it on import.

    >>> import nlls
    >>> directory = nlls.enable_compilation_cache()  # doctest: +SKIP

Or, with nothing in the code, set ``NLLS_COMPILATION_CACHE=1`` (the default directory) or
``NLLS_COMPILATION_CACHE=/some/dir`` in the environment before ``import nlls``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

#: The environment variable that turns the cache on at import (``1``/``true``, or a directory).
ENVIRONMENT = "NLLS_COMPILATION_CACHE"


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/nlls/jax`` (``~/.cache/nlls/jax`` when it is not set)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nlls" / "jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path:
    """Keep compiled programs in ``directory`` (default ``default_directory()``), so that a new
    process reads a solve's program from disk instead of compiling it again.

    Sets JAX's ``jax_compilation_cache_dir`` and caches every program however quick its compile
    (``jax_persistent_cache_min_compile_time_secs = 0``, ``..._min_entry_size_bytes = 0``): a small
    fit's programs compile in a fraction of a second each, below JAX's default threshold of one
    second. These are JAX's global settings; they apply to all of the process's JAX programs.

    Returns the directory, created if needed. Call it before the first solve: JAX reads the
    setting when it first compiles.
    """
    path = Path(directory) if directory is not None else default_directory()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def enable_from_environment() -> Path | None:
    """``enable_compilation_cache`` as ``NLLS_COMPILATION_CACHE`` asks (unset, empty or ``0``:
    off)."""
    value = os.environ.get(ENVIRONMENT, "").strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return enable_compilation_cache()
    return enable_compilation_cache(value)
