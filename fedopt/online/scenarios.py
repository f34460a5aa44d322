"""Random round states for validation: the system model plus synthetic measured statistics.

The measured ℓ and ‖∇‖² come from a calibrated generator (ours): losses ~ U[0.2, 1.2] and
squared gradient norms scaled so that ω_k Γ_{k,m} is of the order of ρ E_{k,m} at the nominal
allocation, times a log-uniform factor in [1/3, 3]. That is the regime where scheduling trades
risk reduction against energy; far from it every method agrees trivially.
"""

from __future__ import annotations

import numpy as np

from ..allocator import RoundState
from ..energy import communication_energy
from ..population import Population, draw_population

__all__ = ["random_round_state", "calibrated_grad_sq", "cost_sequence"]


def calibrated_grad_sq(cfg, pop: Population, rng: np.random.Generator, spread: float = 3.0) -> np.ndarray:
    """‖∇‖² (K, M) with ω_k (η/2)‖∇‖² ≈ ρ E_{k,m} at (P_max, b = 1/⌈βK⌉), times LogU[1/s, s]."""
    b_nom = 1.0 / max(1.0, np.ceil(cfg.beta * pop.K))
    E = pop.computation_energy(cfg) + communication_energy(cfg, cfg.P_max, pop.S[None, :], b_nom)
    target = cfg.rho * E / (pop.omega[:, None] * 0.5 * cfg.lr)
    return target * np.exp(rng.uniform(-np.log(spread), np.log(spread), target.shape))


def random_round_state(cfg, seed: int | np.random.Generator = 0, t: int = 0,
                       pop: Population | None = None) -> tuple[RoundState, Population]:
    """A population and one round's :class:`RoundState` with every pair measured."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pop = pop if pop is not None else draw_population(cfg, rng)
    loss = rng.uniform(0.2, 1.2, (pop.K, pop.M))
    state = RoundState(t=t, distance=pop.d, data_size=pop.n_data.astype(float), loss=loss,
                       grad_sq=calibrated_grad_sq(cfg, pop, rng), cpu_freq=pop.f,
                       cycles_per_bit=pop.c, samples=pop.D)
    return state, pop


def cost_sequence(cfg, T: int, seed: int = 0, *, speed: float = 3.0, drift_rounds: float = 200.0
                  ) -> dict[str, np.ndarray]:
    """T rounds of per-pair costs u^t (8) from the system model, for the online validation.

    - mobility: each UE's position does a Gaussian random walk (``speed`` m per round per axis),
      reflected into the cell annulus [d_min, R];
    - fading: a known block gain h_k^t ~ Exp(1) per round (Rayleigh power), folded into (15) as
      in :meth:`RoundAllocator.system`;
    - drifting Δ and Γ: losses decay towards per-pair floors with AR(1) noise; squared gradient
      norms start at the calibrated level and decay to half of it as (1 + e^{−t/drift_rounds})/2
      (non-IID local gradients stay non-zero at the optimum), with log-normal noise;
    - pricing at the nominal allocation (P_max, b = max(b^min, 1/⌈βK⌉)) of MODEL.md (8).

    Returns arrays ``costs``, ``energy`` (T, K, M) and ``feasible`` (T, K, M) bool.
    """
    from ..allocator import RoundAllocator
    from ..costs import switching_init, switching_update

    rng = np.random.default_rng(seed)
    pop = draw_population(cfg, rng)
    K, M = pop.K, pop.M
    alloc = RoundAllocator(cfg, policy="greedy", on_infeasible="flag")
    g0 = calibrated_grad_sq(cfg, pop, rng)
    floor_loss = rng.uniform(0.2, 0.8, (K, M))
    loss = floor_loss + rng.uniform(0.3, 0.8, (K, M))
    pos = np.array(pop.positions)
    n_floor = max(1, int(np.ceil(cfg.beta * K)))
    out = {k: np.empty((T, K, M)) for k in ("costs", "energy")}
    out["feasible"] = np.empty((T, K, M), bool)
    for t in range(T):
        pos = pos + rng.normal(0.0, speed, pos.shape)
        r = np.hypot(pos[:, 0], pos[:, 1])
        r_new = np.clip(np.where(r > cfg.radius, 2 * cfg.radius - r, r), cfg.d_min, cfg.radius)
        pos *= (r_new / np.maximum(r, 1e-9))[:, None]
        loss = floor_loss + (loss - floor_loss) * 0.99 + rng.normal(0.0, 0.01, (K, M))
        decay = 0.5 + 0.5 * np.exp(-t / drift_rounds)  # local gradients stay > 0 (non-IID)
        grad_sq = g0 * decay * rng.lognormal(0.0, 0.3, (K, M))
        state = RoundState(t=t, distance=np.hypot(pos[:, 0], pos[:, 1]),
                           data_size=pop.n_data.astype(float), loss=loss, grad_sq=grad_sq,
                           cpu_freq=pop.f, cycles_per_bit=pop.c, samples=pop.D,
                           fading=np.maximum(rng.standard_exponential(K), 1e-3))
        alloc.estimator = switching_update(switching_init(K, M), loss, grad_sq, t)
        sys_ = alloc.system(state)
        b = np.minimum(np.maximum(np.where(np.isfinite(sys_.b_min), sys_.b_min, 1.0), 1.0 / n_floor), 1.0)
        u, _, E = sys_.costs(np.full(K, cfg.P_max), b)
        out["costs"][t], out["energy"][t] = u, E
        out["feasible"][t] = np.isfinite(sys_.b_min)
    return out
