"""SCIP adapter for the per-round problem (7) built by ``models/round.py`` (``scip_direct``).

Reports SCIP's status and dual bound honestly and re-evaluates its point exactly feasible:
SCIP's feasibility tolerance is ~1e-6, so its (p, b) are clipped to their bounds and the
bandwidth above b^min is scaled down until Σ b ≤ 1 holds exactly, then the objective of (7)
is recomputed in double precision (:meth:`RoundSystem.objective`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._scip import QUIET

__all__ = ["ScipRoundResult", "solve_round_scip", "STATUS_MAP", "exact_feasible"]

# SCIP's native status -> the house vocabulary of fedopt.solvers
STATUS_MAP = {
    "optimal": "optimal",
    "gaplimit": "optimal",
    "timelimit": "time_limit",
    "nodelimit": "time_limit",
    "totalnodelimit": "time_limit",
    "stallnodelimit": "time_limit",
    "memlimit": "error",
    "infeasible": "infeasible",
    "unbounded": "error",
    "inforunbd": "infeasible",
    "userinterrupt": "error",
    "unknown": "error",
}


@dataclass(frozen=True)
class ScipRoundResult:
    """x (K, M) int8, p (K,), b (K, M) (0 where x = 0); ``objective`` is (7) re-evaluated at the
    exactly feasible point; ``scip_objective`` SCIP's own incumbent; ``bound`` its dual bound."""

    x: np.ndarray
    p: np.ndarray
    b: np.ndarray
    objective: float
    scip_objective: float
    bound: float
    status: str
    native_status: str
    seconds: float
    extras: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        if not (math.isfinite(self.objective) and math.isfinite(self.bound)):
            return math.inf
        return max(0.0, self.objective - self.bound) / max(abs(self.objective), 1e-300)


def exact_feasible(sys_, x: np.ndarray, p: np.ndarray, b: np.ndarray):
    """Project a solver point onto (7b)-(7e) exactly: clip p, b to their bounds, then scale the
    bandwidth above b^min so that Σ x b ≤ 1 (possible whenever Σ x b^min ≤ 1)."""
    x = np.asarray(x) > 0
    p = np.clip(np.asarray(p, float), sys_.P_min, sys_.P_max)
    bm = np.where(x, sys_.b_min, 0.0)
    b = np.where(x, np.clip(np.asarray(b, float), bm, 1.0), 0.0)
    total = math.fsum(b[x])
    if total > 1.0:
        extra = b - bm
        s = (1.0 - math.fsum(bm[x])) / max(math.fsum(extra[x]), 1e-300)
        b = np.where(x, bm + extra * min(1.0, s) * (1 - 1e-15), 0.0)
    return x, p, b


def solve_round_scip(sys_, M_max: int, *, x_fixed=None, available=None, floor=None,
                     time_limit: float = 60.0, rel_gap: float = 1e-6,
                     options: dict | None = None) -> ScipRoundResult:
    """Solve one round of (7) globally with SCIP through Pyomo's ``scip_direct``."""
    from fedopt.models.round import round_model
    from pyomo.contrib.solver.solvers.scip.scip_direct import ScipDirect

    # scale the objective to O(1): SCIP's absolute tolerances are ~1e-6 to 1e-9
    ref = abs(sys_.objective(np.zeros((sys_.K, sys_.M)), np.full(sys_.K, sys_.P_max),
                             np.zeros((sys_.K, sys_.M))))
    scale = 1.0 / ref if ref > 0 else 1.0
    mdl = round_model(sys_, M_max, x_fixed=x_fixed, available=available, floor=floor, scale=scale)
    K, M = sys_.K, sys_.M
    t0 = time.perf_counter()
    opt = ScipDirect()
    res = opt.solve(mdl, time_limit=time_limit, rel_gap=rel_gap,
                    raise_exception_on_nonoptimal_result=False, load_solutions=False,
                    solver_options={**QUIET, **(options or {})})
    secs = time.perf_counter() - t0
    native = _native_status(res)
    status = STATUS_MAP.get(native, "error")
    bound = res.objective_bound / scale if res.objective_bound is not None else -math.inf
    scip_obj = res.incumbent_objective / scale if res.incumbent_objective is not None else math.nan
    x = np.zeros((K, M), np.int8)
    p = np.full(K, sys_.P_max)
    b = np.zeros((K, M))
    obj = math.nan
    if res.incumbent_objective is not None:
        res.solution_loader.load_vars()  # p and b are expressions of z = ln p, y = ln b
        for k in mdl.U:
            p[k] = pyo_value(mdl.p[k])
        for k, m in mdl.P:
            on = (x_fixed is not None) or pyo_value(mdl.x[k, m]) > 0.5
            x[k, m] = int(on)
            b[k, m] = pyo_value(mdl.b[k, m])
        xb, p, b = exact_feasible(sys_, x, p, b)
        obj = sys_.objective(xb, p, b)
        if status == "time_limit":
            status = "time_limit"  # an incumbent without proof
    return ScipRoundResult(x, p, b, obj, float(scip_obj), float(bound), status, native, secs,
                           {"termination": str(res.termination_condition)})


def pyo_value(v) -> float:
    import pyomo.environ as pyo

    return float(pyo.value(v))


def _native_status(res) -> str:
    from pyomo.contrib.solver.common.results import TerminationCondition as TC

    tc = res.termination_condition
    return {
        TC.convergenceCriteriaSatisfied: "optimal",
        TC.maxTimeLimit: "timelimit",
        TC.iterationLimit: "nodelimit",
        TC.provenInfeasible: "infeasible",
        TC.infeasibleOrUnbounded: "inforunbd",
        TC.unbounded: "unbounded",
        TC.interrupted: "userinterrupt",
    }.get(tc, "unknown")
