"""Argument checks for the library's public entry points (allocator, policies).

A wrong type is a ``TypeError``, a wrong value an :class:`~fedopt.errors.InstanceError` (a
``ValueError``); every message is one line that names the argument and, for arrays, the first
offending index. numpy's own casts are not used for this: ``np.asarray(["no"], bool)`` is True
and ``int(nan)`` names nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from .errors import InstanceError

__all__ = ["bool_mask", "integer", "real", "numeric_array", "choice"]


def _index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _array(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        raise InstanceError(f"{name}: not a rectangular array (rows of different lengths)") from None


def bool_mask(name: str, value, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a bool array: bools, numpy bools or the integers 0/1; nothing else.

    Strings, floats (NaN included) and None are a ``TypeError`` naming the first such entry;
    another integer or a wrong shape is an ``InstanceError``.
    """
    arr = _array(name, value)
    if arr.dtype == bool:
        pass
    elif arr.dtype.kind in "iu":
        bad = np.argwhere((arr != 0) & (arr != 1))
        if bad.size:
            i = tuple(bad[0])
            raise InstanceError(f"{name}{_index(i)} = {arr[i]}; expected a boolean (or 0/1)")
        arr = arr.astype(bool)
    elif arr.dtype == object:
        for i, v in np.ndenumerate(arr):
            ok = isinstance(v, (bool, np.bool_)) or (
                isinstance(v, (int, np.integer)) and v in (0, 1))
            if not ok:
                raise TypeError(f"{name}{_index(i)} is {v!r} ({type(v).__name__}); expected a boolean")
        arr = arr.astype(bool)
    else:  # floats (NaN is not a truth value), strings, bytes, complex, ...
        if arr.ndim == 0:
            raise TypeError(f"{name}: expected booleans, got {arr.item()!r}")
        flat = arr.reshape(-1)
        j = 0
        if arr.dtype.kind == "f":  # point at the NaN if there is one
            nan = np.flatnonzero(np.isnan(flat))
            j = int(nan[0]) if nan.size else 0
        i = np.unravel_index(j, arr.shape)
        v = flat[j].item()
        raise TypeError(f"{name}{_index(i)} is {v!r} ({type(v).__name__}); expected a boolean")
    if shape is not None and arr.shape != tuple(shape):
        raise InstanceError(f"{name}: shape {arr.shape}, expected {tuple(shape)}")
    return arr


def integer(name: str, value, lo: int | None = 0) -> int:
    """An integer (``int`` or numpy integer, not bool) ≥ ``lo``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if lo is not None and value < lo:
        raise InstanceError(f"{name}: must be an integer >= {lo}, got {value}")
    return value


def real(name: str, value, lo: float | None = None, *, strict: bool = False) -> float:
    """A finite real number (not bool, not a string) ≥ ``lo`` (> ``lo`` with ``strict``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)) \
            or isinstance(value, (complex, np.complexfloating)):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise InstanceError(f"{name}: must be finite, got {v}")
    if lo is not None and (v <= lo if strict else v < lo):
        raise InstanceError(f"{name}: must be {'>' if strict else '>='} {lo:g}, got {v:g}")
    return v


def numeric_array(name: str, value, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float array; strings, None and other non-numbers are a ``TypeError``."""
    arr = _array(name, value)
    if arr.dtype == object:
        for i, v in np.ndenumerate(arr):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.number)):
                raise TypeError(f"{name}{_index(i)} is {v!r} ({type(v).__name__}); expected a number")
    elif arr.dtype.kind not in "iuf":  # bools are not numbers here (True would read as 1.0)
        raise TypeError(f"{name}: expected numbers, got an array of {arr.dtype}")
    arr = arr.astype(float)
    if ndim is not None and arr.ndim != ndim:
        raise InstanceError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    return arr


def choice(name: str, value, options: Sequence[str]) -> str:
    """One of ``options`` (strings)."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {', '.join(map(repr, options))}, "
                        f"got {value!r} ({type(value).__name__})")
    if value not in options:
        raise InstanceError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return value
