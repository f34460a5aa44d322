"""``lyapunov``: drift-plus-penalty switching with virtual queues (MODEL.md, (8)-(12)).

Per UE, the participation queue Z_k^{t+1} = [Z_k^t + β − 1ᵀx_k^t]₊ and, with an energy
budget Ē_k, the energy queue Y_k^{t+1} = [Y_k^t + (E_k^t − Ē_k)/Ē_k]₊. Each round

    x_k^t = argmin_{x ∈ 𝒳 ∩ {0,1}^M}  V ⟨ũ_k^t, x⟩ − Z_k^t 1ᵀx + Y_k^t ⟨E_k^t, x⟩ / Ē_k,

which picks the ≤ M_max most negative feasible scores. ũ is u divided by a running per-UE
cost scale so that V is dimensionless; the energy queue is kept in units of the budget.
Queues are charged with the played round (see ``record_outcome``) at the start of the next
call. The time-average violation is at most Z_k^T / T.
"""

from __future__ import annotations

import numpy as np

from ._common import base_state, normalised
from .base import SwitchingPolicy, _check_common, _finite, best_vertex, check_round_inputs

__all__ = ["lyapunov"]


def lyapunov(beta: float, M_max: int, *, V: float = 20.0, Z0: float | None = None,
             energy_budget: float = 0.0, seed: int = 0, on_infeasible: str = "raise"
             ) -> SwitchingPolicy:
    """Build the drift-plus-penalty policy. ``energy_budget`` Ē_k [J/round], 0: none.

    ``Z0``: the initial participation queue; by default V/2 (ours), so that the first rounds
    already schedule the pairs cheaper than half the UE's mean normalised cost instead of waiting
    for the queue to build up (which would front-load the violation).
    """
    beta, M_max = _check_common(beta, M_max, seed, on_infeasible)
    V = _finite("V", V)
    if Z0 is not None:
        Z0 = _finite("Z0", Z0)
    energy_budget = _finite("energy_budget", energy_budget)

    def init(K: int, M: int) -> dict:
        s = base_state(K, M, seed)
        s["Z"] = np.full(K, float(V / 2 if Z0 is None else Z0))
        s["Y"] = np.zeros(K)
        return s

    def update(costs, feasible, t, state, *, energy=None, active=None):
        costs, feasible, active, _ = check_round_inputs(
            costs, feasible, state, beta, M_max, active, energy, on_infeasible, t=t)
        u, state = normalised(costs, state)
        Z, Y = state["Z"], state["Y"]
        if state["has_played"]:
            Z = np.maximum(Z + beta - state["played"].sum(axis=1), 0.0)
            if energy_budget > 0:
                Y = np.maximum(Y + (state["played_energy"] - energy_budget) / energy_budget, 0.0)
        score = V * u - Z[:, None]
        if energy_budget > 0 and energy is not None:
            score = score + Y[:, None] * np.asarray(energy) / energy_budget
        x = best_vertex(score, feasible, M_max)
        new = {**state, "Z": Z, "Y": Y, "played": x, "t": int(t), "has_played": 1}
        if energy is not None:
            new["played_energy"] = (np.asarray(energy) * x).sum(axis=1)
        return x, new

    return SwitchingPolicy("lyapunov", init, update,
                           dict(beta=beta, M_max=M_max, V=V, energy_budget=energy_budget))
