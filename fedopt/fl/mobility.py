"""UE mobility: a random walk of fixed step length, kept inside the cell annulus."""

from __future__ import annotations

import numpy as np

__all__ = ["random_walk"]


def random_walk(positions: np.ndarray, step: float, r_min: float, r_max: float,
                rng: np.random.Generator) -> np.ndarray:
    """Move every UE ``step`` metres in a uniform random direction, shape (K, 2) -> (K, 2).

    A UE that would leave the annulus r_min <= |pos| <= r_max is reflected radially back
    into it (ours: the paper does not specify a mobility model).
    """
    positions = np.asarray(positions, dtype=float)
    if step <= 0:
        return positions.copy()
    phi = rng.uniform(0.0, 2 * np.pi, positions.shape[0])
    new = positions + step * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    r = np.hypot(new[:, 0], new[:, 1])
    r_ref = np.where(r > r_max, 2 * r_max - r, np.where(r < r_min, 2 * r_min - r, r))
    r_ref = np.clip(r_ref, r_min, r_max)
    return new * (r_ref / np.maximum(r, 1e-12))[:, None]
