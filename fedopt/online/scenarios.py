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

__all__ = ["random_round_state", "calibrated_grad_sq"]


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
