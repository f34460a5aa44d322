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
* Symmetry: identical pairs (same w, a, c and box) are interchangeable, so some optimum
  has them sorted, b_{g,1} <= b_{g,2} <= ... within each group g. Branching copy i of a
  group into [l, h] therefore also caps the copies before it at h and lifts the copies
  after it to l. With the relaxation point's one-at-a-time fill (:func:`fill`) the two
  outer children of a jumping copy are then convex in that group, and k identical pairs
  take a handful of nodes instead of 3^k.
* Certificates: every node bound is certified per pair (a tangent bound on each convex
  piece, so a wrong root can only lower it) and net of rounding; a node whose bound lies
  above its own feasible point by more than the rounding is an oracle failure and ends the
  search with status ``error``, never ``optimal``.
* Best-first search; stop when (UB − min open LB) <= tol · max(|UB|, tiny), or when the
  gap left is at the rounding level of the objective (its terms may cancel; the caller's
  :func:`certify` then says which tolerance was met). Otherwise ``time_limit`` (or
  ``feasible`` at the node cap) with the certified bound.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np

from ._bandwidth_core import Box, fsum, inflections, make_feasible, objective_with_rounding
from ._bandwidth_dual import solve_dual
from ._solution import TINY


def solve(inst, tol: float = 1e-9, time_limit: float = 60.0, max_nodes: int = 100_000):
    """Return (b, objective, bound, status, nodes, extras).

    Nearly identical nonconvex pairs (within ``CLUSTER_RTOL`` relative) are first solved as
    exact copies of one common minorant (:func:`_symmetric_relaxation`): its certified
    bound is a bound for (16), and its point, moved into the true boxes, is within about
    the pairs' spread of it — within tol when they differ by less than about 0.1·tol.
    Otherwise the B&B runs on the pairs as they are, from that point, and the minorant's
    bound stays a floor under its own.
    """
    t0 = time.perf_counter()
    w, a, c = inst.w, inst.a, inst.c
    lo0, hi0 = np.array(inst.b_min), np.array(inst.b_max)
    floor, incumbent = -math.inf, None
    b1, b2 = inflections(w, a, c, lo0, hi0)
    root = _bnb(w, a, c, lo0, hi0, inst.budget, tol, time_limit, 1, t0, (b1, b2))
    if root[3] in ("optimal", "error"):
        return root  # the root closed (the common case): no branching, no clusters needed
    sym = _symmetric_relaxation(w, a, c, lo0, hi0, b1, b2)
    if sym is not None:
        ws, as_, cs, los, his = sym
        # a quarter of the time: exact copies close in a few nodes or not at all
        bs, _, bound_s, st, nodes_s, _ = _bnb(ws, as_, cs, los, his, inst.budget, tol,
                                              0.25 * time_limit, max_nodes, t0)
        if bs is not None and st != "error":
            floor = bound_s
            b = make_feasible(np.clip(bs, lo0, hi0), lo0, hi0, inst.budget)
            obj, err, _ = objective_with_rounding(w, a, c, b)
            incumbent = (b, obj, err)
            if st == "optimal" and obj - floor <= _close_tol(tol, obj, err):
                return b, obj, min(floor, obj - err), "optimal", nodes_s, {
                    "nu": None, "root_gap": None, "nodes": nodes_s, "symmetric": True,
                    "dual_gap_before_branching": True}
    out = _bnb(w, a, c, lo0, hi0, inst.budget, tol, time_limit, max_nodes, t0, (b1, b2),
               incumbent, floor)
    b, ub, bound, status, nodes, extras = out
    if floor > bound:
        extras["symmetric_floor"] = floor
        bound = min(floor, ub)
        if status in ("time_limit", "feasible") and ub - bound <= _close_tol(tol, ub, 0.0):
            status = "optimal"  # the floor closes what the search left open
    return b, ub, bound, status, nodes, extras


