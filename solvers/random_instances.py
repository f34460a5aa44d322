"""Random instance generators shared by tests, ``fedopt validate`` and the benchmarks.

Regimes
-------
``noise-limited`` (instances/README.md): w ∈ [0.01, 1], a ∈ [1, 50], c ∈ [1e-4, 0.1], all
    log-uniform, b_min = 1e-3, b_max = 1, budget 1. The dual of (16) has a gap on ~1%.
``defaults``: drawn from the system model at MODEL.md's defaults (``SystemConfig()``,
    ``draw_population``) and built with ``fedopt.instances.bandwidth_instance`` /
    ``power_batch``. The choices MODEL.md leaves open are ours (docs/notes-solvers.md):
    N scheduled pairs spread over UEs with at most M_max modules each, Γ_{k,m}
    log-uniform in [1e-3, 1e-1], p_k uniform in [P_max/4, P_max], and for power the b of
    each pair is its b_min times a log-uniform factor in [1, 4] (renormalised to Σb <= 1).
``synthetic-large``: the magnitudes of ``bandwidth_example_*`` at any N (b_min scaled
    so Σ b_min ≈ 0.6), for the N = 1e4..1e6 scaling benchmarks.
"""

from __future__ import annotations

import math

import numpy as np

from ..instances import BandwidthInstance, PowerBatch, PowerInstance

__all__ = ["REGIMES", "random_bandwidth", "random_power", "random_power_batch",
           "synthetic_large_bandwidth"]

REGIMES = ("defaults", "noise-limited")


def _loguniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def random_bandwidth(n: int, regime: str = "noise-limited", seed: int | np.random.Generator = 0
                     ) -> BandwidthInstance:
    """One random bandwidth instance (16) with n pairs in ``regime``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if regime == "noise-limited":
        return BandwidthInstance(
            w=_loguniform(rng, 0.01, 1.0, n), a=_loguniform(rng, 1.0, 50.0, n),
            c=_loguniform(rng, 1e-4, 0.1, n), b_min=np.full(n, 1e-3), b_max=np.ones(n),
            budget=1.0,
        )
    if regime == "defaults":
        return _system_bandwidth(n, rng)
    raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")


def _system_state(n: int, rng: np.random.Generator):
    from ..config import SystemConfig
    from ..population import draw_population

    cfg = SystemConfig()
    m_max = min(cfg.M_max, cfg.M) if hasattr(cfg, "M_max") else 2
    for _ in range(100):
        k_ues = max(cfg.K, math.ceil(n / max(m_max, 1)))
        pop = draw_population(cfg.replace(K=k_ues), rng)
        bmin = pop.b_min(cfg)
        x = np.zeros((k_ues, cfg.M))
        order = rng.permutation(k_ues)
        left = n
        for k in order:
            if left == 0:
                break
            ok = np.flatnonzero(np.isfinite(bmin[k]) & (bmin[k] > 0))
            if ok.size == 0:
                continue
            take = min(left, int(rng.integers(1, m_max + 1)), ok.size)
            x[k, rng.choice(ok, take, replace=False)] = 1
            left -= take
        if left == 0 and np.sum(bmin[x > 0.5]) <= 0.9:
            return cfg, pop, x, bmin
    raise RuntimeError(f"could not draw a feasible system state with {n} pairs")


def _system_bandwidth(n: int, rng: np.random.Generator) -> BandwidthInstance:
    from ..instances import bandwidth_instance

    cfg, pop, x, bmin = _system_state(n, rng)
    K, M = x.shape
    Gamma = _loguniform(rng, 1e-3, 1e-1, (K, M))
    p = rng.uniform(cfg.P_max / 4, cfg.P_max, K)
    return bandwidth_instance(
        x=x, p=p, omega=pop.omega, Gamma=Gamma, a=pop.a(cfg), kappa=pop.kappa(cfg), S=pop.S,
        b_min=np.where(np.isfinite(bmin), bmin, 1.0), rho=cfg.rho, B=cfg.B, theta=cfg.theta,
        alpha=cfg.alpha,
    )


def random_power_batch(k: int, regime: str = "noise-limited",
                       seed: int | np.random.Generator = 0, m: int = 3) -> PowerBatch:
    """K random power instances (21) stacked (padded with W = 0)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if regime == "noise-limited":
        # (ours) sigmoids of q_m spread over [p_min, p_max]: A_m/p from 0.05 to 200
        used = rng.random((k, m)) < 0.75
        used[np.arange(k), rng.integers(0, m, k)] = True
        W = np.where(used, _loguniform(rng, 0.01, 1.0, (k, m)), 0.0)
        A = np.where(used, _loguniform(rng, 1e-4, 1e-1, (k, m)), 0.0)
        return PowerBatch(W, A, _loguniform(rng, 1e-3, 1.0, k), _loguniform(rng, 0.05, 20.0, k),
                          3.5, 1e-3, 0.2)
    if regime == "defaults":
        parts: list[PowerBatch] = []
        got = 0
        while got < k:  # one system state (at most ~40 scheduled pairs) at a time
            part = _system_power(min(k - got, 25), rng)
            parts.append(part)
            got += part.k
        Ws = [q.W for q in parts]
        width = max(w.shape[1] for w in Ws)
        pad = [np.pad(q.W, ((0, 0), (0, width - q.W.shape[1]))) for q in parts]
        padA = [np.pad(q.A, ((0, 0), (0, width - q.A.shape[1]))) for q in parts]
        first = parts[0]
        return PowerBatch(np.vstack(pad)[:k], np.vstack(padA)[:k],
                          np.concatenate([q.kappa for q in parts])[:k],
                          np.concatenate([q.C for q in parts])[:k],
                          first.alpha, first.p_min, first.p_max)
    raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")


