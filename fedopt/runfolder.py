"""Run folders: what counts as a run, the refusal to write over one, and atomic writes.

Every command that writes a run folder (``simulate``, ``experiment``, ``flower simulate``)
calls :func:`prepare_out` before any work: a folder that already holds a run is refused with
one line naming ``--resume`` and ``--overwrite``; with ``--overwrite`` the old run's files are
removed first (files fedopt did not write are left alone), so nothing stale stays beside the
new results. Results are written with :func:`atomic_write_text` / :func:`atomic_write_bytes`:
a temporary file in the same folder, fsync, then ``os.replace``, so a kill at any moment
leaves the old file or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from .errors import RunFolderError

__all__ = ["RUN_MARKERS", "run_files", "holds_run", "prepare_out", "clear_run",
           "atomic_write_text", "atomic_write_bytes", "remove_stale_temporaries"]

# an entry with one of these names makes a folder a run (a finished or a killed one)
RUN_MARKERS = ("config.yaml", "summary.json", "metrics.csv", "checkpoint.npz", "checkpoint.pkl",
               "comparison.json", "fedlora", "lora", "runs")
# everything fedopt writes into a run folder (a figure's folder included): --overwrite clears these
_RUN_PATTERNS = RUN_MARKERS + ("timing.json", "*.png", "fig*.csv", "fig*.md", ".checkpoint-*.tmp",
                               ".*.tmp")
_TMP_PREFIX = ".fedopt-"


def run_files(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` that fedopt writes as part of a run (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if any(fnmatch.fnmatchcase(p.name, pat) for pat in _RUN_PATTERNS))


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run: one of :data:`RUN_MARKERS` is in it."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).exists() for name in RUN_MARKERS)


def prepare_out(folder: str | Path, *, overwrite: bool, flag: str = "--out",
                resume_hint: str | None = "--resume") -> Path:
    """Check an output folder before any work: refuse one that holds a run (unless
    ``overwrite``, which clears that run's files). ``resume_hint`` is how the command resumes
    (None: it cannot). Also refuses a path that is an existing file. Creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{flag}: {folder} exists and is not a folder")
    if holds_run(folder):
        if not overwrite:
            how = f"continue it with {resume_hint}, " if resume_hint else ""
            raise RunFolderError(f"{flag}: {folder} already holds a run; {how}replace it with "
                                 f"--overwrite, or choose another folder")
        clear_run(folder)
    return folder


def clear_run(folder: str | Path) -> list[Path]:
    """Remove the run files of ``folder`` (see :func:`run_files`); return what was removed."""
    removed = run_files(folder)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return removed


def _umask() -> int:
    """The process umask (read by setting it: no other portable way; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary in the same folder, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # as open() would, not mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a platform without directory fds skips it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed write left behind (``.checkpoint-*.tmp``,
    ``.fedopt-*.tmp``); only one process writes a run folder, so any found are stale."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".tmp")
                   and (p.name.startswith(".checkpoint-") or p.name.startswith(_TMP_PREFIX)))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
