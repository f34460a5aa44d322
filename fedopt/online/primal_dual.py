"""``primal_dual``: the paper's online switching, (10)-(12) (after Mahdavi, Jin and Yang 2012).

Per UE, with the relaxed set 𝒳 = {x ∈ [0,1]^M : 1ᵀx ≤ M_max} of (9), g^t(x) = β − 1ᵀx and the
regularised Lagrangian (10) L^t(x, λ) = ⟨u^t, x⟩ + λ g^t(x) − (δ η_λ / 2) λ²:

- (11) dual ascent  λ ← [λ + η_λ (g(x̃) − δ η_λ λ)]₊
- (12) primal step  x̃ ← Π_𝒳[x̃ − η_x (u − λ 1)]   (exact capped-simplex projection)
- the played x is a systematic rounding of x̃ (E[x] = x̃, 1ᵀx ≤ M_max).

Ordering (ours, see MODEL-NOTES.md, "primal_dual, (10)-(12)"): each call first applies the
dual step (11) for the previous round's x̃, then the primal step (12) with the freshest cost
available when x^t is decided — the allocator builds it from the last round's outcome, which
is MODEL.md's "u^t stands in for u^{t+1}" — and rounds. Costs are divided by a running per-UE
scale so that η_x, η_λ and δ are dimensionless. The optional energy budget Ē adds a second
multiplier μ with g_E = (E_k − Ē)/Ē on the played energy.
"""

from __future__ import annotations

import numpy as np

from ._common import base_state, normalised, round_rng
from .base import SwitchingPolicy, _check_common, _finite, check_round_inputs
from .projection import project_capped_simplex, systematic_round

__all__ = ["primal_dual"]


def primal_dual(beta: float, M_max: int, *, eta_x: float = 100.0, eta_lambda: float = 1.0,
                delta: float = 0.01, decay: float = 1.0, lambda0: float = 0.0,
                energy_budget: float = 0.0, seed: int = 0,
                on_infeasible: str = "raise") -> SwitchingPolicy:
    """Build the primal-dual policy (10)-(12). ``energy_budget`` Ē_k [J/round], 0: none.

    Step sizes are in units of the normalised cost. ``decay`` > 0 shrinks the dual step as
    η_λ / sqrt(1 + decay·n) after n dual steps (0: constant, which tracks drifting costs);
    ``lambda0`` is the initial multiplier.
    """
    beta, M_max = _check_common(beta, M_max, seed, on_infeasible)
    decay, lambda0 = _finite("decay", decay), _finite("lambda0", lambda0)
    eta_x, eta_lambda, delta = (_finite(n, v) for n, v in
                                (("eta_x", eta_x), ("eta_lambda", eta_lambda), ("delta", delta)))
    energy_budget = _finite("energy_budget", energy_budget)

    def init(K: int, M: int) -> dict:
        s = base_state(K, M, seed)
        s["x_tilde"] = np.full((K, M), min(1.0, beta / M))  # 1ᵀx̃ = β: the floor in expectation
        s["lam"] = np.full(K, float(lambda0))
        s["n_dual"] = 0
        s["mu"] = np.zeros(K)
        return s

    def update(costs, feasible, t, state, *, energy=None, active=None):
        costs, feasible, active, _ = check_round_inputs(
            costs, feasible, state, beta, M_max, active, energy, on_infeasible, t=t)
        u, state = normalised(costs, state)
        lam, mu = state["lam"], state["mu"]
        n_dual = int(state["n_dual"])
        if state["has_played"]:
            # (11) for the previous round: g(x̃) = β − 1ᵀx̃
            eta = eta_lambda / np.sqrt(1.0 + decay * n_dual)
            g = beta - state["x_tilde"].sum(axis=1)
            lam = np.maximum(lam + eta * (g - delta * eta * lam), 0.0)
            if energy_budget > 0:
                ge = (state["played_energy"] - energy_budget) / energy_budget
                mu = np.maximum(mu + eta * (ge - delta * eta * mu), 0.0)
            n_dual += 1
        grad = u - lam[:, None]
        if energy_budget > 0 and energy is not None:
            grad = grad + mu[:, None] * np.asarray(energy) / energy_budget
        # (12): exact projection onto 𝒳 restricted to this round's feasible pairs
        x_tilde = project_capped_simplex(state["x_tilde"] - eta_x * grad, M_max, feasible)
        x = systematic_round(x_tilde, M_max, round_rng(state, t))
        new = {**state, "x_tilde": x_tilde, "lam": lam, "mu": mu, "played": x, "t": int(t),
               "has_played": 1, "n_dual": n_dual}
        if energy is not None:
            new["played_energy"] = (np.asarray(energy) * x).sum(axis=1)
        return x, new

    return SwitchingPolicy("primal_dual", init, update,
                           dict(beta=beta, M_max=M_max, eta_x=eta_x, eta_lambda=eta_lambda,
                                delta=delta, energy_budget=energy_budget, seed=seed))
