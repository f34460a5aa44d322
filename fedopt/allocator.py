"""Algorithm 2 for one round: the plug-in API of fedopt.

An FL system builds a :class:`RoundState` from its own bookkeeping each round and calls
``RoundAllocator.allocate(state)``; it gets back an :class:`Allocation` (x, p, b, q, E). The
state is plain data with no dependency on fedopt's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RoundState", "Allocation"]


@dataclass
class RoundState:
    """What the allocator observes at the start of round t (Algorithm 2, step 1).

    Shapes: K UEs, M modules.

    - ``distance`` (K,): UE-gNB distances [m].
    - ``data_size`` (K,): local dataset sizes |D_k| (they give omega_k).
    - ``loss``, ``grad_sq`` (K, M): the backend's latest measured loss l_{k,m} and
      ||grad F_k(theta_0 + theta_m)||^2; NaN where a pair was not measured this round (the
      allocator's estimator keeps the last value).
    - ``cpu_freq`` f_k [Hz], ``cycles_per_bit`` c_k, ``samples`` D_k^t (K,).
    - ``fading`` (K,) or None: a known fade h_k; None means only its distribution is known,
      so q is the closed form (15).
    - ``available`` (K,) bool or None: UEs that can be scheduled this round (None: all).
    """

    t: int
    distance: np.ndarray
    data_size: np.ndarray
    loss: np.ndarray
    grad_sq: np.ndarray
    cpu_freq: np.ndarray
    cycles_per_bit: np.ndarray
    samples: np.ndarray
    fading: np.ndarray | None = None
    available: np.ndarray | None = None

    @property
    def K(self) -> int:
        return int(np.shape(self.distance)[0])

    @property
    def M(self) -> int:
        return int(np.shape(self.loss)[1])


@dataclass
class Allocation:
    """One round's decision and what it costs (Algorithm 2, step 2).

    x (K, M) in {0, 1}; p (K,) [W]; b (K, M) bandwidth fractions (0 where x = 0);
    q (K, M) success probabilities (15); energy_computation / energy_communication (K, M) [J],
    the two terms of (4), 0 where x = 0; costs u (K, M) of (8); objective = Phi + rho Σ E of the
    round; bound / gap of the continuous (p, b) step where a certificate exists.
    """

    x: np.ndarray
    p: np.ndarray
    b: np.ndarray
    q: np.ndarray
    energy_computation: np.ndarray
    energy_communication: np.ndarray
    costs: np.ndarray
    objective: float
    bound: float = float("nan")
    gap: float = float("nan")
    iterations: int = 0
    status: str = "feasible"
    extras: dict = field(default_factory=dict)

    @property
    def energy(self) -> np.ndarray:
        """E_{k,m} of eq. (4), (K, M)."""
        return self.energy_computation + self.energy_communication
