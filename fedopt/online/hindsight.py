"""``hindsight``: the offline optimum of the LP relaxation of (8), the yardstick of regret.

The LP itself is declared in ``models/hindsight.py`` (CVXPY) and solved here with HiGHS
(default) or Clarabel. As a policy it replays a systematic rounding of its optimal x^t.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .._checks import bool_mask, numeric_array, real
from ..errors import InstanceError
from ._common import base_state, round_rng
from .base import SwitchingPolicy, _check_common, check_round_inputs
from .projection import systematic_round

__all__ = ["HindsightResult", "solve_hindsight", "hindsight"]

SOLVERS = {"highs": "HIGHS", "clarabel": "CLARABEL"}  # CVXPY's solver names (cvxpy imported lazily)


@dataclass(frozen=True)
class HindsightResult:
    """x (T, K, M) fractional optimum; objective = (1/T) Σ_t ⟨u^t, x^t⟩ (the LP value);
    status is CVXPY's; seconds the solve time."""

    x: np.ndarray
    objective: float
    status: str
    solver: str
    seconds: float

    @property
    def total(self) -> float:
        """Σ_t ⟨u^t, x^t⟩ (the comparator of cumulative regret)."""
        return self.objective * self.x.shape[0]


def solve_hindsight(costs, feasible, beta: float, M_max: int, *, energy=None,
                    energy_budget: float = 0.0, solver: str = "highs") -> HindsightResult:
    """Solve the hindsight LP of (8) with every u^t known. Arrays are (T, K, M)."""
    from fedopt.models.hindsight import hindsight_problem

    beta, M_max = _check_common(beta, M_max, 0)
    energy_budget = real("energy_budget", energy_budget, 0.0)
    if not isinstance(solver, str):
        raise TypeError(f"solver: expected a solver name, got {type(solver).__name__}")
    costs = numeric_array("costs", costs)
    if costs.ndim != 3:
        raise InstanceError(f"costs: expected shape (T, K, M), got {costs.shape}")
    if not np.all(np.isfinite(costs)):
        raise InstanceError("costs: every u_(k,m)^t must be finite")
    try:
        feasible = np.broadcast_to(bool_mask("feasible", feasible), costs.shape)
    except ValueError:
        raise InstanceError(f"feasible: shape {np.shape(feasible)} does not broadcast to the "
                            f"costs' {costs.shape}") from None
    if energy is not None:
        energy = numeric_array("energy", energy)
    if beta > M_max:
        raise InstanceError(f"beta: {beta:g} exceeds M_max = {M_max}")
    reach = feasible.sum(axis=(0, 2)).clip(max=None)
    cap = np.minimum(feasible.sum(axis=2), M_max).sum(axis=0)  # most participation possible
    short = np.flatnonzero(cap < beta * costs.shape[0] - 1e-9)
    if short.size:
        k = int(short[0])
        raise InstanceError(f"UE {k} cannot reach the participation floor beta = {beta:g}: "
                            f"only {int(reach[k])} feasible pair-rounds")
    key = solver.lower()
    if key not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {sorted(SOLVERS)}")
    prob, x = hindsight_problem(costs, feasible, beta, M_max, energy, energy_budget)
    t0 = time.perf_counter()
    with _quiet_fd1():  # HiGHS prints a licence banner on the C-level stdout
        prob.solve(solver=SOLVERS[key])
    secs = time.perf_counter() - t0
    if x.value is None:
        return HindsightResult(np.full(costs.shape, np.nan), math.nan, prob.status, key, secs)
    xv = np.clip(x.value.reshape(costs.shape), 0.0, 1.0)
    obj = float((costs * xv).sum() / costs.shape[0])
    return HindsightResult(xv, obj, prob.status, key, secs)


@contextlib.contextmanager
def _quiet_fd1():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def hindsight(beta: float, M_max: int, *, costs, feasible=True, energy=None,
              energy_budget: float = 0.0, solver: str = "highs", seed: int = 0) -> SwitchingPolicy:
    """A policy that knows every u^t: it solves the hindsight LP once and, in round t, plays a
    systematic rounding of its x^t (E[x] = x^t)."""
    beta, M_max = _check_common(beta, M_max, seed, "flag")
    result = solve_hindsight(costs, feasible, beta, M_max, energy=energy,
                             energy_budget=energy_budget, solver=solver)

    def init(K: int, M: int) -> dict:
        if (K, M) != result.x.shape[1:]:
            raise InstanceError(f"hindsight was solved for K×M = {result.x.shape[1:]}, got ({K}, {M})")
        return base_state(K, M, seed)

    def update(costs_t, feasible_t, t, state, *, energy=None, active=None):
        _, feasible_t, _, _ = check_round_inputs(costs_t, feasible_t, state, beta, M_max, active,
                                                 energy, "flag", t=t)
        if not 0 <= t < result.x.shape[0]:
            raise InstanceError(f"t = {t} is outside the hindsight horizon T = {result.x.shape[0]}")
        x = systematic_round(np.where(feasible_t, result.x[t], 0.0), M_max, round_rng(state, t))
        return x, {**state, "played": x, "t": int(t), "has_played": 1}

    return SwitchingPolicy("hindsight", init, update,
                           dict(beta=beta, M_max=M_max, solver=solver, objective=result.objective))
