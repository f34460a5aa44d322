"""Aggregation at the gNB, eq. (1), vectorised over a round's pairs."""

from __future__ import annotations

import numpy as np

from ..backends.base import Params, TrainingBackend

__all__ = ["aggregation_weights", "aggregate_round"]


def aggregation_weights(module: np.ndarray, n_samples: np.ndarray, received: np.ndarray,
                        M: int, normalize: str = "received") -> np.ndarray:
    """The weight of each pair's update in eq. (1), shape (N,).

    Pair i = (k, m) gets s_i D_k^t / D_m^t: ``'received'`` normalises over the uploads that
    arrived, D_m^t = Σ_k x s D_k^t; ``'subscribed'`` over every subscriber,
    D_m^t = Σ_k x D_k^t, so a failed upload counts as zero and the weights do not depend on
    which uploads failed (the form of [10]'s analysis: E[θ^{t+1}] = θ^t + Σ q_i D_i/D_m Δ_i).
    A module with nothing received gets no weight (θ_m unchanged).
    """
    module = np.asarray(module, dtype=int)
    D = np.asarray(n_samples, dtype=float)
    s = np.asarray(received, dtype=bool)
    if normalize == "received":
        denom = np.bincount(module, D * s, minlength=M)
    elif normalize == "subscribed":
        denom = np.bincount(module, D, minlength=M)
    else:
        raise ValueError(f"normalize: unknown value '{normalize}'; known: received, subscribed")
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(s, D / denom[module], 0.0)
    return np.nan_to_num(w)


def aggregate_round(backend: TrainingBackend, params: list[Params], module: np.ndarray,
                    updates: list[Params], weights: np.ndarray) -> list[Params]:
    """θ_m^{t+1} for every module: the backend's ``aggregate`` over the received updates (1).

    Only pairs with a positive weight are passed on; a module without any keeps θ_m^t.
    """
    module = np.asarray(module, dtype=int)
    weights = np.asarray(weights, dtype=float)
    out = []
    for m, theta in enumerate(params):  # M modules
        sel = np.flatnonzero((module == m) & (weights > 0))
        if sel.size == 0:
            out.append(theta)
            continue
        out.append(backend.aggregate(m, theta, [updates[i] for i in sel], weights[sel]))
    return out
