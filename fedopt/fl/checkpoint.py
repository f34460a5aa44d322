"""Checkpoints: a run's state as ``checkpoint.npz`` (JSON + arrays, :mod:`fedopt.safestate`).

The file is written atomically (:func:`~fedopt.runfolder.atomic_write_bytes`), so a kill at
any moment leaves the previous checkpoint or the new one. It is read with
``np.load(allow_pickle=False)``: a crafted file can fail to load but never runs code. A
damaged, foreign or newer-version file, or one that fails its sha256, is a
:class:`~fedopt.errors.StateFileError` (exit code 2 in the CLI). A ``checkpoint.pkl`` of
older fedopt versions is refused without being opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import safestate
from ..errors import StateFileError
from ..files import read_bytes
from ..runfolder import atomic_write_bytes, remove_stale_temporaries

__all__ = ["save_checkpoint", "load_checkpoint", "has_checkpoint", "CHECKPOINT", "KIND",
           "MAX_CHECKPOINT_BYTES"]

CHECKPOINT = "checkpoint.npz"
KIND = "fedopt-checkpoint"
_LEGACY = "checkpoint.pkl"
# Above the 256 MiB of other inputs: AdamW state kept per (UE, module) makes a K = 100
# checkpoint ~0.2 GB on MiniLM full depth and ~0.8 GB on RoBERTa-base (2 MB and 8 MB a UE).
MAX_CHECKPOINT_BYTES = 4 * 2**30


def save_checkpoint(state: dict[str, Any], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(folder / CHECKPOINT, safestate.dumps(state, KIND))


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` has a checkpoint to resume (the legacy pickle counts: it is refused
    with its own message by :func:`load_checkpoint`)."""
    folder = Path(folder)
    return (folder / CHECKPOINT).exists() or (folder / _LEGACY).exists()


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The state saved in ``folder``, or None if it has none. Removes the temporaries a
    killed write left behind."""
    folder = Path(folder)
    remove_stale_temporaries(folder)
    path = folder / CHECKPOINT
    if not path.exists():
        if (folder / _LEGACY).exists():  # never unpickled: a pickle can run any code
            raise StateFileError(f"{folder / _LEGACY} is a checkpoint in the old pickle format, "
                                 f"which fedopt no longer loads; start the run again with "
                                 f"--overwrite")
        return None
    if not path.is_file():
        raise StateFileError(f"checkpoint {path} is not a file")
    data = read_bytes(path, "checkpoint", StateFileError, limit=MAX_CHECKPOINT_BYTES)
    return safestate.loads(data, KIND, what=f"checkpoint {path}")
