"""Bandwidth allocation (16)-(20): one public entry, ``solve_bandwidth``, dispatching by
``method=`` to one private worker per method (as ``scipy.optimize.minimize`` does).

Methods
-------
``global`` (what ``auto`` runs)
    Certified global branch and bound on the Lagrangian dual / convex-envelope relaxation
    (:mod:`._bandwidth_global`). ``optimal`` only with gap <= tol.
``lambertw``
    The closed form (19) on the W₀ branch with the endpoint comparison; Newton on ν for
    (20) with db/dν = −1/f'' when the budget binds.
``alg1``
    Algorithm 1, the two-tier binary search.
``scip``
    The Pyomo model of (16) (``fedopt.models.bandwidth_model``) solved by SCIP.
``ipopt``
    Local interior point (cyipopt) with analytic gradient and Hessian.
``cvxpy``
    CVXPY + Clarabel, only when every term is convex (27 w/(2e³ac) <= 1).

Every returned point is checked against the instance's bounds and budget (and projected
into them if a solver left it outside); such a point is never labelled ``optimal`` unless the
exact objective is certified within ``tol`` of a valid lower bound.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import FedoptError
from ..instances import BandwidthInstance
from ._bandwidth_core import f, fsum, objective_with_rounding
from ._solution import Solution, certify, check_options, quiet, refuted

__all__ = ["solve_bandwidth", "BANDWIDTH_METHODS", "bandwidth_objective"]

BANDWIDTH_METHODS = ("auto", "global", "lambertw", "alg1", "scip", "ipopt", "cvxpy")


def bandwidth_objective(inst: BandwidthInstance, b: np.ndarray) -> float:
    """Objective of (16) in canonical form (fsum for N <= 20000, pairwise sum above)."""
    return fsum(f(inst.w, inst.a, inst.c, np.asarray(b, dtype=float)))


def _probes(inst: BandwidthInstance) -> np.ndarray:
    """Objectives of a few cheap feasible points (the free budget shared equally, in
    proportion to √c, and to b_min), to test an external solver's claimed bound."""
    from ._bandwidth_core import make_feasible

    room = inst.budget - fsum(inst.b_min)
    out = []
    for weight in (np.ones(inst.n), np.sqrt(inst.c) + 1e-300, inst.b_min):
        b = inst.b_min + room * weight / float(np.sum(weight))
        b = make_feasible(b, inst.b_min, inst.b_max, inst.budget)
        out.append(bandwidth_objective(inst, b))
    return np.array(out)


def _violation(inst: BandwidthInstance, b: np.ndarray) -> float:
    if inst.n <= 20_000:
        return inst.violation(b)
    b = np.asarray(b, dtype=float)
    if b.shape != inst.w.shape or not np.all(np.isfinite(b)):
        return math.inf
    s = float(np.sum(b))
    over = s - inst.budget if s > inst.budget * (1 - 2e-15) else 0.0
    if 0 < over:
        over = inst.violation(b)  # decide exactly near the boundary
    return float(max(0.0, np.max(inst.b_min - b), np.max(b - inst.b_max), over))


def _finish(inst, b, method, status, iterations, t0, bound, tol, extras,
            exact_bound: bool = True) -> Solution:
    """Check the point (projected into the feasible set if a solver left it outside),
    re-evaluate the objective exactly and label it by :func:`certify`: ``optimal`` only with
    a bound within tol of the objective, rounding included."""
    if b is None:
        return Solution(np.full(inst.n, np.nan), math.nan, status if status != "optimal"
                        else "error", method, iterations, time.perf_counter() - t0, bound,
                        None, extras)
    from ._bandwidth_refs import project

    b = np.asarray(b, dtype=float)
    viol = _violation(inst, b)
    if viol > 0:
        extras = dict(extras, projected_from_violation=viol)
        b = project(inst, b)
        if _violation(inst, b) > 0:
            return Solution(b, math.nan, "error", method, iterations,
                            time.perf_counter() - t0, bound, None, extras)
    obj, rounding, scale = objective_with_rounding(inst.w, inst.a, inst.c, b)
    if not math.isfinite(obj):
        return Solution(b, obj, "error", method, int(iterations), time.perf_counter() - t0,
                        bound, None, dict(extras, message="the objective is not finite"))
    if bound is not None and not exact_bound:
        bound = min(bound, obj)  # an external solver's bound holds to its own tolerance only
    label, gap, gap_abs, met = certify(obj, bound, rounding, scale, tol, status, exact_bound)
    if label == "error" and status != "error":
        extras = dict(extras, message=f"certificate check failed: bound {bound!r} lies above "
                      f"the objective {obj!r} by more than its rounding {rounding:.3g}")
    return Solution(b, obj, label, method, int(iterations), time.perf_counter() - t0, bound,
                    gap, dict(extras, rounding=rounding, scale=scale), gap_abs, met)


