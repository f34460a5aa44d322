"""Adapter: a Pyomo model from ``fedopt.models`` solved by SCIP through Pyomo's ``scip_direct``.

The adapter maps Pyomo's termination conditions to the shared status vocabulary through
:data:`STATUS_MAP`. SCIP's "optimal" is only provisional here: callers re-evaluate the point
exactly, project it into the feasible set if SCIP left it outside by its feasibility
tolerance, and keep ``optimal`` only when the exact objective is within ``tol`` of SCIP's dual
bound.
"""

from __future__ import annotations

import math
import time
from typing import Any

#: Pyomo (contrib.solver) TerminationCondition name -> Solution.status
STATUS_MAP: dict[str, str] = {
    "convergenceCriteriaSatisfied": "optimal",
    "maxTimeLimit": "time_limit",
    "iterationLimit": "time_limit",
    "objectiveLimit": "feasible",
    "provenInfeasible": "infeasible",
    "locallyInfeasible": "infeasible",
    "infeasibleOrUnbounded": "infeasible",
    "unbounded": "error",
    "interrupted": "error",
    "error": "error",
    "unknown": "error",
}


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyscipopt") is not None


#: SCIP prints nothing: its log goes through a pipe in this process, and a long log filled
#: it and stalled the solve (the K = 8 round model hung at ~20 s without a terminal)
QUIET = {"display/verblevel": 0}


def solve_model(model, variables: list, time_limit: float, rel_gap: float = 1e-10,
                options: dict | None = None) -> dict[str, Any]:
    """Solve ``model`` with SCIP. Returns a dict with the values of ``variables`` (or None),
    the mapped status, SCIP's native termination, incumbent objective, dual bound, seconds
    and node count."""
    from pyomo.contrib.solver.common.factory import SolverFactory

    solver = SolverFactory("scip_direct")
    t0 = time.perf_counter()
    try:
        res = solver.solve(
            model, time_limit=float(time_limit), rel_gap=rel_gap, load_solutions=False,
            raise_exception_on_nonoptimal_result=False, solver_options={**QUIET, **(options or {})},
        )
    except Exception as exc:  # solver trouble is a status, not an exception
        return {"values": None, "status": "error", "native": f"{type(exc).__name__}: {exc}",
                "incumbent": None, "bound": None, "seconds": time.perf_counter() - t0,
                "nodes": 0}
    seconds = time.perf_counter() - t0
    native = getattr(res.termination_condition, "name", str(res.termination_condition))
    status = STATUS_MAP.get(native, "error")
    values = None
    try:
        if res.solution_loader.get_number_of_solutions() > 0:
            prim = res.solution_loader.get_vars(vars_to_load=variables)
            values = [float(prim[v]) for v in variables]
    except Exception:  # no primal point to load
        values = None
    if values is None and status in ("optimal", "time_limit", "feasible"):
        status = "time_limit" if status == "time_limit" else "error"
    bound = res.objective_bound
    bound = float(bound) if bound is not None and math.isfinite(bound) else None
    inc = res.incumbent_objective
    try:
        nodes = int(res.extra_info["NNodes"])
    except Exception:
        nodes = 0
    return {"values": values, "status": status, "native": native,
            "incumbent": None if inc is None else float(inc), "bound": bound,
            "seconds": seconds, "nodes": nodes}
