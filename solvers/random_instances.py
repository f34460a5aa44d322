"""Random instance generators shared by tests, ``fedopt validate`` and the benchmarks.

Regimes
-------
``noise-limited`` (instances/README.md): w ∈ [0.01, 1], a ∈ [1, 50], c ∈ [1e-4, 0.1], all
    log-uniform, b_min = 1e-3, b_max = 1, budget 1. The dual of (16) has a gap on ~1%.
``defaults``: drawn from the system model at MODEL.md's defaults (``SystemConfig()``,
    ``draw_population``) and built with ``fedopt.instances.bandwidth_instance`` /
    ``power_batch``. The choices MODEL.md leaves open are ours (MODEL-NOTES.md, "Solvers"):
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

__all__ = ["BANDWIDTH_FAMILIES", "POWER_FAMILIES", "REGIMES", "adversarial_bandwidth",
           "adversarial_power", "random_bandwidth", "random_power", "random_power_batch",
           "random_round_system", "synthetic_large_bandwidth"]

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
    m_max = min(cfg.M_max, cfg.M)
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


# --- adversarial families (issue 14): each checked against fedopt.solvers._reference ---------

#: bandwidth (16) families of the ``adversarial`` regime, cycled over the instances
BANDWIDTH_FAMILIES = ("extreme", "near-infeasible", "cancelling", "identical", "perturbed",
                      "single", "random-n")
#: power (21) families of the ``adversarial`` regime
POWER_FAMILIES = ("sinr", "q-near-1", "q-near-0", "c-zero", "c-huge", "fixed-p", "many")


def _budget_above(b_min: np.ndarray, slack: float) -> float:
    """A budget Σ b_min (1 + slack) that is >= Σ b_min exactly (fsum), as (16) requires."""
    s = math.fsum(b_min)
    budget = s * (1.0 + slack)
    while budget < s:
        budget = math.nextafter(budget, math.inf)
    return budget


def _nonconvex_pair(rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    """(w, a, c, t1, t2): a noise-limited pair of (16) whose convex envelope on [1e-3, 1] is
    linear and decreasing on [t1, t2] with t2 − t1 >= 0.05 (the lower hull of a dense grid,
    scipy), so a budget k·t with t in (t1, t2) binds and splits the k copies."""
    from scipy.spatial import ConvexHull

    b = np.linspace(1e-3, 1.0, 4001)
    for _ in range(1000):
        w, a, c = (_loguniform(rng, 0.01, 1.0), _loguniform(rng, 1.0, 50.0),
                   _loguniform(rng, 1e-4, 0.1))
        if 27 * w / (2 * math.e**3 * a * c) <= 1:
            continue
        fb = -w * np.exp(-a * b) + c / b
        hull = ConvexHull(np.column_stack([b, fb]))
        lower = np.unique(hull.simplices[hull.equations[:, 1] < 0])
        gaps = np.where(np.diff(fb[lower]) < 0, np.diff(b[lower]), 0.0)  # descending only
        j = int(np.argmax(gaps))
        if gaps[j] >= 0.05:
            return w, a, c, float(b[lower[j]]), float(b[lower[j + 1]])
    raise RuntimeError("no nonconvex pair with a linear envelope segment found")


def adversarial_bandwidth(family: str, seed: int | np.random.Generator = 0
                          ) -> BandwidthInstance:
    """One adversarial instance of (16) from ``family`` (:data:`BANDWIDTH_FAMILIES`).

    ``extreme``: w, a, c log-uniform over 8-10 decades, N in 1..50; ``near-infeasible``:
    budget = Σ b_min (1 + s), s log-uniform in [1e-9, 1e-2] (and exactly feasible);
    ``cancelling``: each term's two parts near 2e-2 cancel at its minimum to 1e-11..1e-14
    (a b* ≈ 1 − δ b*/c), the budget slack; ``identical`` / ``perturbed``: k in 2..50 copies
    (exact, or with relative perturbations 1e-12..1e-4) of one nonconvex pair, the budget
    k·t with t inside the linear part of the pair's convex envelope; ``single``: N = 1;
    ``random-n``: the noise-limited ranges at N in 1..50 with a random (often binding) budget.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if family == "extreme":
        n = int(rng.integers(1, 51))
        b_min = _loguniform(rng, 1e-5, 1e-2, n)
        b_max = np.maximum(b_min, _loguniform(rng, 0.05, 1.0, n))
        lo = math.fsum(b_min)
        budget = _budget_above(b_min, _loguniform(rng, 1e-3, 1e3) * (float(b_max.sum()) / lo))
        return BandwidthInstance(_loguniform(rng, 1e-8, 1e2, n), _loguniform(rng, 1e-3, 1e4, n),
                                 _loguniform(rng, 1e-10, 1e1, n), b_min, b_max, budget)
    if family == "near-infeasible":
        n = int(rng.integers(1, 51))
        b_min = _loguniform(rng, 1e-4, 1.0 / n, n)
        return BandwidthInstance(
            _loguniform(rng, 0.01, 1.0, n), _loguniform(rng, 1.0, 50.0, n),
            _loguniform(rng, 1e-4, 0.1, n), b_min, np.ones(n),
            _budget_above(b_min, _loguniform(rng, 1e-9, 1e-2)))
    if family == "cancelling":
        n = int(rng.integers(1, 51))
        bstar = _loguniform(rng, 0.01, 0.5, n)
        c = 2e-2 * bstar * rng.uniform(0.5, 2.0, n)  # c / b* ≈ 2e-2
        delta = _loguniform(rng, 1e-14, 1e-11, n) / n * rng.choice([-1.0, 1.0], n)
        a = 1.0 / (bstar * (1.0 - delta * bstar / c))  # f(b*) = c/b*(1 − 1/(a b*)) = δ
        w = c / (a * bstar**2) * np.exp(a * bstar)  # f'(b*) = 0
        b_min = np.minimum(bstar / 4, 1e-3)
        b_max = np.minimum(1.0, 2 * bstar)  # c/b stays well above |δ| on [b*, 2b*]
        return BandwidthInstance(w, a, c, b_min, b_max, _budget_above(b_min, 0.0)
                                 + 1.5 * math.fsum(bstar))
    if family in ("identical", "perturbed"):
        k = int(rng.integers(2, 51))
        w, a, c, t1, t2 = _nonconvex_pair(rng)
        t = t1 + (t2 - t1) * rng.uniform(0.1, 0.9)
        ws, as_, cs = np.full(k, w), np.full(k, a), np.full(k, c)
        if family == "perturbed":
            eps = _loguniform(rng, 1e-12, 1e-4)
            ws, as_, cs = (v * (1 + eps * rng.uniform(-1, 1, k)) for v in (ws, as_, cs))
        return BandwidthInstance(ws, as_, cs, np.full(k, 1e-3), np.ones(k), k * t)
    if family == "single":
        b_min = _loguniform(rng, 1e-4, 1e-1, 1)
        return BandwidthInstance(_loguniform(rng, 1e-4, 10.0, 1), _loguniform(rng, 0.1, 200.0, 1),
                                 _loguniform(rng, 1e-6, 1.0, 1), b_min, np.ones(1),
                                 _budget_above(b_min, _loguniform(rng, 1e-6, 1e3)))
    if family == "random-n":
        n = int(rng.integers(1, 51))
        b_min = np.full(n, 1e-3)
        return BandwidthInstance(
            _loguniform(rng, 0.01, 1.0, n), _loguniform(rng, 1.0, 50.0, n),
            _loguniform(rng, 1e-4, 0.1, n), b_min, np.ones(n),
            _budget_above(b_min, _loguniform(rng, 1e-2, 1e3)))
    raise ValueError(f"unknown family {family!r}; known: {', '.join(BANDWIDTH_FAMILIES)}")