def _system_power(k: int, rng: np.random.Generator) -> PowerBatch:
    """Up to k UEs' power problems from one system state at the defaults."""
    from ..instances import power_batch

    n = max(1, int(round(k * 1.5)))
    cfg, pop, x, bmin = _system_state(n, rng)
    K, M = x.shape
    fin = np.where(np.isfinite(bmin), bmin, 1.0)
    b = np.where(x > 0.5, fin * _loguniform(rng, 1, 4, (K, M)), 0.0)
    if b.sum() > 1:
        b = np.where(x > 0.5, np.maximum(fin, b / b.sum()), 0.0)
    Gamma = _loguniform(rng, 1e-3, 1e-1, (K, M))
    batch = power_batch(x=x, b=np.where(x > 0.5, b, 1.0), omega=pop.omega, Gamma=Gamma,
                        a=pop.a(cfg), kappa=pop.kappa(cfg), S=pop.S, rho=cfg.rho, B=cfg.B,
                        theta=cfg.theta, alpha=cfg.alpha, p_min=cfg.P_min, p_max=cfg.P_max)
    rows = np.flatnonzero(batch.W.sum(axis=1) > 0)[:k]
    return PowerBatch(batch.W[rows], batch.A[rows], batch.kappa[rows], batch.C[rows],
                      batch.alpha, batch.p_min, batch.p_max)


def random_power(regime: str = "noise-limited", seed: int | np.random.Generator = 0
                 ) -> PowerInstance:
    """One random power instance (21)."""
    return random_power_batch(1, regime, seed).instance(0)


def synthetic_large_bandwidth(n: int, seed: int | np.random.Generator = 0) -> BandwidthInstance:
    """Large-N instance at the magnitudes of ``bandwidth_example_*`` (Σ b_min ≈ 0.6)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    w = _loguniform(rng, 1e-6, 2e-4, n)
    a = _loguniform(rng, 0.01, 2.6, n)
    c = _loguniform(rng, 2e-7, 3e-4, n)
    b_min = rng.uniform(0.5, 1.5, n) * 0.6 / n
    return BandwidthInstance(w, a, c, b_min, np.ones(n), 1.0)