#: Nonconvex pairs whose parameters agree to this relative tolerance form one cluster.
CLUSTER_RTOL = 1e-4


def _symmetric_relaxation(w, a, c, lo, hi, b1, b2):
    """Clusters of nearly identical nonconvex pairs (every parameter within
    :data:`CLUSTER_RTOL` relative, not all exactly equal), each replaced by one common
    minorant of the same form: w' = max w, a' = min a, c' = min c on the union box
    [min lo, max hi]. Then −w' e^{−a'b} + c'/b <= f_n(b) for every member and every b, so the
    relaxed problem's optimum is <= that of (16). Returns the relaxed arrays, or None when no
    cluster has inexact copies."""
    nc = np.flatnonzero(np.isfinite(b1) | np.isfinite(b2))
    if nc.size < 2:
        return None
    rtol = CLUSTER_RTOL
    cols = [w[nc], a[nc], c[nc], lo[nc], hi[nc]]
    # sort by w; a run of neighbours that agree in every parameter is one cluster
    order = np.argsort(cols[0], kind="stable")
    keys = np.stack([col[order] for col in cols], axis=1)
    close = np.all(np.abs(np.diff(keys, axis=0)) <= rtol * np.abs(keys[1:]), axis=1)
    if not close.any():
        return None
    ws, as_, cs, los, his = w.copy(), a.copy(), c.copy(), lo.copy(), hi.copy()
    inexact = False
    start = 0
    for i in range(1, order.size + 1):
        if i < order.size and close[i - 1]:
            continue
        if i - start > 1:
            m = nc[order[start:i]]
            if not all(np.all(col[m] == col[m[0]]) for col in (w, a, c, lo, hi)):
                inexact = True
                ws[m], as_[m], cs[m] = w[m].max(), a[m].min(), c[m].min()
                los[m], his[m] = lo[m].min(), hi[m].max()
        start = i
    return (ws, as_, cs, los, his) if inexact else None


def _bnb(w, a, c, lo0, hi0, budget: float, tol: float, time_limit: float, max_nodes: int,
         t0: float, infl: tuple | None = None, incumbent: tuple | None = None,
         floor: float = -math.inf):
    """The branch and bound on arrays; returns what :func:`solve` returns. ``incumbent``
    (b, objective, rounding) is a feasible point to start from; ``floor`` a certified bound
    known from elsewhere: the search stops once the incumbent is within tol of it."""
    b1, b2 = infl if infl is not None else inflections(w, a, c, lo0, hi0)
    groups: dict[int, tuple[np.ndarray, int]] | None = None  # built at the first branching

    def node_box(ov) -> Box:
        if ov is None:
            return Box(w, a, c, lo0, hi0, b1, b2)
        idx, lo_v, hi_v = ov
        lo, hi = lo0.copy(), hi0.copy()
        lo[idx], hi[idx] = lo_v, hi_v
        return Box(w, a, c, lo, hi, b1, b2)

    ub, best_b, ub_err = math.inf, None, 0.0
    if incumbent is not None:
        best_b, ub, ub_err = incumbent
    leaves: list[float] = []
    heap: list = [(-math.inf, 0, None, 0.0)]
    counter = 1
    nodes = 0
    root_gap = root_nu = None
    status = "optimal"
    message = None
    while heap:
        key, _, ov, slack = heapq.heappop(heap)
        if key >= ub - _close_tol(tol, ub, slack + ub_err):
            leaves.append(key)
            continue
        if nodes >= 1 and (nodes >= max_nodes or time.perf_counter() - t0 > time_limit):
            heapq.heappush(heap, (key, counter, ov, slack))
            status = "time_limit" if nodes < max_nodes else "feasible"
            break
        nodes += 1
        box = node_box(ov)
        d = solve_dual(box, budget)
        err = d.obj_rounding
        if d.bound > d.objective + err + d.rounding:
            # weak duality fails: the oracle is wrong somewhere; never certify from here
            status = "error"
            message = (f"certificate check failed at node {nodes}: bound {d.bound!r} exceeds "
                       f"the node's feasible objective {d.objective!r}")
            break
        lb = max(d.bound, key)
        if nodes == 1:
            root_nu = d.nu
            root_gap = (d.objective - d.bound) / max(abs(d.objective), TINY)
        if d.objective < ub:
            ub, best_b, ub_err = d.objective, d.b, err
            if ub - floor <= _close_tol(tol, ub, ub_err):
                leaves.append(min(lb, ub))  # this node's region stays covered by the bound
                break  # the floor certifies the incumbent (solve() reports it)
        if lb >= ub - _close_tol(tol, ub, d.rounding + ub_err):
            leaves.append(min(lb, ub))
            continue
        j = int(np.argmax(d.env_gap))
        if d.env_gap[j] <= 0:
            leaves.append(lb)  # no pair above its envelope: numerically closed
            continue
        if groups is None:
            groups = _groups(w, a, c, lo0, hi0, b1, b2)
        for child in _cuts(box.lo[j], box.hi[j], b1[j], b2[j], d.b[j]):
            ov_child = _child(box, lo0, hi0, budget, j, child, groups.get(j))
            if ov_child is not None:
                heapq.heappush(heap, (lb, counter, ov_child, d.rounding))
                counter += 1
    open_keys = [k for k, _, _, _ in heap]
    bound = min(leaves + open_keys) if (leaves or open_keys) else ub
    bound = min(bound, ub - ub_err)
    if status == "error":
        bound = -math.inf  # nothing this search computed is a certificate any more
    extras = {"nu": root_nu, "root_gap": root_gap, "nodes": nodes,
              "dual_gap_before_branching": bool(root_gap is not None and root_gap > tol)}
    if message:
        extras["message"] = message
    return best_b, ub, bound, status, nodes, extras


