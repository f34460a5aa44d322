"""Exact-solver references for (16): SCIP (through the Pyomo model in ``fedopt.models``),
Ipopt (cyipopt, analytic gradient and Hessian) and CVXPY + Clarabel (convex instances only).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import FedoptError
from ._bandwidth_core import convex_mask, d2f, df, f, fsum

#: cyipopt / Ipopt ApplicationReturnStatus -> Solution.status
IPOPT_STATUS_MAP: dict[int, str] = {
    0: "locally_optimal",    # Solve_Succeeded
    1: "locally_optimal",    # Solved_To_Acceptable_Level
    2: "infeasible",         # Infeasible_Problem_Detected
    3: "error",              # Search_Direction_Becomes_Too_Small
    4: "error",              # Diverging_Iterates
    5: "error",              # User_Requested_Stop
    6: "feasible",           # Feasible_Point_Found
    -1: "feasible",          # Maximum_Iterations_Exceeded
    -2: "error",             # Restoration_Failed
    -3: "error",             # Error_In_Step_Computation
    -4: "time_limit",        # Maximum_CpuTime_Exceeded
    -5: "time_limit",        # Maximum_WallTime_Exceeded
}

#: CVXPY status -> Solution.status (before our own certificate check)
CVXPY_STATUS_MAP: dict[str, str] = {
    "optimal": "optimal",
    "optimal_inaccurate": "feasible",
    "infeasible": "infeasible",
    "infeasible_inaccurate": "infeasible",
    "unbounded": "error",
    "unbounded_inaccurate": "error",
    "user_limit": "time_limit",
}


def project(inst, b: np.ndarray) -> np.ndarray:
    """Bring a solver's point into the feasible set exactly: clip to the bounds, then scale
    the part above b_min down if Σ b exceeds the budget."""
    lo, hi, B = inst.b_min, inst.b_max, inst.budget
    b = np.clip(np.asarray(b, dtype=float), lo, hi)
    B = math.nextafter(B, 0.0)  # as make_feasible: the exact sum stays within the budget
    s = fsum(b)
    if s > B:
        extra = b - lo
        room = B - fsum(lo)
        b = lo + extra * (room / fsum(extra)) * (1 - 1e-15)
        b = np.clip(b, lo, hi)
        while fsum(b) > B:
            k = int(np.argmax(b - lo))
            b[k] -= (fsum(b) - B) * 2 + 1e-300
            b[k] = max(b[k], lo[k])
    return b


def solve_scip(inst, time_limit: float, rel_gap: float = 1e-10):
    """(b or None, native, status, bound, nodes) from SCIP on the Pyomo model of (16)."""
    from fedopt.models import bandwidth_model

    from . import _scip

    m = bandwidth_model(inst)
    r = _scip.solve_model(m, [m.b[n] for n in m.N], time_limit, rel_gap)
    b = None if r["values"] is None else np.asarray(r["values"])
    return b, r


def solve_ipopt(inst, time_limit: float, tol: float = 1e-10, x0: np.ndarray | None = None):
    """Local interior point on (16) through cyipopt, with analytic gradient and Hessian."""
    import cyipopt

    w, a, c, lo, hi, B = inst.w, inst.a, inst.c, inst.b_min, inst.b_max, inst.budget
    n = inst.n
    if x0 is None:
        share = (B - fsum(lo)) / n
        x0 = np.minimum(lo + 0.5 * share, hi)

    class _P:
        iterations = 0

        def intermediate(self, alg_mod, iter_count, *args) -> bool:
            self.iterations = int(iter_count)  # Ipopt's own iteration counter
            return True

        def objective(self, x):
            return float(np.sum(f(w, a, c, x)))

        def gradient(self, x):
            return df(w, a, c, x)

        def constraints(self, x):
            return np.array([np.sum(x)])

        def jacobian(self, x):
            return np.ones(n)

        def hessianstructure(self):
            i = np.arange(n)
            return i, i

        def hessian(self, x, lagrange, obj_factor):
            return obj_factor * d2f(w, a, c, x)

    obj = _P()
    prob = cyipopt.Problem(n=n, m=1, problem_obj=obj, lb=lo, ub=hi, cl=[-1e20], cu=[B])
    prob.add_option("print_level", 0)
    prob.add_option("sb", "yes")
    prob.add_option("tol", tol)
    prob.add_option("max_wall_time", float(time_limit))
    x, info = prob.solve(np.asarray(x0, dtype=float))
    return np.asarray(x), dict(info, iterations=obj.iterations)


def solve_cvxpy(inst, tol: float = 1e-9, max_iter: int = 200, time_limit: float = math.inf):
    """Convex instances only (27 w/(2e³ a c) <= 1 for every pair, MODEL.md): the convex
    program in CVXPY with Clarabel.

    f_n = c_n/b − w_n e^{−a_n b} is convex but not DCP as written (a convex term plus a
    concave one), so it is solved by majorise–minimise: the concave part is replaced by its
    tangent at the current point, a DPP-parameterised DCP problem
    min Σ c_n inv_pos(b_n) + s·b over the same constraints, solved by Clarabel and
    re-solved with the new slopes s = w a e^{−a b} until b settles. For convex f each step
    decreases the objective and the fixed point is the global minimum.
    Returns (b, nu (Clarabel's budget multiplier), iterations, native status); the status is
    ``user_limit`` when ``time_limit`` seconds pass before b settles.
    """
    import cvxpy as cp

    w, a, c, lo, hi, B = inst.w, inst.a, inst.c, inst.b_min, inst.b_max, inst.budget
    if not np.all(convex_mask(w, a, c)):
        k = int(np.flatnonzero(~convex_mask(w, a, c))[0])
        raise FedoptError(
            f"method 'cvxpy' needs every term convex (27 w/(2 e^3 a c) <= 1); pair {k} has "
            f"{27 * w[k] / (2 * math.e**3 * a[k] * c[k]):.4g} > 1; use method 'global'"
        )
    b = cp.Variable(inst.n)
    s = cp.Parameter(inst.n)
    budget = cp.sum(b) <= B
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(c, cp.inv_pos(b))) + s @ b),
                      [budget, b >= lo, b <= hi])
    x = np.minimum(lo + 0.5 * (B - fsum(lo)) / inst.n, hi)
    prev = math.inf
    it = 0
    status = "optimal"
    t0 = time.perf_counter()
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported after the loop)
        if it > 1 and time.perf_counter() - t0 > time_limit:
            status = "user_limit"
            break
        s.value = w * a * np.exp(-a * x)
        try:
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-9)
        except cp.error.SolverError:  # solver trouble is a status, not an exception
            return None, 0.0, it, "solver_error"
        status = prob.status
        if b.value is None:
            break
        x = np.asarray(b.value, dtype=float)
        obj = float(np.sum(f(w, a, c, np.clip(x, lo, hi))))
        if abs(prev - obj) <= 1e-3 * tol * max(abs(obj), 1e-300):
            break
        prev = obj
    nu = float(budget.dual_value) if budget.dual_value is not None else 0.0
    return (None if b.value is None else x), max(nu, 0.0), it, status
