"""A round as Algorithm 2 meets it: the population, the backend's measured ℓ and ‖∇‖² of
every pair at θ^0, and the round's coefficients (:class:`fedopt.costs.RoundSystem`)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["measured_round", "floor_schedule"]


def measured_round(run):
    """(Simulation, RoundState, RoundSystem) of round 0 of ``run``: every pair probed once."""
    from ..allocator import RoundState
    from ..backends import PairBatch
    from ..costs import switching_init, switching_update
    from ..fl.runtime import Simulation

    sim = Simulation(run, None, progress=False)
    K, M = sim.pop.K, sim.pop.M
    pairs = PairBatch.from_mask(np.ones((K, M), bool))
    loss_v, gsq_v = sim.backend.probe(pairs, sim.params)
    loss = np.full((K, M), np.nan)
    gsq = np.full((K, M), np.nan)
    loss[pairs.ue, pairs.module] = loss_v
    gsq[pairs.ue, pairs.module] = gsq_v
    state = RoundState(t=0, distance=sim.pop.d, data_size=np.asarray(sim.pop.n_data, float),
                       loss=loss, grad_sq=gsq, cpu_freq=sim.pop.f, cycles_per_bit=sim.pop.c,
                       samples=sim.samples())
    sim.allocator.estimator = switching_update(switching_init(K, M), loss, gsq, 0)
    return sim, state, sim.allocator.system(state)


def floor_schedule(b_min: np.ndarray, beta: float, rng: np.random.Generator) -> np.ndarray:
    """x (K, M) bool: ⌈βK⌉ random UEs, each on a random deadline-feasible module, kept while
    Σ b^min stays ≤ 1 (a round that meets the participation floor (7f) exactly; ours)."""
    K, M = b_min.shape
    x = np.zeros((K, M), bool)
    used = 0.0
    n = max(1, math.ceil(beta * K))
    for k in rng.permutation(K):
        if x.any(axis=1).sum() >= n:
            break
        ok = np.flatnonzero(np.isfinite(b_min[k]))
        if ok.size == 0:
            continue
        m = int(rng.choice(ok))
        if used + b_min[k, m] <= 0.95:  # headroom: the budget must exceed Σ b^min
            x[k, m] = True
            used += b_min[k, m]
    return x
