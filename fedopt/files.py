"""Reading input files and checking output paths, with one-line errors.

Every file fedopt reads on a user's behalf (config YAML, TSV, run-folder JSON) goes through
:func:`read_text`, and every output path is checked with :func:`check_output_dir` or
:func:`check_output_file` before any work starts. An I/O or decoding problem becomes a
:class:`~fedopt.errors.ConfigError` whose message names the option (``what``) and the path,
so the CLI prints one line and exits 2 instead of a traceback, possibly after minutes of work.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError, FedoptError

__all__ = ["read_text", "read_bytes", "check_input_file", "check_output_dir", "check_output_file",
           "MAX_INPUT_BYTES"]


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


MAX_INPUT_BYTES = 256 * 2**20  # 256 MiB: no input fedopt reads is near this but checkpoints


def check_input_file(path: str | os.PathLike, what: str, error: type[FedoptError] = ConfigError,
                     limit: int = MAX_INPUT_BYTES) -> os.stat_result:
    """Refuse, with one line, anything at ``path`` that is not a regular file of at most
    ``limit`` bytes: a FIFO, a device (``/dev/zero``), a socket would block or never end."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{what}: file not found: {p}") from None
    except OSError as exc:  # PermissionError on a parent, a path under a file, a loop, ...
        raise error(f"{what}: cannot read {p} ({_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what}: {p} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what}: {p} is not a regular file")
    if st.st_size > limit:
        raise error(f"{what}: {p} is {st.st_size} bytes, over the {limit // 2**20} MiB limit "
                    f"for an input file")
    return st


def read_bytes(path: str | os.PathLike, what: str, error: type[FedoptError] = ConfigError,
               limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`check_input_file`); opened without
    blocking, so a FIFO swapped in after the check cannot hang the read."""
    p = Path(path)
    check_input_file(p, what, error, limit)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise error(f"{what}: {p} is not a regular file")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what}: file not found: {p}") from None
    except IsADirectoryError:
        raise error(f"{what}: {p} is a folder, not a file") from None
    except OSError as exc:  # PermissionError, a path under a file, a name too long, ...
        raise error(f"{what}: cannot read {p} ({_reason(exc)})") from None
    if len(data) > limit:
        raise error(f"{what}: {p} is over the {limit // 2**20} MiB limit for an input file")
    return data


def read_text(path: str | os.PathLike, what: str, error: type[FedoptError] = ConfigError) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable, non-regular (FIFO, device), too large
    (over :data:`MAX_INPUT_BYTES`) or non-UTF-8 file is an ``error`` of one line."""
    p = Path(path)
    data = read_bytes(p, what, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: {p} is not UTF-8 text (byte {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open()


def _existing_ancestor(p: Path) -> tuple[Path, list[Path]]:
    """The deepest existing ancestor of ``p`` (or ``p``) and the missing levels, top first."""
    missing: list[Path] = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    return q, missing[::-1]


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder; leave nothing behind.

    The check is a real one (create the missing levels and a temporary file in the folder,
    then remove exactly what it created): permission bits say little for root or for
    /proc-like file systems.
    """
    if not str(path).strip():
        raise ConfigError(f"{what}: an empty path")
    p = Path(path)
    created: list[Path] = []
    try:
        top, missing = _existing_ancestor(p)
        if not top.is_dir():
            where = "is a file" if top == p else f"is under a file ({top})"
            raise ConfigError(f"{what}: {p} {where}; expected a folder")
        for level in missing:
            level.mkdir()
            created.append(level)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".fedopt-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write to folder {p} ({_reason(exc)})") from None
    finally:
        for level in reversed(created):
            try:
                level.rmdir()
            except OSError:
                pass  # someone else wrote into it meanwhile: theirs to keep
    return p


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Check that the file ``path`` can be written (its folder creatable); change nothing."""
    if not str(path).strip():
        raise ConfigError(f"{what}: an empty path")
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what}: {p} is a folder; expected a file name")
    top, _ = _existing_ancestor(p.parent)
    if not top.is_dir():
        raise ConfigError(f"{what}: {p} is under a file ({top})")
    check_output_dir(p.parent, what)
    if p.exists():
        try:  # opened for update, not truncated: the content stays as it is
            with open(p, "r+b"):
                pass
        except OSError as exc:
            raise ConfigError(f"{what}: cannot write to {p} ({_reason(exc)})") from None
    return p
