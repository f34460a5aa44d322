"""The per-round problem (7): switching x, powers p and bandwidths b of one round, chosen together.

For one round's coefficients (a :class:`fedopt.costs.RoundSystem`, K UEs, M modules):

    min   Σ_k Σ_m ω_k [ x_{k,m} Δ_{k,m} + (1 − x_{k,m} q_{k,m}) Γ_{k,m} ]
          + ρ Σ_k Σ_m x_{k,m} ( E^cmp_{k,m} + p_k S_m / (b_{k,m} B log2(1+θ)) )     (7), (4)
    s.t.  Σ_m x_{k,m} ≤ M_max (7b);  x_{k,m} = 0 where b^min_{k,m} = inf (7c);
          Σ x b ≤ 1, b^min ≤ b ≤ 1 (7d);  P_min ≤ p ≤ P_max (7e);  Σ x ≥ floor (ours)

:func:`solve_round` dispatches by ``method=``:

* ``"auto"`` — the certified global method (``solvers/_round_global.py``): the band and the
  floor priced by (ν, μ) separate (7) by UE; each UE's subproblem is solved globally with a
  certified bound (``_round_ue.py``), the dual is maximised by cutting planes
  (``_round_dual.py``), the dual's points are repaired into feasible ones (BCD from the
  dual's powers) and a branch and bound on the UEs the relaxation splits closes the gap.
  ``optimal`` only through :func:`._solution.certify` with gap <= ``rel_gap`` (default 1e-6);
  at ``time_limit``, ``time_limit`` with the certified gap. With ``x`` given it solves the
  continuous problem of that x; ``available`` excludes UEs.
* ``"bcd"`` — Algorithm 2, step 2: block coordinate descent over (p, b) for a *given* x
  (power (21) batched over UEs, then bandwidth (16)), with basin escapes (ours). A local
  method: status ``feasible``, no bound.
* ``"joint"`` — the allocator's per-round mode (ours): x by first-improvement local search
  (add, drop, swap) under (7b)-(7d) and the floor, BCD inside. A heuristic: status
  ``feasible``, no bound.
* ``"scip"`` — the Pyomo model of (7) in :mod:`fedopt.models.round` solved by SCIP
  (``solvers/_scip_round.py``), with x free or fixed (``x=``). ``optimal`` and the dual bound
  only as SCIP reports them; its point is made exactly feasible and re-evaluated.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._checks import bool_mask, integer
from ..costs import RoundSystem
from ..errors import InstanceError
from ._round_bcd import RoundOptions, bcd
from ._round_joint import joint, repair
from ._solution import RoundPoint, Solution, certify, quiet

__all__ = ["ROUND_METHODS", "RoundPoint", "solve_round", "repair_switching"]

#: The methods of :func:`solve_round`.
ROUND_METHODS = ("auto", "bcd", "joint", "scip")

#: Drop scheduled pairs until Σ b^min ≤ budget (7d): ``repair_switching(x, b_min, costs)``.
repair_switching = repair


@quiet
def solve_round(system: RoundSystem, M_max: int, *, floor: int = 0, method: str = "bcd",
                x=None, available=None, costs=None, p0=None,
                power_method: str | None = None, bandwidth_method: str | None = None,
                tol: float = 1e-6, max_iter: int = 30, escapes: int = 10,
                grid_start: bool = True, max_evals: int = 3000,
                time_limit: float = 60.0, rel_gap: float = 1e-6) -> Solution:
    """Solve one round of (7) (see the module docstring) and return a :class:`Solution` whose
    ``x`` is a :class:`RoundPoint` (``sol.x.x``, ``sol.x.p``, ``sol.x.b``).

    Parameters
    ----------
    system : the round's coefficients, a :class:`fedopt.costs.RoundSystem`.
    M_max : modules per UE at most (7b).
    floor : participation floor Σ_{k,m} x ≥ floor (0: none).
    method : ``"auto"``, ``"bcd"``, ``"joint"`` or ``"scip"`` (:data:`ROUND_METHODS`).
    x : (K, M) the given switching; required by ``"bcd"``, fixes x for ``"auto"`` and ``"scip"``.
    available : (K,) bool, UEs that may be scheduled (``"auto"``, ``"joint"``, ``"scip"``;
        None: all).
    costs : (K, M) pair costs u (8) that order ``"joint"``'s start and moves; None: u at
        p = P_max and b = max(b^min, 1/floor).
    p0 : (K,) start powers of ``"bcd"`` (None: P_max).
    power_method, bandwidth_method : the subproblem methods inside BCD (None: their ``auto``).
    tol, max_iter : BCD stops when the objective changes by < tol (relative) or after
        max_iter sweeps.
    escapes, grid_start : BCD's basin escapes and grid start powers (ours).
    max_evals : ``"joint"``'s budget of BCD evaluations.
    time_limit, rel_gap : the time limit and the relative gap certified as optimal of
        ``"auto"`` and ``"scip"``.

    ``objective`` is :meth:`RoundSystem.objective` at the returned point. The heuristics report
    ``feasible`` (``infeasible`` when a given x breaks (7b), (7d) or the floor) and no bound;
    ``extras["bandwidth"]`` is the last bandwidth :class:`Solution` of BCD (or None). SCIP
    reports ``optimal`` / ``time_limit`` / ... with its dual bound and the gap to it;
    ``"auto"`` its certified bound, gap and ``extras`` (root bound, ν, μ, nodes).
    """
    if method not in ROUND_METHODS:
        raise ValueError(f"unknown round method {method!r}; known: {', '.join(ROUND_METHODS)}")
    if not isinstance(system, RoundSystem):
        raise TypeError(f"system: expected a RoundSystem, got {type(system).__name__}")
    M_max = integer("M_max", M_max, 1)
    floor = integer("floor", floor, 0)
    K, M = system.K, system.M
    if x is not None:
        x = bool_mask("x", x, (K, M))
        bad = np.argwhere(x & ~np.isfinite(system.b_min))
        if bad.size:
            raise InstanceError(f"x[{bad[0][0]}, {bad[0][1]}]: scheduled on a pair that misses "
                                f"the deadline (b_min = inf)")
    if available is not None:
        available = bool_mask("available", available, (K,))
    t0 = time.perf_counter()
    if method == "scip":
        return _scip(system, M_max, floor, x, available, time_limit, rel_gap)
    if method == "auto":
        return _auto(system, M_max, floor, x, available, rel_gap, time_limit, t0)
    opts = RoundOptions(power_method=power_method, bandwidth_method=bandwidth_method, tol=tol,
                        max_iter=max_iter, escapes=escapes, grid_start=grid_start,
                        max_evals=max_evals)
    if method == "bcd":
        if x is None:
            raise ValueError("method 'bcd' needs the switching x (K, M): BCD is over (p, b)")
        p, b, obj, iters, bw = bcd(system, x, p0, opts)
    else:  # joint
        feasible = np.isfinite(system.b_min)
        if available is not None:
            feasible &= available[:, None]
        if costs is None:
            u0, _, _ = system.costs(np.full(K, system.P_max),
                                    np.maximum(np.where(feasible, system.b_min, 1.0),
                                               1.0 / max(floor, 1)))
            costs = np.where(feasible, u0, 0.0)
        x, p, b, obj, iters, bw = joint(system, feasible, floor, np.asarray(costs, float), M_max,
                                        opts)
    point = RoundPoint(np.asarray(x, bool).astype(np.int8), p, b)
    return Solution(point, obj, _heuristic_status(system, point, M_max, floor), method, iters,
                    time.perf_counter() - t0, extras={"bandwidth": bw})


def _heuristic_status(system: RoundSystem, point: RoundPoint, M_max: int, floor: int) -> str:
    """``feasible`` when x meets (7b), (7d) and the floor, else ``infeasible``."""
    x = point.x > 0
    ok = (x.sum(axis=1) <= M_max).all() and int(x.sum()) >= floor and math.isfinite(
        float(np.sum(np.where(x, system.b_min, 0.0)))) and math.fsum(point.b[x]) <= 1.0
    return "feasible" if ok else "infeasible"


def _scip(system, M_max, floor, x, available, time_limit, rel_gap) -> Solution:
    from ._scip_round import solve_round_scip

    res = solve_round_scip(system, M_max, x_fixed=None if x is None else x.astype(np.int8),
                           available=available, floor=floor or None, time_limit=time_limit,
                           rel_gap=rel_gap / 10)  # room for the exact re-evaluation below
    from ._round_global import objective_rounding

    bound = res.bound if math.isfinite(res.bound) else None
    extras = {"native_status": res.native_status, "scip_objective": res.scip_objective, **res.extras}
    if not math.isfinite(res.objective):
        return Solution(RoundPoint(res.x, res.p, res.b), res.objective, res.status, "scip",
                        0, res.seconds, bound, None, extras=extras)
    # SCIP's "optimal" holds to its own tolerances on its scaled model (with Γ = 0 its scale is
    # off and it called a point 7.7e-4 worse optimal): the label is ours, from the exact
    # re-evaluated point and SCIP's bound, by the one rule
    rounding, scale = objective_rounding(system, res.x, res.p, res.b)
    status, gap, gap_abs, met = certify(res.objective, bound, rounding, scale, rel_gap,
                                        res.status, exact_bound=False)
    return Solution(RoundPoint(res.x, res.p, res.b), res.objective, status, "scip",
                    0, res.seconds, bound, gap, extras=extras, gap_abs=gap_abs, tolerance=met)


def _auto(system, M_max, floor, x, available, rel_gap, time_limit, t0) -> Solution:
    """The certified global method (``solvers/_round_global.py``), labelled by ``certify``."""
    from ._round_global import objective_rounding, solve

    xx, p, b, obj, bound, status, nodes, extras = solve(
        system, M_max, floor, available=available, x_given=x, tol=rel_gap,
        time_limit=time_limit)
    if xx is None:
        K, M = system.K, system.M
        point = RoundPoint(np.zeros((K, M), np.int8), np.full(K, system.P_max), np.zeros((K, M)))
        return Solution(point, math.nan, status, "auto", nodes, time.perf_counter() - t0,
                        None if status != "infeasible" else bound, None, extras)
    rounding, scale = objective_rounding(system, xx, p, b)
    status, gap, gap_abs, met = certify(obj, bound, rounding, scale, rel_gap, status)
    return Solution(RoundPoint(xx, p, b), obj, status, "auto", nodes,
                    time.perf_counter() - t0, bound, gap,
                    dict(extras, rounding=rounding, scale=scale), gap_abs, met)
