"""The paper's baselines: ``greedy`` (the round slice alone) and ``one_shot`` (switch once)."""

from __future__ import annotations

import math

import numpy as np

from ._common import base_state
from .base import SwitchingPolicy, _check_common, best_vertex, check_round_inputs

__all__ = ["greedy", "one_shot"]


def greedy(beta: float, M_max: int, *, seed: int = 0, on_infeasible: str = "raise") -> SwitchingPolicy:
    """Minimise ⟨u^t, x⟩ over 𝒳 ∩ {0,1}^M each round, ignoring (7f): the paper's greedy
    baseline. It schedules only pairs with negative cost, so it violates the participation
    floor whenever energy outweighs the risk reduction (the effect discussed with Fig. 4)."""
    beta, M_max = _check_common(beta, M_max, seed, on_infeasible)

    def init(K: int, M: int) -> dict:
        return base_state(K, M, seed)

    def update(costs, feasible, t, state, *, energy=None, active=None):
        costs, feasible, _, _ = check_round_inputs(
            costs, feasible, state, beta, M_max, active, energy, on_infeasible, t=t)
        x = best_vertex(costs, feasible, M_max)
        return x, {**state, "played": x, "t": int(t), "has_played": 1}

    return SwitchingPolicy("greedy", init, update, dict(beta=beta, M_max=M_max))


def one_shot(beta: float, M_max: int, *, seed: int = 0, on_infeasible: str = "raise") -> SwitchingPolicy:
    """Switch once, in the first round, then keep the assignment (the paper's one-shot baseline).

    The first decision gives every UE its ⌈β⌉ cheapest feasible modules (a fixed binary
    assignment meets the floor (7f) only with 1ᵀx_k ≥ ⌈β⌉) plus any further module of negative
    cost, up to M_max. Later rounds replay it; a pair that becomes infeasible (or a UE that is
    absent) is skipped that round.
    """
    beta, M_max = _check_common(beta, M_max, seed, on_infeasible)
    need = min(M_max, math.ceil(beta))

    def init(K: int, M: int) -> dict:
        s = base_state(K, M, seed)
        s["assignment"] = np.zeros((K, M), dtype=np.int8)
        s["fixed"] = np.zeros(K, dtype=np.int8)  # per UE: its assignment is chosen
        return s

    def update(costs, feasible, t, state, *, energy=None, active=None):
        costs, feasible, _, _ = check_round_inputs(
            costs, feasible, state, beta, M_max, active, energy, on_infeasible, t=t)
        assignment, fixed = state["assignment"].copy(), state["fixed"].copy()
        todo = (fixed == 0) & feasible.any(axis=1)  # a UE switches once: when it first can
        if todo.any():
            floor = best_vertex(costs - np.abs(costs).max() - 1.0, feasible, need)  # ⌈β⌉ cheapest
            extra = best_vertex(np.where(floor > 0, np.inf, costs), feasible, M_max - need)
            assignment[todo] = (floor | extra)[todo]
            fixed[todo] = 1
        x = (assignment & feasible).astype(np.int8)
        return x, {**state, "assignment": assignment, "fixed": fixed, "played": x, "t": int(t),
                   "has_played": 1}

    return SwitchingPolicy("one_shot", init, update, dict(beta=beta, M_max=M_max))
