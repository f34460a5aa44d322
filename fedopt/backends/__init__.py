"""Training backends: the protocol, the synthetic numpy backend and the torch + peft one."""

from .base import (
    Evaluation,
    LocalResult,
    ModuleSpec,
    PairBatch,
    Params,
    TrainingBackend,
    weighted_mean_aggregate,
)

__all__ = [
    "Evaluation",
    "LocalResult",
    "ModuleSpec",
    "PairBatch",
    "Params",
    "TrainingBackend",
    "weighted_mean_aggregate",
]
