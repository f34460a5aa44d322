"""One-line, key-naming errors. The CLI turns them into exit code 2."""

from __future__ import annotations


class FedoptError(ValueError):
    """Base class: a bad input, described in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(FedoptError):
    """A bad configuration value; the message names the key."""


class InstanceError(FedoptError):
    """A malformed or infeasible canonical instance; the message names the field or index."""


class InfeasibleError(InstanceError):
    """The instance has no feasible point (for example Σ b_min > budget)."""


class RunFolderError(FedoptError):
    """An output folder that already holds a run (refused unless resumed or overwritten)."""


class StateFileError(FedoptError):
    """A checkpoint or other state file that is damaged, foreign, of a newer format version or
    fails its checksum; the message names the file."""