def _close_tol(tol: float, ub: float, rounding: float) -> float:
    """A node closes when its bound is within tol·|UB| of UB, or within a few times the
    rounding of the two values (closer than that, branching cannot tell them apart)."""
    if not math.isfinite(ub):
        return 0.0
    return max(tol * max(abs(ub), TINY), 4.0 * rounding)


def _groups(w, a, c, lo, hi, b1, b2) -> dict[int, tuple[np.ndarray, int]]:
    """Groups of identical nonconvex pairs (same w, a, c, lo, hi): pair -> (the group's pairs
    in increasing index, its position there). Only nonconvex pairs are ever branched on."""
    nc = np.flatnonzero(np.isfinite(b1) | np.isfinite(b2))
    if nc.size < 2:
        return {}
    rows = np.stack([w[nc], a[nc], c[nc], lo[nc], hi[nc]], axis=1)
    _, inv, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    out: dict[int, tuple[np.ndarray, int]] = {}
    for g in np.flatnonzero(counts > 1):
        members = nc[inv == g]  # increasing index
        for pos, j in enumerate(members.tolist()):
            out[j] = (members, pos)
    return out


def _child(box: Box, lo0, hi0, budget: float, j: int, cut: tuple[float, float], group):
    """Override arrays (idx, lo, hi) of the child that restricts pair j to ``cut``, with the
    group ordering propagated; ``None`` when the child is empty or over the budget."""
    lo, hi = box.lo.copy(), box.hi.copy()
    lo[j], hi[j] = cut
    if group is not None:
        members, pos = group
        before, after = members[:pos], members[pos + 1:]
        hi[before] = np.minimum(hi[before], cut[1])
        lo[after] = np.maximum(lo[after], cut[0])
        if np.any(lo[members] > hi[members]):
            return None
    if fsum(lo) > budget:
        return None
    idx = np.flatnonzero((lo != lo0) | (hi != hi0))
    return idx, lo[idx], hi[idx]


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
