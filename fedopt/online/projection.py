"""The capped simplex 𝒳 = {x ∈ [0,1]^M : 1ᵀx ≤ M_max} of (9): exact Euclidean projection (12)
and systematic (dependent) rounding that keeps E[x] = x̃ and 1ᵀx ≤ M_max.

Both work row-wise on a (K, M) array (one row per UE) and honour a feasibility mask: masked
entries are held at 0, so each row lives in 𝒳 ∩ {x_m = 0 for infeasible m}.
"""

from __future__ import annotations

import numpy as np

from .._checks import bool_mask, integer, numeric_array, real
from ..errors import InstanceError

__all__ = ["project_capped_simplex", "systematic_round"]


def project_capped_simplex(y: np.ndarray, cap: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Euclidean projection of each row of ``y`` (K, M) onto {x ∈ [0,1]^M : 1ᵀx ≤ cap}, eq. (12).

    The KKT conditions give x = clip(y − τ, 0, 1) with τ = 0 if that already satisfies the cap,
    else the unique τ > 0 with Σ clip(y − τ, 0, 1) = cap. h(τ) = Σ clip(y − τ, 0, 1) is piecewise
    linear and non-increasing with breakpoints {y_m, y_m − 1}, so τ is found exactly by
    locating the bracketing breakpoints and interpolating linearly (no iteration).
    ``mask`` (K, M) bool: False entries are forced to 0 (projection onto the face x_m = 0).
    """
    y = np.array(numeric_array("y", y), ndmin=2)
    cap = real("cap", cap, 0.0)
    if mask is not None:
        mask = bool_mask("mask", mask)
        try:
            mask = np.broadcast_to(mask, y.shape)
        except ValueError:
            raise InstanceError(f"mask: shape {mask.shape}, expected {y.shape}") from None
        # any value below the row's smallest breakpoint of interest contributes 0 for τ ≥ 0
        y = np.where(mask, y, -2.0)
    x = np.clip(y, 0.0, 1.0)
    over = x.sum(axis=1) > cap
    if np.any(over):
        yo = y[over]
        bp = np.sort(np.concatenate([yo, yo - 1.0], axis=1), axis=1)  # (n, 2M)
        h = np.clip(yo[:, None, :] - bp[:, :, None], 0.0, 1.0).sum(axis=2)  # h at breakpoints
        # h is non-increasing along bp; take the last breakpoint with h >= cap
        j = np.sum(h >= cap, axis=1) - 1
        j = np.clip(j, 0, bp.shape[1] - 2)
        rows = np.arange(yo.shape[0])
        t0, t1 = bp[rows, j], bp[rows, j + 1]
        h0, h1 = h[rows, j], h[rows, j + 1]
        slope = np.where(h0 > h1, (h0 - cap) / np.where(h0 > h1, h0 - h1, 1.0), 0.0)
        tau = t0 + slope * (t1 - t0)
        x[over] = np.clip(yo - tau[:, None], 0.0, 1.0)
    if mask is not None:
        x = np.where(mask, x, 0.0)
    return x


def systematic_round(x_frac: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Round each row of ``x_frac`` (K, M) in 𝒳 to {0,1}^M by systematic sampling.

    One uniform U_k per row; entry m is selected iff an integer j has C_{m−1} ≤ U_k + j < C_m,
    with C the row's cumulative sums. Each entry is selected with probability exactly x̃_m
    (x̃_m ≤ 1, so at most once), and a row selects ⌊1ᵀx̃⌋ or ⌈1ᵀx̃⌉ ≤ cap entries. The cumulative
    sums are capped at ``cap`` so floating-point excess can never select cap + 1 entries.
    Returns an int8 array of the same shape.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    cap = integer("cap", cap, 0)
    x_frac = np.clip(np.array(numeric_array("x_frac", x_frac), ndmin=2), 0.0, 1.0)
    K = x_frac.shape[0]
    c = np.minimum(np.cumsum(x_frac, axis=1), float(cap))
    c_prev = np.concatenate([np.zeros((K, 1)), c[:, :-1]], axis=1)
    u = rng.random(K)[:, None]
    x = np.floor(c - u) > np.floor(c_prev - u)
    return x.astype(np.int8)
