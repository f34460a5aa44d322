"""Per-UE LoRA ranks from a UE's resources, for HetLoRA [6] and FlexLoRA [7].

Both papers give each client a rank that fits its resources but leave the rule to the
deployment ([6] Sec. 3 draws ranks from the device's capacity tier; [7] Sec. 3.1 from its
resource budget). Here the resources are the system model's (ours, MODEL-NOTES.md, "Baselines"):

- compute and the deadline: the rank's bandwidth floor b^min_{k,r} of (13), which grows with
  the upload size S_r and shrinks with the slack T_max − t^cmp_{k,r};
- the channel: the success probability q_k of (15) at P_max and a fair share b̄ = 1/⌈βK⌉.

UE k gets the largest rank whose floor fits its *effective* fair share, b^min_{k,r} ≤ q_k b̄
(a UE with a poor channel is worth less bandwidth), and the smallest deadline-feasible rank if
none fits. A UE with no feasible rank gets -1 (it cannot be scheduled at all).
"""

from __future__ import annotations

import math

import numpy as np

from ..channel import success_probability

__all__ = ["assign_rank_levels"]


def assign_rank_levels(cfg, population) -> np.ndarray:
    """The index into ``cfg.ranks`` (sorted ascending) of every UE's rank, shape (K,) int.

    ``cfg`` is a :class:`~fedopt.config.SystemConfig`; ``population`` gives b^min (K, L) and
    the distances for q (15).
    """
    ranks = np.asarray(cfg.ranks)
    if np.any(np.diff(ranks) <= 0):
        raise ValueError(f"ranks must be strictly increasing, got {ranks.tolist()}")
    b_min = population.b_min(cfg)  # (K, L), inf where the deadline cannot be met
    share = 1.0 / max(1, math.ceil(cfg.beta * population.K))
    q = np.asarray(success_probability(cfg, population.d, np.full(population.K, cfg.P_max),
                                       np.full(population.K, share)), dtype=float)
    fits = b_min <= (q * share)[:, None]
    feasible = np.isfinite(b_min)
    L = ranks.shape[0]
    largest_fit = np.where(fits.any(axis=1), L - 1 - np.argmax(fits[:, ::-1], axis=1), -1)
    smallest_feasible = np.where(feasible.any(axis=1), np.argmax(feasible, axis=1), -1)
    return np.where(largest_fit >= 0, largest_fit, smallest_feasible).astype(int)
