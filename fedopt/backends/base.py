"""The training-backend protocol: the only thing the runtime knows about learning.

A backend works on *batches of (UE, module) pairs*, so it can vectorise a whole round. Module
parameters are exchanged as ``Params``: a flat ``dict[str, np.ndarray]`` per module (for the
LoRA backend, a peft adapter state dict as numpy arrays). A local update is the *difference*
new - old after the local steps, in the same keys, so aggregation (1) is a weighted sum of
differences (the paper's "-eta g").

Backends never see the channel. They own their data (partitioned over the K UEs by a
Dirichlet label skew) and their random state, which :meth:`state_dict` exposes so a run can
checkpoint and resume exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Params",
    "ModuleSpec",
    "PairBatch",
    "LocalResult",
    "Evaluation",
    "TrainingBackend",
    "weighted_mean_aggregate",
]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ModuleSpec:
    """One LoRA module m: its rank r_m and where it sits. Extra backend options in ``options``."""

    index: int
    rank: int
    lora_alpha: float | None = None  # None: 2 * rank
    target_modules: tuple[str, ...] | None = None  # None: the backend's default targets
    top_layers: int | None = None  # LoRA on the top L layers only; None: the backend default
    options: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PairBatch:
    """The (UE, module) pairs of one call, shape (N,) each."""

    ue: np.ndarray
    module: np.ndarray

    def __post_init__(self) -> None:
        ue = np.asarray(self.ue, dtype=int).ravel()
        module = np.asarray(self.module, dtype=int).ravel()
        if ue.shape != module.shape:
            raise ValueError(f"pair batch: {ue.shape[0]} UEs but {module.shape[0]} modules")
        object.__setattr__(self, "ue", ue)
        object.__setattr__(self, "module", module)

    def __len__(self) -> int:
        return int(self.ue.shape[0])

    @classmethod
    def from_mask(cls, x: np.ndarray) -> PairBatch:
        """All pairs with x_{k,m} = 1, row-major."""
        k, m = np.nonzero(np.asarray(x) > 0.5)
        return cls(k, m)


@dataclass
class LocalResult:
    """What ``local_update`` returns for N pairs.

    ``updates[i]`` is pair i's parameter difference (new - old). ``loss`` and ``grad_sq`` (N,)
    are the mean training loss over the local steps and ||grad||^2 at the start (the module's
    current parameters), both on the pair's own data. ``n_samples`` (N,) is D_k^t.
    """

    updates: list[Params]
    loss: np.ndarray
    grad_sq: np.ndarray
    n_samples: np.ndarray


@dataclass
class Evaluation:
    """Ensemble evaluation, eq. (3).

    Per UE k (on its own test split, its ensemble of subscribed modules): ``ue_accuracy``,
    ``ue_loss`` (K,). ``accuracy`` / ``loss``: the omega-weighted means of those.
    ``global_accuracy`` / ``global_loss``: the uniform ensemble of all modules on the global
    test set.
    """

    ue_accuracy: np.ndarray
    ue_loss: np.ndarray
    accuracy: float
    loss: float
    global_accuracy: float
    global_loss: float


@runtime_checkable
class TrainingBackend(Protocol):
    """What the runtime (``fedopt.fl``) and the Flower ClientApp call, and nothing else."""

    num_ues: int

    def init_modules(self, specs: list[ModuleSpec]) -> list[Params]:
        """Initial parameters theta_m^0 of every module."""
        ...

    def local_update(self, pairs: PairBatch, params: list[Params], steps: int, lr: float
                     ) -> LocalResult:
        """Train every pair for ``steps`` local SGD steps of step size ``lr`` from params[m]."""
        ...

    def probe(self, pairs: PairBatch, params: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        """(loss, ||grad||^2), each (N,), on a small probe batch of each pair's data; no training."""
        ...

    def aggregate(self, module: int, params: Params, updates: list[Params], weights: np.ndarray
                  ) -> Params:
        """New theta_m from its current value and the received updates, eq. (1)."""
        ...

    def evaluate(self, params: list[Params], ensembles: np.ndarray) -> Evaluation:
        """Score the ensembles (3): ``ensembles`` (K, M) bool, UE k's subscribed modules."""
        ...

    def num_params(self, spec: ModuleSpec) -> int:
        """The module's real trainable parameter count."""
        ...

    def module_size_bits(self, spec: ModuleSpec, bits_per_param: int = 16) -> int:
        """S_m in bits: the real parameter count times the upload precision."""
        ...

    def data_sizes(self) -> np.ndarray:
        """|D_k| of every UE's local training set, (K,)."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (RNG states, data cursors) as plain data: dicts,
        lists, numbers, strings and numpy arrays (stored by :mod:`fedopt.safestate`, never pickled)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


def weighted_mean_aggregate(params: Params, updates: list[Params], weights: np.ndarray) -> Params:
    """Eq. (1): theta_m + sum_i weights_i * update_i. No updates: theta_m unchanged.

    The caller chooses the weights: D_k / D_m over the received uploads (``normalize =
    'received'``) or over all subscribers with failures weighted 0 (``'subscribed'``).
    """
    weights = np.asarray(weights, dtype=float)
    if len(updates) != weights.shape[0]:
        raise ValueError(f"{len(updates)} updates but {weights.shape[0]} weights")
    if not updates:
        return {k: v.copy() for k, v in params.items()}
    out = {}
    for key, value in params.items():
        delta = np.tensordot(weights, np.stack([u[key] for u in updates]), axes=1)
        out[key] = value + delta.astype(value.dtype, copy=False)
    return out
