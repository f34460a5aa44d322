"""Transmit power (21)-(22): ``solve_power`` for one UE and ``solve_power_batch`` for all K
UEs at once, dispatching by ``method=`` to one private worker per method.

Methods
-------
``global`` (what ``auto`` runs)
    Every stationary point of (22) on [p_min, p_max], bracketed on a certified grid in
    log p and refined by safeguarded Newton, compared with the endpoints
    (:mod:`._power_global` states why no stationary point can be missed). Vectorised over
    UEs; ``optimal`` with its own certified bound.
``ipopt``
    The paper's interior point, through cyipopt (analytic gradient and Hessian).
``bounded``
    ``scipy.optimize.minimize_scalar(method="bounded")``, as a user might try.
``scip``
    The Pyomo model of (21) (``fedopt.models.power_model``) solved by SCIP.
``max``
    p = P_max, the paper's maximum-power baseline.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..instances import PowerBatch, PowerInstance
from ._solution import EPS, Solution, certify, check_options, quiet, refuted

__all__ = ["solve_power", "solve_power_batch", "global_powers", "global_powers_memo",
           "POWER_METHODS"]

POWER_METHODS = ("auto", "global", "ipopt", "bounded", "scip", "max")


def _terms(inst: PowerInstance, p: float):
    """Objective (21), its derivative (22) and second derivative at p."""
    g = 2.0 / inst.alpha
    W, A, k = inst.W, inst.A, inst.kappa
    u = A / p + k * p**-g
    q = np.exp(-u)
    du = -A / p**2 - g * k * p ** (-g - 1)  # du/dp
    d2u = 2 * A / p**3 + g * (g + 1) * k * p ** (-g - 2)
    F = float(np.sum(W * -np.expm1(-u)) + inst.C * p)
    dF = float(np.sum(W * q * du) + inst.C)  # d(1 - e^{-u})/dp = e^{-u} u'
    d2F = float(np.sum(W * q * (d2u - du * du)))
    return F, dF, d2F


def power_rounding(W, A, kappa, alpha, C, p) -> tuple[np.ndarray, np.ndarray]:
    """Per UE: (a bound on the rounding error of the float objective (21), its size).

    Every term of (21) is >= 0, so nothing cancels: u = A/p + κ p^{−2/α} carries about
    3ε relative, and 1 − q = −expm1(−u) passes it on as u e^{−u}·3ε. Arrays W, A (K, M) or
    (M,); kappa, C, p (K,) or scalars."""
    W, A = np.atleast_2d(W), np.atleast_2d(A)
    p = np.atleast_1d(np.asarray(p, dtype=float))[:, None]
    kappa = np.atleast_1d(np.asarray(kappa, dtype=float))[:, None]
    with np.errstate(over="ignore", invalid="ignore"):  # u = inf is q = 0
        u = A / p + kappa * p ** (-2.0 / alpha)
        ue = np.where(np.isinf(u), 0.0, u * np.exp(-u))
    omq = -np.expm1(-u)
    Cp = np.atleast_1d(np.asarray(C, dtype=float)) * p[:, 0]
    err = 2.0 * EPS * (np.sum(W * (3.0 * ue + 2.0 * omq), axis=1) + 2.0 * Cp)
    return err, np.sum(W * omq, axis=1) + Cp


def _check_instance(instance, cls) -> None:
    if not isinstance(instance, cls):
        raise TypeError(f"instance must be a {cls.__name__}, got {type(instance).__name__}")


def _finish(inst, p, method, status, iterations, t0, bound, tol, extras,
            exact_bound: bool = True) -> Solution:
    if p is None or not math.isfinite(p):
        return Solution(math.nan, math.nan, "error" if status == "optimal" else status, method,
                        iterations, time.perf_counter() - t0, bound, None, extras)
    p = float(p)
    if inst.violation(p) > 0:
        extras = dict(extras, projected_from_violation=inst.violation(p))
        p = min(max(p, inst.p_min), inst.p_max)
    obj = inst.objective(p)
    err, scale = power_rounding(inst.W, inst.A, inst.kappa, inst.alpha, inst.C, p)
    rounding, scale = float(err[0]), float(scale[0])
    if bound is not None and not exact_bound:
        bound = min(bound, obj)  # an external solver's bound holds to its own tolerance only
    elif bound is not None:
        bound -= rounding  # our bounds are float values of (21) at certified points
    status, gap, gap_abs, met = certify(obj, bound, rounding, scale, tol, status, exact_bound)
    return Solution(p, obj, status, method, int(iterations), time.perf_counter() - t0, bound,
                    gap, dict(extras, rounding=rounding, scale=scale), gap_abs, met)


@quiet
def solve_power(instance: PowerInstance, method: str = "auto", tol: float = 1e-12,
                time_limit: float = 60.0) -> Solution:
    """Solve one UE's power problem (21); ``x`` is p (a float)."""
    _check_instance(instance, PowerInstance)
    if method not in POWER_METHODS:
        raise ValueError(f"unknown power method {method!r}; known: {', '.join(POWER_METHODS)}")
    check_options(tol, time_limit)
    t0 = time.perf_counter()
    inst = instance
    if method in ("auto", "global"):
        from ._power_global import solve_batch

        b = PowerBatch.stack([inst]) if inst.W.size else None
        if b is None:  # no module: minimise C p
            return _finish(inst, inst.p_min, method, "optimal", 0, t0, inst.C * inst.p_min, tol,
                           {"stationary_points": []})
        p, obj, bound, stat, levels, cells = solve_batch(b.W, b.A, b.kappa, b.C, b.alpha,
                                                         b.p_min, b.p_max)
        return _finish(inst, p[0], method, "optimal", levels, t0, float(bound[0]), tol,
                       {"stationary_points": sorted(stat[1].tolist()), "cells": cells})
    if method == "max":
        return _finish(inst, inst.p_max, method, "feasible", 0, t0, None, tol, {})
    if method == "bounded":
        from scipy.optimize import minimize_scalar

        r = minimize_scalar(lambda p: _terms(inst, p)[0], bounds=(inst.p_min, inst.p_max),
                            method="bounded", options={"xatol": 1e-12 * inst.p_max})
        st = "locally_optimal" if r.success else "feasible"
        return _finish(inst, float(r.x), method, st, int(r.nfev), t0, None, tol,
                       {"native_status": int(r.status), "message": str(r.message)})
    if method == "ipopt":
        import cyipopt

        from ._bandwidth_refs import IPOPT_STATUS_MAP

        class _P:
            def objective(self, x):
                return _terms(inst, x[0])[0]

            def gradient(self, x):
                return np.array([_terms(inst, x[0])[1]])

            def constraints(self, x):
                return np.zeros(0)

            def jacobian(self, x):
                return np.zeros(0)

            def hessianstructure(self):
                return np.array([0]), np.array([0])

            def hessian(self, x, lagrange, obj_factor):
                return np.array([obj_factor * _terms(inst, x[0])[2]])

        prob = cyipopt.Problem(n=1, m=0, problem_obj=_P(), lb=[inst.p_min], ub=[inst.p_max])
        prob.add_option("print_level", 0)
        prob.add_option("sb", "yes")
        prob.add_option("tol", 1e-12)
        prob.add_option("max_wall_time", float(time_limit))
        x0 = 0.5 * (inst.p_min + inst.p_max)
        x, info = prob.solve(np.array([x0]))
        st = IPOPT_STATUS_MAP.get(int(info["status"]), "error")
        p = float(x[0]) if st in ("locally_optimal", "feasible", "time_limit") else None
        return _finish(inst, p, method, st, 0, t0, None, tol,
                       {"native_status": int(info["status"]), "message": info["status_msg"]})
    if method == "scip":
        from fedopt.models import power_model

        from . import _scip

        m = power_model(inst)
        r = _scip.solve_model(m, [m.p], time_limit, 1e-10)
        p = None if r["values"] is None else r["values"][0]
        extras = {"native_status": r["native"], "scip_objective": r["incumbent"]}
        bound, status = r["bound"], r["status"]
        probes = np.array([inst.objective(q) for q in np.geomspace(inst.p_min, inst.p_max, 129)])
        if refuted(bound, probes, max(tol, 1e-9)):
            extras["message"] = "SCIP's bound is beaten by a feasible point; not a certificate"
            bound, status = None, ("feasible" if status == "optimal" else status)
        return _finish(inst, p, method, status, r["nodes"], t0, bound, tol, extras,
                       exact_bound=False)
    raise AssertionError(method)


