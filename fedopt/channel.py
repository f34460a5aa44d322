"""The uplink: path gain, SINR (2), the closed-form success probability (15) and a
Monte-Carlo simulator of the PPP interference field that checks it.

All functions broadcast over their array arguments (UEs, pairs, grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gamma as _gamma

__all__ = [
    "SPEED_OF_LIGHT",
    "path_gain",
    "c_alpha",
    "noise_coefficient",
    "interference_coefficient",
    "success_probability",
    "sinr",
    "truncation_radius",
    "sample_interference",
    "monte_carlo_success",
    "MonteCarloResult",
]

SPEED_OF_LIGHT = 299_792_458.0


def path_gain(cfg, d):
    """g(d) = (c / (4 pi f_c))^2 d^(-alpha): free-space loss at 1 m, then exponent alpha (2)."""
    return (SPEED_OF_LIGHT / (4 * math.pi * cfg.f_c)) ** 2 * np.asarray(d, dtype=float) ** (-cfg.alpha)


def c_alpha(alpha: float) -> float:
    """C_alpha = Gamma(1 + 2/alpha) Gamma(1 - 2/alpha) = (2 pi / alpha) / sin(2 pi / alpha) (15)."""
    delta = 2.0 / alpha
    return float(_gamma(1 + delta) * _gamma(1 - delta))


def noise_coefficient(cfg, d):
    """a_k = theta B N0 / g(d_k), the noise term of (15)."""
    return cfg.theta * cfg.B * cfg.N0 / path_gain(cfg, d)


def interference_coefficient(cfg, d):
    """kappa_k = pi lambda d_k^2 theta^(2/alpha) C_alpha p_I^(2/alpha), the PPP term of (15)."""
    delta = 2.0 / cfg.alpha
    d = np.asarray(d, dtype=float)
    return math.pi * cfg.gnb_density * d**2 * cfg.theta**delta * c_alpha(cfg.alpha) * cfg.p_I**delta


def success_probability(cfg, d, p, b):
    """Transmission success probability, eq. (15).

    q = exp(-a_k b / p - kappa_k p^(-2/alpha)), with d in metres, p in watts and b the fraction
    of the bandwidth B. Returns an array broadcast over d, p and b.
    """
    p = np.asarray(p, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.exp(
        -noise_coefficient(cfg, d) * b / p - interference_coefficient(cfg, d) * p ** (-2.0 / cfg.alpha)
    )


def sinr(cfg, h, p, d, interference, b):
    """SINR_{k,m} = h_k p_k g(d_k) / (I_k + b B N0), eq. (2)."""
    return np.asarray(h) * np.asarray(p) * path_gain(cfg, d) / (
        np.asarray(interference) + np.asarray(b) * cfg.B * cfg.N0
    )


def truncation_radius(cfg, d, p, tol: float = 1e-4) -> float:
    """Radius R of the interferer disc whose truncation changes q by at most ``tol``.

    Interferers beyond R add, conditional on the rest, a factor E[exp(-s I_far)] >= 1 - s E[I_far]
    to the success probability (Jensen), with s = theta d^alpha / (p g0) the signal scale. Since
    E[I_far] = 2 pi lambda p_I g0 R^(2-alpha) / (alpha - 2), the truncation error in q is at most
    2 pi lambda s' R^(2-alpha) / (alpha - 2) with s' = theta d^alpha p_I / p. Take the largest
    over the given (d, p).
    """
    s = cfg.theta * np.asarray(d, dtype=float) ** cfg.alpha * cfg.p_I / np.asarray(p, dtype=float)
    s_max = float(np.max(s))
    return (2 * math.pi * cfg.gnb_density * s_max / ((cfg.alpha - 2) * tol)) ** (1.0 / (cfg.alpha - 2))


def sample_interference(cfg, n_draws: int, radius: float, rng: np.random.Generator,
                        max_points: int = 200_000, progress=None) -> np.ndarray:
    """Draw the out-of-cell interference I at the gNB, n_draws times (2).

    Each draw is a homogeneous PPP of density lambda in the disc of ``radius`` around the gNB:
    a Poisson(lambda pi R^2) count of points uniform in the disc, every interferer at power p_I
    with its own Rayleigh fade h_j ~ Exp(1). Vectorised over draws, in chunks, in float32 with
    a float64 sum.
    """
    mean = math.pi * cfg.gnb_density * radius**2
    n_cap = int(math.ceil(mean + 8 * math.sqrt(mean) + 16))
    if n_cap > max_points:
        raise ValueError(
            f"the interferer disc needs ~{mean:.3g} points a draw (radius {radius:.3g} m); "
            f"use closer UEs or higher powers, or raise max_points"
        )
    g0 = (SPEED_OF_LIGHT / (4 * math.pi * cfg.f_c)) ** 2
    scale = cfg.p_I * g0 * radius ** (-cfg.alpha)
    half_alpha = np.float32(-cfg.alpha / 2)
    counts = rng.poisson(mean, n_draws)
    if counts.max(initial=0) > n_cap:  # 8 sigma: never in practice, but stay exact
        n_cap = int(counts.max())
    idx = np.arange(n_cap)
    out = np.empty(n_draws)
    rows = max(1, int(8e6 // n_cap))
    for start in range(0, n_draws, rows):
        m = min(rows, n_draws - start)
        u = rng.random((m, n_cap), dtype=np.float32)  # r = R sqrt(u): uniform in the disc
        np.maximum(u, np.float32(1e-18), out=u)  # (1e-18)^-1.75 fits float32
        h = rng.standard_exponential((m, n_cap), dtype=np.float32)
        h *= u**half_alpha  # (r / R)^(-alpha)
        h[idx[None, :] >= counts[start : start + m, None]] = 0.0
        out[start : start + m] = scale * h.sum(axis=1, dtype=np.float64)
        if progress is not None:
            progress(m)
    return out


@dataclass(frozen=True)
class MonteCarloResult:
    """Monte-Carlo estimates over a grid: ``q`` and its standard error ``se``; the closed form."""

    d: np.ndarray
    p: np.ndarray
    b: np.ndarray
    q: np.ndarray
    se: np.ndarray
    closed_form: np.ndarray
    n_draws: int
    radius: float
    truncation_bound: float


def monte_carlo_success(cfg, d, p, b, n_draws: int = 40_000, seed: int = 0, tol: float = 1e-4,
                        progress=None) -> MonteCarloResult:
    """Estimate Pr[SINR >= theta] by simulation at every (d, p, b) of a grid (flattened).

    One set of PPP interference draws serves every grid point (the interference at the gNB does
    not depend on the UE), in a disc wide enough that truncation moves q by less than ``tol``.
    Each point gets its own Rayleigh fades h_k ~ Exp(1) and the noise b B N0, and the estimate
    counts SINR >= theta. ``se`` is the binomial standard error sqrt(q(1-q)/n).
    """
    d, p, b = (np.ravel(v).astype(float) for v in np.broadcast_arrays(d, p, b))
    rng = np.random.default_rng(seed)
    radius = truncation_radius(cfg, d, p, tol)
    interference = sample_interference(cfg, n_draws, radius, rng, progress=progress)
    h = rng.standard_exponential((d.size, n_draws))
    ok = sinr(cfg, h, p[:, None], d[:, None], interference[None, :], b[:, None]) >= cfg.theta
    q = ok.mean(axis=1)
    se = np.sqrt(np.maximum(q * (1 - q), 1e-300) / n_draws)
    return MonteCarloResult(d, p, b, q, se, success_probability(cfg, d, p, b), n_draws, radius, tol)
