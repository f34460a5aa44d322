"""Certified global method for the bandwidth problem (16) (``method="global"``, ``"auto"``).

Branch and bound after Udell and Boyd's sigmoidal programming, specialised to (16):

* Lower bound of a node (a box lo <= b <= hi): the Lagrangian dual of (16) on the box,
  which equals the relaxation with every f_n replaced by its convex envelope on
  [lo_n, hi_n] (MODEL.md (16)-(20)). It is computed by :func:`solve_dual`.
* Upper bound: the relaxation's own point. It is a convex combination of two Lagrangian
  minimisers at the optimal ν, so it is feasible; only pairs whose minimiser jumps at ν
  (generically one, MODEL.md: "at most one term sits where its envelope is below f_n")
  can sit above their envelope.
* Branching: on the pair with the largest envelope gap. Its box is first cut at its
  inflection points (f_n convex / concave / convex), so the convex children have no gap
  from it; a concave child (whose envelope is the chord) is then cut at the relaxation's
  point, as in Udell and Boyd.
* Best-first search; stop when (UB − min open LB) <= tol · max(|UB|, tiny). The result is
  ``optimal`` only then; otherwise ``time_limit`` (or ``feasible`` at the node cap) with
  the certified bound.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np

from ._bandwidth_core import Box, inflections
from ._bandwidth_dual import solve_dual
from ._solution import TINY


def solve(inst, tol: float = 1e-9, time_limit: float = 60.0, max_nodes: int = 100_000):
    """Return (b, objective, bound, status, nodes, extras)."""
    t0 = time.perf_counter()
    w, a, c = inst.w, inst.a, inst.c
    lo0, hi0 = np.array(inst.b_min), np.array(inst.b_max)
    budget = inst.budget
    b1, b2 = inflections(w, a, c, lo0, hi0)

    def node_box(over: dict) -> Box:
        if not over:
            return Box(w, a, c, lo0, hi0, b1, b2)
        lo, hi = lo0.copy(), hi0.copy()
        for j, (l, h) in over.items():
            lo[j], hi[j] = l, h
        return Box(w, a, c, lo, hi, b1, b2)

    ub, best_b = math.inf, None
    leaves: list[float] = []
    heap: list = [(-math.inf, 0, {})]
    counter = 1
    nodes = 0
    root_gap = None
    root_nu = None
    status = "optimal"
    while heap:
        key, _, over = heapq.heappop(heap)
        abs_tol = tol * max(abs(ub), TINY) if math.isfinite(ub) else 0.0
        if key >= ub - abs_tol:
            leaves.append(key)
            continue
        if nodes >= 1 and (nodes >= max_nodes or time.perf_counter() - t0 > time_limit):
            heapq.heappush(heap, (key, counter, over))
            status = "time_limit" if nodes < max_nodes else "feasible"
            break
        nodes += 1
        box = node_box(over)
        if np.sum(box.lo) > budget * (1 + 1e-15):
            continue  # an empty child (cannot arise from the cuts, kept as a guard)
        d = solve_dual(box, budget)
        lb = max(d.bound, key)
        if nodes == 1:
            root_nu = d.nu
            root_gap = (d.objective - d.bound) / max(abs(d.objective), TINY)
        if d.objective < ub:
            ub, best_b = d.objective, d.b
        abs_tol = tol * max(abs(ub), TINY)
        if lb >= ub - abs_tol or d.objective - lb <= abs_tol:
            leaves.append(min(lb, ub))
            continue
        j = int(np.argmax(d.env_gap))
        if d.env_gap[j] <= 0:
            leaves.append(lb)  # no pair above its envelope: numerically closed
            continue
        for child in _cuts(box.lo[j], box.hi[j], b1[j], b2[j], d.b[j]):
            o = dict(over)
            o[j] = child
            heapq.heappush(heap, (lb, counter, o))
            counter += 1
    open_keys = [k for k, _, _ in heap]
    bound = min(leaves + open_keys) if (leaves or open_keys) else ub
    bound = min(bound, ub)
    if status == "optimal" and (ub - bound) > tol * max(abs(ub), TINY):
        status = "feasible"
    extras = {"nu": root_nu, "root_gap": root_gap, "nodes": nodes,
              "dual_gap_before_branching": bool(root_gap is not None and root_gap > tol)}
    return best_b, ub, bound, status, nodes, extras


def _cuts(lo: float, hi: float, b1: float, b2: float, x: float) -> list[tuple[float, float]]:
    """Children of pair j's interval [lo, hi]: cut at the inflection points inside it, else
    (a concave or mixed piece) at the relaxation's point x, or the midpoint near the ends."""
    width = hi - lo
    pts = [p for p in (b1, b2) if lo + 1e-12 * width < p < hi - 1e-12 * width]
    if not pts:
        if not (lo + 1e-3 * width < x < hi - 1e-3 * width):
            x = 0.5 * (lo + hi)
        pts = [x]
    edges = [lo, *pts, hi]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
