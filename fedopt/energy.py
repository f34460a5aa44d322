"""Delay, deadline floor and energy: MODEL.md (4), (13) and the computation-time model.

Pure numpy functions that broadcast over UEs and pairs. ``cfg`` is a
:class:`fedopt.config.SystemConfig`; ``S`` is a module size in bits, ``b`` a fraction of B.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "rate",
    "tx_delay",
    "compute_time",
    "min_bandwidth",
    "computation_energy",
    "communication_energy",
    "pair_energy",
]


def rate(cfg, b):
    """Uplink rate R = b B log2(1 + theta) [bit/s], fixed-rate transmission at the threshold (13)."""
    return np.asarray(b, dtype=float) * cfg.B * cfg.spectral_efficiency


def tx_delay(cfg, S, b):
    """Minimum transmission delay tau = S_m / R, eq. (13) [s]."""
    return np.asarray(S, dtype=float) / rate(cfg, b)


def compute_time(cfg, phi, c, D, f):
    """Computation time t^cmp = I phi_m c_k D_k s_bits / f_k [s] (MODEL.md (13)-(14))."""
    return cfg.local_steps * np.asarray(phi) * np.asarray(c) * np.asarray(D) * cfg.s_bits / np.asarray(f)


def min_bandwidth(cfg, S, t_cmp):
    """Deadline floor b^min = S_m / (B log2(1+theta) (T_max - t^cmp)) (MODEL.md (13)-(14)).

    ``inf`` where t^cmp >= T_max: such a pair cannot be scheduled.
    """
    slack = cfg.T_max - np.asarray(t_cmp, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(S, dtype=float) / (cfg.B * cfg.spectral_efficiency * slack)
    return np.where(slack > 0, out, np.inf)


def computation_energy(cfg, phi, c, D, f):
    """Computation energy zeta I phi_m c_k D_k s_bits f_k^2 [J], first term of eq. (4)."""
    f = np.asarray(f, dtype=float)
    return cfg.zeta * cfg.local_steps * np.asarray(phi) * np.asarray(c) * np.asarray(D) * cfg.s_bits * f**2


def communication_energy(cfg, p, S, b):
    """Communication energy p_k S_m / (b B log2(1+theta)) = p tau [J], second term of eq. (4)."""
    return np.asarray(p, dtype=float) * tx_delay(cfg, S, b)


def pair_energy(cfg, phi, c, D, f, p, S, b):
    """E_{k,m} of eq. (4): computation plus communication [J]. Returns (E, E_cmp, E_com)."""
    e_cmp = computation_energy(cfg, phi, c, D, f)
    e_com = communication_energy(cfg, p, S, b)
    return e_cmp + e_com, e_cmp, e_com
