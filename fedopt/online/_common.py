"""Helpers shared by the policies: the common state fields and the per-UE cost scale."""

from __future__ import annotations

import numpy as np

from .._checks import integer
from .base import PolicyState


def base_state(K: int, M: int, seed: int) -> PolicyState:
    K, M = integer("K", K, 1), integer("M", M, 1)
    return {
        "K": int(K),
        "M": int(M),
        "t": -1,  # the last round decided
        "seed": int(seed),
        "played": np.zeros((K, M), dtype=np.int8),
        "played_energy": np.zeros(K),
        "has_played": 0,
        "scale": np.zeros(K),  # running mean of mean_m |u_{k,m}| (0: not yet seen)
        "n_seen": 0,
    }


def normalised(costs: np.ndarray, state: PolicyState) -> tuple[np.ndarray, PolicyState]:
    """Costs divided by each UE's running cost scale, so step sizes and V are dimensionless.

    The scale is the running mean over rounds of mean_m |u_{k,m}^t| (per UE); ω_k makes raw
    costs shrink like 1/K, which would otherwise tie the step sizes to K.
    """
    n = int(state["n_seen"]) + 1
    now = np.abs(costs).mean(axis=1)
    scale = state["scale"] + (now - state["scale"]) / n
    floor = max(float(np.mean(scale)), 1e-300) * 1e-6
    return costs / np.maximum(scale, floor)[:, None], {**state, "scale": scale, "n_seen": n}


def round_rng(state: PolicyState, t: int) -> np.random.Generator:
    """A generator keyed by (seed, t): rounding is reproducible after a checkpoint/resume."""
    return np.random.default_rng([int(state["seed"]), int(t) & 0x7FFFFFFF])
