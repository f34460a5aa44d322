"""The CLI's input layer: argparse value types for every number, list and path option.

Each type checks its value when the command line is parsed, before any work starts, and a
bad value is argparse's one-line error naming the option (exit code 2). Files the commands
read go through :func:`fedopt.files.read_text`; output paths are probed here with
:func:`fedopt.files.check_output_dir` / :func:`~fedopt.files.check_output_file` (which leave
nothing behind). Factories return functions whose ``__name__`` reads well in argparse's
"invalid ... value" fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Callable, Iterator

from ..errors import FedoptError
from ..files import check_output_dir, check_output_file

__all__ = ["number", "integer", "positive_int", "nonneg_int", "seed", "positive_float",
           "nonneg_float", "fraction", "open_fraction", "int_list", "float_list", "list_of",
           "positive_int_list", "positive_float_list", "fraction_list", "name_list",
           "output_dir", "output_file", "MAX_SEED", "cpu_count", "writing"]


def _show(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {_show(lo)}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {_show(hi)}"
    return f"in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}{')' if hi_open else ']'}"


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, name: str = "number") -> Callable[[str], float]:
    """A finite float in the interval; NaN and ±inf are refused."""
    want = "must be a finite number"
    if lo is not None or hi is not None:
        want += " " + _interval(lo, hi, lo_open, hi_open)

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) \
            and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"{want}, got {text!r}")
        return v

    parse.__name__ = name
    return parse


def integer(lo: int | None = None, hi: int | None = None, *, name: str = "integer") -> Callable[[str], int]:
    """An integer (written as one: ``3``, not ``3.0``) in [lo, hi]."""
    want = "must be an integer"
    if lo is not None or hi is not None:
        want += " " + _interval(lo, hi, False, False)

    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{want}, got {text!r}")
        return v

    parse.__name__ = name
    return parse


_finite = number()
positive_int = integer(1, name="positive integer")
nonneg_int = integer(0, name="non-negative integer")
MAX_SEED = 2**63 - 1  # one rule for every seed: the run key ``seed`` has the same bound
seed = integer(0, MAX_SEED, name="seed")
#: a count of CPUs (--cpus, --jobs): at least 1, at most this machine's os.cpu_count()
cpu_count = integer(1, os.cpu_count() or 1, name="CPU count")
positive_float = number(0.0, lo_open=True, name="positive number")
nonneg_float = number(0.0, name="non-negative number")
fraction = number(0.0, 1.0, lo_open=True, name="fraction")  # (0, 1]: a share of a budget
open_fraction = number(0.0, 1.0, lo_open=True, hi_open=True, name="tolerance")  # (0, 1)


def _entries(text: str) -> list[str]:
    parts = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list without empty "
                                         f"entries, got {text!r}")
    return parts


def _each(text: str, parse: Callable[[str], float]) -> list:
    parts = _entries(text)
    out = []
    for part in parts:
        try:
            out.append(parse(part))
        except argparse.ArgumentTypeError as exc:
            where = f"entry {part!r} of {text!r}: " if len(parts) > 1 else ""
            raise argparse.ArgumentTypeError(f"{where}{exc}") from None
    return out


def int_list(text: str, lo: int | None = None) -> list[int]:
    """``"3,5,8"`` -> [3, 5, 8]; an empty entry (``3,,5``) or a bad integer is refused."""
    return _each(text, integer(lo))


def float_list(text: str, each: Callable[[str], float] | None = None) -> list[float]:
    """``"0.1,0.2"`` -> [0.1, 0.2]; every entry a finite number, checked by ``each`` if given."""
    each = each or _finite
    return _each(text, each)


def list_of(parse: Callable[[str], list], *args, name: str) -> Callable[[str], list]:
    """``parse`` with fixed extra arguments, named for argparse (``int_list`` with lo=1)."""
    def typed(text: str) -> list:
        return parse(text, *args)

    typed.__name__ = name
    return typed


positive_int_list = list_of(int_list, 1, name="list of positive integers")
positive_float_list = list_of(float_list, positive_float, name="list of positive numbers")
fraction_list = list_of(float_list, fraction, name="list of fractions")


def name_list(text: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"]; no empty entries. The caller checks the names."""
    return _entries(text)


def _path_type(check: Callable, name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text, "path")
        except FedoptError as exc:  # "path: ..." -> argparse names the option itself
            raise argparse.ArgumentTypeError(str(exc).removeprefix("path: ")) from None
        return text

    parse.__name__ = name
    return parse


#: an output folder: writable, not a file, not under a file (probed; nothing is left behind)
output_dir = _path_type(check_output_dir, "output folder")
#: an output file: its folder writable, not itself a folder; an existing file is not changed
output_file = _path_type(check_output_file, "output file")


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """Around a write at the end of a command (not checkable beforehand: a full disk, a
    quota): an OSError becomes one :class:`FedoptError` line naming the file (exit code 2)."""
    try:
        yield
    except OSError as exc:
        raise FedoptError(f"cannot write {path}: {exc.strerror or exc}") from None