@quiet
def solve_bandwidth(instance: BandwidthInstance, method: str = "auto", tol: float = 1e-9,
                    time_limit: float = 60.0, eps: float = 1e-12) -> Solution:
    """Solve the bandwidth problem (16) for ``instance``; ``x`` is b with shape (N,).

    ``tol`` is the relative gap below which a result is certified ``optimal`` (the gap
    covers the rounding of the objective itself; ``Solution.tolerance`` says what was met);
    ``time_limit`` (seconds) bounds ``global``, ``scip`` and ``ipopt``; ``eps`` is
    Algorithm 1's stopping tolerance ε (``alg1`` only: relative budget residual or ν interval).

    Degenerate instances get one answer from every method: N = 0 is the empty allocation,
    and a budget within 1e-12 (relative) of Σ b_min leaves only b = b_min, which is returned
    with a Lipschitz bound over the sliver of room left (``extras['budget_room']``).
    Magnitudes far from 1 (max(w, c/b_min) outside [1e-50, 1e50]) are solved rescaled.
    """
    if not isinstance(instance, BandwidthInstance):
        raise TypeError(f"instance must be a BandwidthInstance, got {type(instance).__name__}")
    if method not in BANDWIDTH_METHODS:
        raise ValueError(f"unknown bandwidth method {method!r}; known: {', '.join(BANDWIDTH_METHODS)}")
    check_options(tol, time_limit)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps < 1):
        raise ValueError(f"eps: Algorithm 1's tolerance must be in (0, 1), got {eps!r}")
    t0 = time.perf_counter()
    inst = instance
    if inst.n == 0:
        return Solution(np.zeros(0), 0.0, "optimal", method, 0, time.perf_counter() - t0, 0.0,
                        0.0, {"rounding": 0.0, "scale": 0.0}, 0.0, "relative")
    room = inst.budget - fsum(inst.b_min)
    if room <= 1e-12 * inst.budget:
        b = np.array(inst.b_min)
        lip = float(np.max(inst.c / (b * b)))  # |f_n'| <= c_n/b² where f_n decreases
        obj, err, _ = objective_with_rounding(inst.w, inst.a, inst.c, b)
        bound = obj - room * lip - err
        return _finish(inst, b, method, "optimal", 0, t0, bound, tol, {"budget_room": room})
    s = max(float(np.max(inst.w)), float(np.max(inst.c / inst.b_min)))
    if s > 0 and not (1e-50 <= s <= 1e50):
        scaled = BandwidthInstance(inst.w / s, inst.a, inst.c / s, inst.b_min, inst.b_max,
                                   inst.budget)
        sol = solve_bandwidth(scaled, method, tol, time_limit, eps)
        bound = None if sol.bound is None else sol.bound * s
        return _finish(inst, sol.x if np.all(np.isfinite(sol.x)) else None, method,
                       sol.status, sol.iterations, t0, bound, tol,
                       dict(sol.extras, rescaled_by=s), method != "scip")
    if method in ("auto", "global"):
        from . import _bandwidth_global

        b, _, bound, status, nodes, extras = _bandwidth_global.solve(instance, tol, time_limit)
        return _finish(instance, b, method, status, nodes, t0, bound, tol, extras)
    if method == "lambertw":
        from ._bandwidth_local import solve_lambertw

        b, nu, it, bound = solve_lambertw(instance, tol)
        return _finish(instance, b, method, "locally_optimal", it, t0, bound, tol, {"nu": nu})
    if method == "alg1":
        from ._bandwidth_local import solve_alg1

        b, nu, it, bound, n1 = solve_alg1(instance, eps=eps)
        return _finish(instance, b, method, "feasible", it, t0, bound, tol,
                       {"nu": nu, "tier1_iterations": n1})
    if method == "scip":
        from ._bandwidth_refs import solve_scip

        b, r = solve_scip(instance, time_limit)
        extras = {"native_status": r["native"], "scip_objective": r["incumbent"],
                  "scip_seconds": r["seconds"]}
        bound, status = r["bound"], r["status"]
        if refuted(bound, _probes(instance), max(tol, 1e-9)):
            extras["message"] = "SCIP's bound is beaten by a feasible point; not a certificate"
            bound, status = None, ("feasible" if status == "optimal" else status)
        return _finish(instance, b, method, status, r["nodes"], t0, bound, tol, extras,
                       exact_bound=False)
    if method == "ipopt":
        from ._bandwidth_refs import IPOPT_STATUS_MAP, solve_ipopt

        x, info = solve_ipopt(instance, time_limit)
        st = IPOPT_STATUS_MAP.get(int(info["status"]), "error")
        extras = {"native_status": int(info["status"]), "message": info["status_msg"],
                  "nu": float(np.atleast_1d(info["mult_g"])[0])}
        b = x if st in ("locally_optimal", "feasible", "time_limit") else None
        return _finish(instance, b, method, st, info["iterations"], t0, None, tol, extras)
    if method == "cvxpy":
        from ._bandwidth_local import lagrangian_bound
        from ._bandwidth_refs import CVXPY_STATUS_MAP, solve_cvxpy

        try:
            x, nu, it, native = solve_cvxpy(instance, tol, time_limit=time_limit)
        except FedoptError:
            raise
        st = CVXPY_STATUS_MAP.get(native, "error")
        bound = lagrangian_bound(instance, nu) if x is not None else None
        return _finish(instance, x, method, st, it, t0, bound, tol,
                       {"nu": nu, "native_status": native})
    raise AssertionError(method)