def global_powers(batch: PowerBatch, maxima: bool = True):
    """The certified global method on a batch: (p (K,) in [p_min, p_max], per-UE bound,
    stationary points, levels, cells), as :func:`solve_power_batch` uses them. ``maxima=False``
    skips locating the interior local maxima (reported only, never a candidate), for callers
    that need p alone (BCD); p is the same."""
    from ._power_global import solve_batch

    p, _, bound, stat, levels, cells = solve_batch(batch.W, batch.A, batch.kappa, batch.C,
                                                   batch.alpha, batch.p_min, batch.p_max,
                                                   maxima=maxima)
    return np.clip(p, batch.p_min, batch.p_max), bound, stat, levels, cells


def global_powers_memo(batch: PowerBatch, memo: dict) -> np.ndarray:
    """p of :func:`global_powers` for a batch of the same UEs as the caller's earlier ones
    (same κ, α and power range: BCD's sweeps), re-solving only the UEs whose row (W, A, C)
    changed; ``memo`` is the caller's dict, kept between calls.

    The global method solves each UE on its own (its cells, roots and candidates are its
    own), so an unchanged row has the same p, unless the batch's cell cap binds: each UE's
    cell count is kept and the cap is checked for both the partial solve and the full one it
    stands for; if either could bind, the whole batch is solved again."""
    from ._power_global import cell_cap, solve_batch

    W, A, C, kappa = batch.W, batch.A, batch.C, batch.kappa
    K = W.shape[0]
    rows = memo.get("rows")
    if rows is not None and rows[0].shape == W.shape and np.array_equal(rows[3], kappa) \
            and memo["range"] == (batch.alpha, batch.p_min, batch.p_max):
        same = (W == rows[0]).all(axis=1) & (A == rows[1]).all(axis=1) & (C == rows[2])
    else:
        same = np.zeros(K, bool)
    live = W.sum(axis=1) > 0
    todo = np.flatnonzero(~same)
    p = memo["p"].copy() if same.any() else np.empty(K)
    cells = memo["cells"].copy() if same.any() else np.zeros(K, np.int64)
    if todo.size:
        sub_cells = np.zeros(todo.size, np.int64)
        p_sub, _, _, _, _, n_sub = solve_batch(W[todo], A[todo], kappa[todo], C[todo],
                                               batch.alpha, batch.p_min, batch.p_max,
                                               maxima=False, cells=sub_cells)
        if n_sub > cell_cap(int(live[todo].sum())) or (
                same.any() and n_sub + int(cells[same].sum()) > cell_cap(int(live.sum()))):
            memo.clear()  # the cap may bind: no shortcut
            return global_powers(batch, maxima=False)[0]
        p[todo] = np.clip(p_sub, batch.p_min, batch.p_max)
        cells[todo] = sub_cells
    memo.update(rows=(W, A, C, kappa), range=(batch.alpha, batch.p_min, batch.p_max), p=p,
                cells=cells)
    return p.copy()


