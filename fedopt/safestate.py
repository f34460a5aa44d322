"""State trees as JSON plus numpy arrays, in one ``.npz`` file: never pickle.

A *state tree* is what ``state_dict()`` methods return: nested ``dict`` (string keys),
``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool``, ``None``, numpy scalars and numpy
arrays of a non-object dtype (a numpy ``Generator``'s ``bit_generator.state`` is such a
dict). :func:`dumps` turns a tree into the bytes of an ``.npz`` archive: every array is a
member ``a<i>.npy`` and the rest of the tree is JSON in the member ``__state__.npy`` (uint8),
with the format name, its version and a sha256 over the JSON and every array. :func:`loads`
reads it back with ``np.load(allow_pickle=False)``, so loading a file runs no code, and turns
anything it cannot trust (damaged, foreign, newer, checksum mismatch) into a
:class:`~fedopt.errors.StateFileError` of one line.

Markers inside the JSON are objects with one ``$``-key: ``{"$array": "a3"}``,
``{"$tuple": [...]}``, ``{"$np": "float32", "v": 1.5}``, ``{"$float": "nan"}`` (JSON has no
NaN), so a resumed run gets back exactly the types it saved.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import StateFileError

__all__ = ["Stateful", "dumps", "loads", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_HEADER = "__state__"


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state round-trips through :func:`dumps` / :func:`loads`."""

    def state_dict(self) -> dict:
        """Plain data (a state tree, see the module docstring)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


def _encode(v: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise TypeError(f"state {where}: an object array cannot be stored without pickle")
        name = f"a{len(arrays)}"
        arrays[name] = v
        return {"$array": name}
    if isinstance(v, np.generic):
        return {"$np": v.dtype.str, "v": _encode(v.item(), arrays, where)}
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": repr(v)}
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise TypeError(f"state {where}: key {k!r} (keys are strings not starting with '$')")
            out[k] = _encode(x, arrays, f"{where}.{k}")
        return out
    if isinstance(v, list):
        return [_encode(x, arrays, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, tuple):
        return {"$tuple": [_encode(x, arrays, f"{where}[{i}]") for i, x in enumerate(v)]}
    raise TypeError(f"state {where}: {type(v).__name__} is not plain data")


def _decode(v: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    if not isinstance(v, dict):
        return v
    if "$array" in v:
        return arrays[v["$array"]]
    if "$tuple" in v:
        return tuple(_decode(x, arrays) for x in v["$tuple"])
    if "$np" in v:
        return np.dtype(v["$np"]).type(_decode(v["v"], arrays))
    if "$float" in v:
        return float(v["$float"])
    return {k: _decode(x, arrays) for k, x in v.items()}


def _digest(state_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(state_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dumps(state: dict, kind: str) -> bytes:
    """The ``.npz`` bytes of a state tree; ``kind`` names what it is (``fedopt-checkpoint``)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, arrays, "")
    # key order is kept (a metrics row's keys are its CSV columns), so no sort_keys anywhere
    state_json = json.dumps(tree, separators=(",", ":"), allow_nan=False)
    header = json.dumps({"format": kind, "version": FORMAT_VERSION,
                         "sha256": _digest(state_json, arrays), "state": tree},
                        separators=(",", ":"), allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, **{_HEADER: np.frombuffer(header.encode(), dtype=np.uint8)}, **arrays)
    return buf.getvalue()


def loads(data: bytes, kind: str, what: str = "state file") -> dict:
    """The state tree in ``data`` (bytes of :func:`dumps`); :class:`StateFileError` naming
    ``what`` if it is damaged, of another kind or version, or fails its checksum."""
    if not data:
        raise StateFileError(f"{what} is empty (damaged)")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy: a bare array, no `with`
            raise StateFileError(f"{what} is damaged or not a {kind} file (a single numpy "
                                 f"array, not an .npz archive)")
        with loaded as npz:
            members = {name: npz[name] for name in npz.files}
    except StateFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile,
            NotImplementedError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in detail:  # numpy's guess for anything that is neither .npz nor .npy
            detail = "not an .npz archive; fedopt never unpickles a file"
        raise StateFileError(f"{what} is damaged or not a {kind} file ({detail})") from None
    raw = members.pop(_HEADER, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise StateFileError(f"{what} is not a {kind} file (no {_HEADER} record)")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError):
        raise StateFileError(f"{what} is damaged (its {_HEADER} record is not JSON)") from None
    except RecursionError:  # [[[[...]]]] nested past Python's recursion limit
        raise StateFileError(f"{what} is damaged (its {_HEADER} record is nested too "
                             f"deeply)") from None
    if not isinstance(header, dict) or header.get("format") != kind:
        found = header.get("format") if isinstance(header, dict) else None
        raise StateFileError(f"{what} is not a {kind} file (format {found!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateFileError(f"{what} is damaged (format version {version!r})")
    if version > FORMAT_VERSION:
        raise StateFileError(f"{what} was written by a newer fedopt (format version {version}; "
                             f"this fedopt reads version {FORMAT_VERSION}); upgrade fedopt")
    tree = header.get("state")
    try:
        state_json = json.dumps(tree, separators=(",", ":"))
    except (RecursionError, ValueError):
        raise StateFileError(f"{what} is damaged (its state is nested too deeply)") from None
    if header.get("sha256") != _digest(state_json, members):
        raise StateFileError(f"{what} fails its sha256 checksum (damaged or edited)")
    try:
        state = _decode(tree, members)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StateFileError(f"{what} is damaged (its state refers to missing arrays)") from None
    except RecursionError:
        raise StateFileError(f"{what} is damaged (its state is nested too deeply)") from None
    if not isinstance(state, dict):
        raise StateFileError(f"{what} is damaged (its state is not a mapping)")
    return state
