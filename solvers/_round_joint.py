"""The per-round mode of the allocator: x minimising one round's objective (7) by local search
over the switching, BCD inside (``solve_round(..., method="joint")``), and the repair of a
switching whose bandwidth floors exceed the band. Ours; a heuristic, checked against SCIP.

Moved here from ``fedopt/allocator.py``; :func:`repair` vectorised since (the same answers).
"""

from __future__ import annotations

import numpy as np

from ..costs import RoundSystem, best_vertex, nominal_allocation
from ._round_bcd import RoundOptions, bcd, bcd_once

__all__ = ["joint", "repair"]


def repair(x: np.ndarray, b_min: np.ndarray, costs: np.ndarray, budget: float = 1.0
           ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Drop scheduled pairs until Σ b^min ≤ budget (7d) (ours).

    Keeps pairs greedily in priority order and drops whatever no longer fits: first each
    UE's cheapest scheduled pair (participation before extra modules), then the remaining
    pairs; within a tier by cost u ascending. Returns the repaired x and the dropped (k, m).
    """
    x = np.asarray(x, bool)
    if not x.any() or b_min[x].sum() <= budget * (1 - 1e-9):
        return x, []
    k, m = np.nonzero(x)
    c = costs[k, m]
    # each UE's cheapest pair (ties: the first in index order) is its first tier; pairs
    # come UE by UE (np.nonzero), so per-UE minima are segment minima
    first = np.zeros(k.size, bool)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    if np.isnan(c).any():  # NaN sorts last, as in a sort by (k, c)
        order_in_ue = np.lexsort((c, k))
        ks = k[order_in_ue]
        first[order_in_ue] = np.r_[True, ks[1:] != ks[:-1]]
    else:
        low = np.repeat(np.minimum.reduceat(c, starts), np.diff(np.r_[starts, k.size]))
        cand = np.flatnonzero(c == low)
        first[cand[np.r_[True, k[cand[1:]] != k[cand[:-1]]]]] = True
    # order: first tier, then the rest; within a tier by cost (a stable sort: ties by index)
    by_cost = np.argsort(c, kind="stable")
    order = np.r_[by_cost[first[by_cost]], by_cost[~first[by_cost]]]
    # greedy in that order: keep a pair while used + b^min fits. A pair that does not fit
    # never will (used only grows, and float addition is monotone), so the misfits leave
    # together and each run of fits is one cumulative sum (the same additions, in order)
    bv = b_min[k[order], m[order]]
    cap = budget * (1 - 1e-9)
    kept = np.zeros(k.size, bool)  # in the positions of `order`
    used = 0.0
    rest = np.arange(k.size)
    while rest.size:
        rest = rest[used + bv[rest] <= cap]
        if not rest.size:
            break
        cs = np.cumsum(np.r_[used, bv[rest]])[1:]
        over = np.flatnonzero(cs > cap)
        n_ok = int(over[0]) if over.size else rest.size
        kept[rest[:n_ok]] = True
        if n_ok:
            used = cs[n_ok - 1]
        rest = rest[n_ok + 1:]  # rest[n_ok] does not fit
    keep = np.zeros(k.size, bool)
    keep[order[kept]] = True
    out = np.zeros_like(x)
    out[k[keep], m[keep]] = True
    return out, list(zip(k[~keep].tolist(), m[~keep].tolist()))


def joint(sys_: RoundSystem, feasible: np.ndarray, n_floor: int, u_est: np.ndarray, M_max: int,
          opts: RoundOptions):
    """The per-round mode: x minimising the round's objective (7) under (7b), (7d) and the
    floor Σ x ≥ n_floor, by first-improvement local search (add, drop, swap) with BCD
    inside each evaluation, from a cost-ordered start. A heuristic, checked against SCIP."""
    K, M = feasible.shape
    bmin = np.where(feasible, sys_.b_min, np.inf)
    # start: every negative-cost pair (≤ M_max per UE), then the cheapest up to the floor
    x = best_vertex(np.where(feasible, u_est, np.inf), feasible, M_max).astype(bool)
    order = np.argsort(np.where(feasible & ~x, u_est, np.inf), axis=None)
    for idx in order:
        if x.sum() >= n_floor:
            break
        k, m = divmod(int(idx), M)
        if not feasible[k, m] or x[k, m] or x[k].sum() >= M_max:
            continue
        x[k, m] = True
    x, _ = repair(x, sys_.b_min, u_est)
    memo: dict[bytes, tuple] = {}

    def evaluate(xx, p_start):
        # screening: BCD warm-started from the incumbent's powers (no grid, no escapes)
        key = np.packbits(xx).tobytes()
        if key not in memo:
            memo[key] = bcd_once(sys_, xx, p_start, opts, start_with_bandwidth=True)
        return memo[key]

    best = bcd(sys_, x, None, opts)
    evals = 1
    improved = True
    while improved and evals < opts.max_evals:
        improved = False
        # order moves by the pairs' costs at the incumbent (nominal rule for the others)
        mean_b = float(np.mean(best[1][x])) if x.any() else 1.0 / n_floor
        p_nom, b_nom = nominal_allocation(x, best[0], best[1], sys_.b_min, sys_.P_max, mean_b)
        u = np.where(feasible, sys_.costs(p_nom, b_nom)[0], np.inf)
        on = sorted(zip(*np.nonzero(x)), key=lambda n: -u[n])  # costliest first
        off = sorted(zip(*np.nonzero(feasible & ~x)), key=lambda n: u[n])  # cheapest first
        cand = [((k, m), None) for k, m in on] if x.sum() > n_floor else []
        cand += [(None, n) for n in off]
        swaps = [(d, a) for d in on for a in off]
        cand += sorted(swaps, key=lambda da: u[da[1]] - u[da[0]])
        for drop, add in cand:
            y = x.copy()
            if drop is not None:
                y[drop] = False
            if add is not None:
                if y[add[0]].sum() >= M_max:
                    continue
                y[add] = True
            if y.sum() < n_floor or bmin[y].sum() > 1.0 - 1e-9:
                continue
            res = evaluate(y, best[0])
            evals += 1
            if res[2] < best[2] - 1e-12 * abs(best[2]):
                full = bcd(sys_, y, res[0], opts)  # polish the new incumbent
                x, best, improved = y, min(res, full, key=lambda r: r[2]), True
                break
            if evals >= opts.max_evals:
                break
    p, b, obj, iters, bw = best
    return x, p, b, obj, iters, bw