@quiet
def solve_power_batch(batch: PowerBatch, method: str = "auto", tol: float = 1e-12,
                      time_limit: float = 60.0) -> Solution:
    """Solve (21) for all K UEs of ``batch``; ``x`` is p with shape (K,).

    ``objective`` is the sum over UEs, ``bound`` the sum of per-UE bounds (when every UE has
    one). UEs without any scheduled module (all W = 0) minimise C·p, so they get p_min.
    ``extras['objectives']`` holds the per-UE objectives, ``extras['statuses']`` (for the
    per-UE methods) the per-UE statuses and, for ``global``, ``extras['stationary_points']``
    a pair of arrays (UE index, p) of every interior stationary point of (22).
    """
    _check_instance(batch, PowerBatch)
    if method not in POWER_METHODS:
        raise ValueError(f"unknown power method {method!r}; known: {', '.join(POWER_METHODS)}")
    check_options(tol, time_limit)
    t0 = time.perf_counter()
    K = batch.k
    if method in ("auto", "global"):
        p, bound, stat, levels, cells = global_powers(batch)
        per = batch.objective(p)
        total = math.fsum(per.tolist())
        err, scale = power_rounding(batch.W, batch.A, batch.kappa, batch.alpha, batch.C, p)
        bound = np.minimum(bound, per) - err  # certified per UE, rounding subtracted
        bnd = math.fsum(bound.tolist())
        rounding = math.fsum(err.tolist())
        status, gap, gap_abs, met = certify(total, bnd, rounding, math.fsum(scale.tolist()),
                                            tol, "optimal")
        return Solution(p, total, status, method, levels, time.perf_counter() - t0, bnd, gap,
                        {"objectives": per, "bounds": bound, "cells": cells,
                         "stationary_points": stat, "rounding": rounding}, gap_abs, met)
    if method == "max":
        p = np.full(K, batch.p_max)
        per = batch.objective(p)
        return Solution(p, math.fsum(per.tolist()), "feasible", method, 0,
                        time.perf_counter() - t0, None, None, {"objectives": per})
    p = np.full(K, batch.p_min)
    statuses = []
    bounds = []
    iters = 0
    for k in range(K):
        inst = batch.instance(k)
        if inst.W.size == 0:
            statuses.append("optimal")
            bounds.append(inst.C * inst.p_min)
            continue
        s = solve_power(inst, method, tol, time_limit)
        p[k] = s.x if math.isfinite(s.x) else batch.p_max
        statuses.append(s.status)
        bounds.append(s.bound)
        iters += s.iterations
    per = batch.objective(p)
    total = math.fsum(per.tolist())
    bnd = None if any(b is None for b in bounds) else math.fsum(bounds)
    err, scale = power_rounding(batch.W, batch.A, batch.kappa, batch.alpha, batch.C, p)
    rounding = math.fsum(err.tolist())
    order = ("error", "infeasible", "time_limit", "feasible", "locally_optimal", "optimal")
    worst = min(statuses, key=order.index) if statuses else "optimal"
    worst, gap, gap_abs, met = certify(total, bnd, rounding, math.fsum(scale.tolist()), tol,
                                       worst, exact_bound=method != "scip")
    return Solution(p, total, worst, method, iters, time.perf_counter() - t0, bnd, gap,
                    {"objectives": per, "statuses": statuses, "rounding": rounding},
                    gap_abs, met)