def adversarial_power(family: str, seed: int | np.random.Generator = 0) -> PowerInstance:
    """One adversarial instance of (21) from ``family`` (:data:`POWER_FAMILIES`).

    ``sinr``: at the grid's geometric mean power, A_m/p and κ p^{−2/α} are SINR-like
    thresholds in 0.1..100, α in [2.1, 6], C comparable with W/p; ``q-near-1``: tiny A, κ
    (u = A/p + κ p^{−2/α} in 1e-12..1e-6, where 1 − q must be −expm1(−u)); ``q-near-0``:
    u in 30..700; ``c-zero``: C = 0; ``c-huge``: C = 1e6..1e12; ``fixed-p``: p_min = p_max;
    ``many``: 20..100 modules.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    alpha = float(rng.uniform(2.1, 6.0))
    p_min = float(_loguniform(rng, 1e-4, 1e-2))
    p_max = float(p_min * _loguniform(rng, 2.0, 1e4))
    m = int(rng.integers(20, 101)) if family == "many" else int(rng.integers(1, 9))
    lo, hi = {"q-near-1": (1e-12, 1e-6), "q-near-0": (30.0, 700.0)}.get(family, (0.1, 100.0))
    pg = math.sqrt(p_min * p_max)
    W = _loguniform(rng, 1e-3, 10.0, m)
    A = _loguniform(rng, lo, hi, m) * pg
    kappa = float(_loguniform(rng, lo, hi)) * pg ** (2.0 / alpha)
    if rng.random() < 0.3:  # one of the two parts of u absent
        if rng.random() < 0.5:
            A = np.zeros(m)
        else:
            kappa = 0.0
    ugeo = float(np.mean(A / pg) + kappa * pg ** (-2.0 / alpha))
    C = float(_loguniform(rng, 1e-3, 10.0)) * float(W.sum()) * min(ugeo, 1.0) / pg
    if family == "c-zero":
        C = 0.0
    elif family == "c-huge":
        C = float(_loguniform(rng, 1e6, 1e12))
    elif family == "fixed-p":
        p_max = p_min
    elif family not in POWER_FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(POWER_FAMILIES)}")
    return PowerInstance(W, A, kappa, alpha, C, p_min, p_max)


def random_round_system(cfg, seed: int | np.random.Generator = 0):
    """One round's coefficients of (7) (a :class:`fedopt.costs.RoundSystem`) for the config
    ``cfg``, as ``fedopt validate round`` draws them: a population and a round state with
    every pair measured (:func:`fedopt.online.scenarios.random_round_state`), priced by the
    allocator's :meth:`~fedopt.allocator.RoundAllocator.system`."""
    from ..allocator import RoundAllocator
    from ..costs import switching_init, switching_update
    from ..online.scenarios import random_round_state

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    state, _ = random_round_state(cfg, rng)
    al = RoundAllocator(cfg)
    al.estimator = switching_update(switching_init(cfg.K, cfg.M), state.loss, state.grad_sq, 0)
    return al.system(state)
