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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Params",
    "ModuleSpec",
    "PairBatch",
    "LocalResult",
    "Evaluation",
    "TrainingBackend",
    "SupportsFullBatch",
    "SupportsSmoothness",
    "SupportsTheoremOracle",
    "SupportsSaving",
    "ensemble_logits",
    "ensemble_evaluation",
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


# A module alone that puts this share of the global test set in one class predicts one class:
# under label skew it has collapsed (docs/RESULTS.md), and the logit mean (3) can carry it.
ONE_CLASS = 0.99


@dataclass
class Evaluation:
    """Ensemble evaluation, eq. (3).

    Per UE k (on its own test split, its ensemble of subscribed modules): ``ue_accuracy``,
    ``ue_loss`` (K,). ``accuracy`` / ``loss``: the omega-weighted means of those.
    ``global_accuracy`` / ``global_loss``: the uniform ensemble of all modules on the global
    test set. ``module_accuracy`` (M,): each module alone on the global test set;
    ``module_top_share`` (M,): the share of that set it puts in its most predicted class (1.0:
    it predicts one class for everything, a collapsed module that the logit mean can carry).
    """

    ue_accuracy: np.ndarray
    ue_loss: np.ndarray
    accuracy: float
    loss: float
    global_accuracy: float
    global_loss: float
    module_accuracy: np.ndarray
    module_top_share: np.ndarray


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


# --- optional capabilities: declared here, checked with isinstance (never hasattr) --------------

@runtime_checkable
class SupportsFullBatch(Protocol):
    """A backend that may train on each UE's whole local set: then D_k^t = |D_k| (its
    ``data_sizes()``) and the probes are exactly F_k and ‖∇F_k‖²."""

    full_batch: bool


@runtime_checkable
class SupportsSmoothness(Protocol):
    """A backend that knows (μ, L) of Assumption 1 (step_size ``inverse_L``: η = 1/L)."""

    def smoothness(self) -> tuple[float, float]:
        ...


@runtime_checkable
class SupportsTheoremOracle(SupportsSmoothness, Protocol):
    """The exact quantities Theorem 1's tracker (:mod:`fedopt.bound`) needs, on a module's
    full-rank adapter θ (C × h): F_k and ∇F_k of every UE, F* and θ*, the Hessian's extreme
    eigenvalues. Module parameters are ``{"W": θ}``."""

    def local_objectives(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F_k(θ) (K,) and ∇F_k(θ) (K, ...) on every UE's whole local set."""
        ...

    def optimum(self) -> tuple[float, np.ndarray]:
        """F* and θ* of the centralised problem."""
        ...

    def hessian_eigenvalues(self, delta: np.ndarray) -> tuple[float, float]:
        ...


@runtime_checkable
class SupportsSaving(Protocol):
    """A backend that writes its trained modules at the end of a run (e.g. peft adapters)."""

    def save_run(self, out_dir: str | os.PathLike, params: list[Params], ensembles: np.ndarray,
                 evaluation: Evaluation | None = None) -> Path:
        ...


# --- eq. (3), the one place ------------------------------------------------------------------

def ensemble_logits(logits: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Eq. (3): each sample's uniform ensemble, the mean of its members' logits.

    ``logits`` (M, n, C) of every module; ``members`` (n, M) bool, or (M,) for one ensemble
    for all samples. A sample with no member uses every module (a UE before its first
    subscription, MODEL-NOTES). Returns (n, C)."""
    logits = np.asarray(logits, float)
    M, n, _ = logits.shape
    mask = np.broadcast_to(np.asarray(members, bool), (n, M)).astype(float)
    mask[mask.sum(axis=1) == 0] = 1.0
    z = np.zeros(logits.shape[1:])
    for m in range(M):  # M terms: no (M, n, C) temporary
        z += logits[m] * mask[:, m:m + 1]
    return z / mask.sum(axis=1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ensemble_evaluation(logits: np.ndarray, labels: np.ndarray, ensembles: np.ndarray,
                        omega: np.ndarray, *, sample_ue: np.ndarray | None = None,
                        label_dist: np.ndarray | None = None,
                        global_logits: np.ndarray | None = None,
                        global_labels: np.ndarray | None = None) -> Evaluation:
    """Score every UE's ensemble (3) and the uniform ensemble of all modules.

    ``logits`` (M, n, C) on a test split with ``labels`` (n,); ``ensembles`` (K, M) bool.
    How UE k is scored: with ``sample_ue`` (n,) on its own rows of the split; with
    ``label_dist`` (K, C) on the whole split, each class's accuracy and loss weighted by UE
    k's label distribution π_k (the expectation over a test set drawn with its labels).
    ``accuracy``/``loss``: the ω-weighted means. The global figures (the uniform ensemble,
    and each module alone) use ``global_logits`` (M, n', C) and ``global_labels`` (default:
    the same split)."""
    logits = np.asarray(logits, float)
    labels = np.asarray(labels, int)
    ens = np.asarray(ensembles, bool)
    K = ens.shape[0]
    omega = np.asarray(omega, float)

    def correct_nll(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nll = -np.take_along_axis(_log_softmax(z), y[:, None], axis=1)[:, 0]
        return (z.argmax(axis=1) == y).astype(float), nll

    if sample_ue is not None:
        ue = np.asarray(sample_ue, int)
        correct, nll = correct_nll(ensemble_logits(logits, ens[ue]), labels)
        counts = np.maximum(np.bincount(ue, minlength=K), 1)
        ue_acc = np.bincount(ue, correct, K) / counts
        ue_loss = np.bincount(ue, nll, K) / counts
    elif label_dist is not None:
        C = logits.shape[2]
        ue_acc, ue_loss = np.zeros(K), np.zeros(K)
        n_c = np.maximum(np.bincount(labels, minlength=C), 1)
        for row in np.unique(ens, axis=0):  # one pass per distinct ensemble
            correct, nll = correct_nll(ensemble_logits(logits, row), labels)
            who = (ens == row).all(axis=1)
            ue_acc[who] = label_dist[who] @ (np.bincount(labels, correct, C) / n_c)
            ue_loss[who] = label_dist[who] @ (np.bincount(labels, nll, C) / n_c)
    else:
        raise ValueError("ensemble_evaluation: give sample_ue or label_dist")
    g_logits = logits if global_logits is None else np.asarray(global_logits, float)
    g_labels = labels if global_labels is None else np.asarray(global_labels, int)
    g_correct, g_nll = correct_nll(ensemble_logits(g_logits, np.ones(g_logits.shape[0], bool)),
                                   g_labels)
    pred = g_logits.argmax(axis=2)  # (M, n'): each module alone
    counts = np.stack([np.bincount(p, minlength=g_logits.shape[2]) for p in pred])
    return Evaluation(ue_acc, ue_loss, float(omega @ ue_acc), float(omega @ ue_loss),
                      float(g_correct.mean()), float(g_nll.mean()),
                      (pred == g_labels).mean(axis=1), counts.max(axis=1) / max(pred.shape[1], 1))


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
