"""Functions as cache keys by what they compute, not by which object they are.

Re-running a notebook cell, or writing ``lambda p: ...`` inside a loop, makes a new function object
with the same code every time. Keyed by identity, each one would trace and compile its plan anew
(about a second for a small curve fit). ``SameCode(f)`` is equal to ``SameCode(g)`` when calling
``f`` and ``g`` must give the same result as far as Python can tell:

* the same code (code objects compare by their bytecode, constants, names and line numbers; a
  comprehension or an inner function inside counts as part of it),
* equal defaults and closure values: numbers, strings, ``None`` and tuples of them by value (with
  their type: ``1`` and ``1.0`` differ), functions by this same rule, anything else (arrays,
  modules, models) by identity,
* the same global namespace (the module, or a notebook's ``__main__``: the namespace can change
  after the key is made, and the plan calls the function it was built with), and in it the same
  objects behind every global name the code reads (identity: a cell that rebinds ``x = ...`` to
  new data makes a new key, as it must, because the compiled program holds the old ``x`` as a
  constant).

What Python cannot see is not compared: an array changed in place, or a global mutable object
whose contents change. Neither can identity keys see them, which is what a plain ``jax.jit`` uses.
A function that is not a plain Python function (a ``functools.partial``, a callable object, a
builtin) is its own key.

``digest`` is the process-independent counterpart for checkpoints: a short hash of a function's
code and constants, or of the bytes of data, that a checkpoint stores and compares on resuming.
"""

from __future__ import annotations

import hashlib
import types
from typing import Any

import jax
import numpy as np

from .sharding import host_value

_VALUES = (int, float, complex, str, bytes, bool, type(None))


class SameCode:
    """A cache key for a Python function (see the module docstring); ``function`` is the function."""

    __slots__ = ("_key", "function")

    def __init__(self, function: types.FunctionType):
        self.function = function
        self._key = _function_key(function, set())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, SameCode) and self._key == other._key

    def __repr__(self) -> str:
        return f"SameCode({self.function!r})"


class _Identity:
    """An object compared by identity (and kept alive while the key lives)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Identity) and self.value is other.value


def keyed(value):
    """``SameCode(value)`` for a plain Python function, ``value`` itself otherwise."""
    return SameCode(value) if isinstance(value, types.FunctionType) else value


def unkeyed(value):
    """The inverse of ``keyed``."""
    return value.function if isinstance(value, SameCode) else value


def _function_key(function: types.FunctionType, seen: set) -> tuple:
    if id(function) in seen:  # a recursive inner function: its code is already in the key
        return ("recursive", function.__code__)
    seen = seen | {id(function)}
    code = function.__code__
    closure = tuple(_value_key(_cell(cell), seen) for cell in function.__closure__ or ())
    namespace = function.__globals__
    global_objects = tuple(
        (name, _value_key(namespace[name], seen) if name in namespace else None)
        for name in sorted(_global_names(code))
    )
    return (
        code,
        _Identity(namespace),
        _value_key(function.__defaults__, seen),
        _value_key(tuple(sorted((function.__kwdefaults__ or {}).items())), seen),
        closure,
        global_objects,
    )


def _cell(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a variable assigned after the function was made)
        return _EMPTY


_EMPTY = object()


def _global_names(code: types.CodeType) -> set:
    """The names ``code`` and the code nested in it (comprehensions, inner functions) may read as
    globals (``co_names`` also holds attribute names; those not in the globals are skipped)."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _value_key(value, seen: set):
    if type(value) in _VALUES:
        return (type(value), value)
    if type(value) is tuple:
        return ("tuple",) + tuple(_value_key(item, seen) for item in value)
    if isinstance(value, types.FunctionType):
        return _function_key(value, seen)
    return _Identity(value)


def digest(value) -> str:
    """A digest of ``value`` that is the same in every process (unlike ``hash``), for a checkpoint
    to recognise its problem: arrays by their dtype, shape and bytes; numbers, strings and ``None``
    by ``repr``; Python functions by their code (bytecode, constants, names; not the file name or
    line numbers, so moving a function does not change it) with their defaults and closure values;
    lists, tuples and dicts item by item; other objects by their array leaves as a JAX pytree, or by
    their type's name when they have none."""
    hasher = hashlib.sha256()
    _feed(hasher, value, set())
    return hasher.hexdigest()[:16]


def _feed(hasher, value, seen: set) -> None:
    if type(value) in _VALUES:
        hasher.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, types.FunctionType):
        if id(value) in seen:
            hasher.update(b"recursive;")
            return
        seen = seen | {id(value)}
        hasher.update(b"function:")
        _feed_code(hasher, value.__code__)
        _feed(hasher, value.__defaults__, seen)
        _feed(hasher, tuple(sorted((value.__kwdefaults__ or {}).items())), seen)
        _feed(hasher, tuple(_cell(cell) for cell in value.__closure__ or ()), seen)
    elif isinstance(value, list | tuple):
        hasher.update(f"{type(value).__name__}[{len(value)}]:".encode())
        for item in value:
            _feed(hasher, item, seen)
    elif isinstance(value, dict):
        hasher.update(f"dict[{len(value)}]:".encode())
        for key in sorted(value, key=repr):
            _feed(hasher, key, seen)
            _feed(hasher, value[key], seen)
    elif hasattr(value, "dtype") and hasattr(value, "shape"):
        array = host_value(value)  # gathered when spread over processes (every process digests)
        hasher.update(f"array:{array.dtype}{list(array.shape)}:".encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    else:
        leaves = jax.tree_util.tree_leaves(value)
        if len(leaves) == 1 and leaves[0] is value:
            hasher.update(f"object:{type(value).__qualname__};".encode())
        else:
            # The type and leaf count, not the tree's repr: static fields may print addresses.
            hasher.update(f"tree:{type(value).__qualname__}[{len(leaves)}]:".encode())
            for leaf in leaves:
                _feed(hasher, leaf, seen)


def _feed_code(hasher, code: types.CodeType) -> None:
    hasher.update(code.co_code)
    hasher.update(repr((code.co_names, code.co_varnames, code.co_argcount)).encode())
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            _feed_code(hasher, constant)
        elif isinstance(constant, frozenset):  # `x in {...}`: its repr's order varies by process
            hasher.update(f"frozenset{sorted(map(repr, constant))};".encode())
        else:
            hasher.update(f"{constant!r};".encode())
