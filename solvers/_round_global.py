"""Certified global method for the per-round problem (7) (``solve_round(..., method="auto")``,
issue 16): Lagrangian decomposition by UE, primal repair and branch and bound.

* **Bound.** The band (7d) priced by ν and the floor by μ separate (7) by UE; each UE's
  subproblem (a subset of <= M_max modules, one power, one bandwidth per module) is solved
  globally with a certified lower bound (:mod:`._round_ue`), and the dual D(ν, μ) is
  maximised by cutting planes (:mod:`._round_dual`). Any (ν, μ) >= 0 gives a valid bound.
* **Primal.** Each cut's per-UE minimisers form a switching x; every x that meets (7b),
  (7d) and the floor is completed by Algorithm 2's BCD over (p, b) started from the dual's
  powers (which, with the band tight, already satisfy the Lagrangian optimality of that x),
  and the dual's own point is kept when it is feasible. The best is the incumbent.
* **Branch and bound.** Where the bound is not within tol of the incumbent, the relaxation
  splits some UE between two minimisers (two subsets, or two powers): the cuts that carry
  LP weight disagree on it. The node is branched on that UE: its subset fixed to the one
  the heavier cut takes vs. the others, or its power range cut between the two powers.
  Best first; a node closes when its certified bound is within tol of the incumbent.
* **Certificate.** The bound is the least certified bound over the open and closed leaves,
  net of rounding; the point's objective is re-evaluated exactly (``RoundSystem.objective``)
  and labelled by :func:`._solution.certify`. At the time limit the status is
  ``time_limit`` with the gap reached.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np
from scipy.optimize import brentq

from ..costs import RoundSystem
from ._round_bcd import RoundOptions, bcd, bcd_once
from ._round_dual import DualPoint, Restriction, dual_value, maximise_dual
from ._round_ue import UEData, ue_search
from ._scip_round import exact_feasible
from ._solution import EPS, TINY

__all__ = ["solve"]


def objective_rounding(sys_: RoundSystem, x, p, b) -> tuple[float, float]:
    """(a bound on the rounding error of :meth:`RoundSystem.objective` at the point, the size
    of its terms): every term is evaluated to a few ulps and the sum is exact (fsum)."""
    x = np.asarray(x) > 0
    bb = np.where(x, b, 1.0)
    q = np.where(x, sys_.q(p, bb), 0.0)
    u = sys_.a[:, None] * bb / np.asarray(p)[:, None] + sys_.kappa[:, None] * np.asarray(p)[:, None] ** (-2.0 / sys_.alpha)
    w = sys_.omega[:, None]
    size = (w * (np.where(x, sys_.Delta, 0.0) + sys_.Gamma * (1.0 + q * (1.0 + np.where(x, u, 0.0))))
            + sys_.rho * np.where(x, sys_.E_cmp + sys_.E_com(p, bb), 0.0))
    total = math.fsum(size.ravel().tolist())
    return 8.0 * EPS * total, total


class _Search:
    def __init__(self, sys_: RoundSystem, M_max: int, floor: int, available, x_given, tol: float,
                 time_limit: float, t0: float):
        self.sys, self.M_max, self.floor, self.tol = sys_, M_max, floor, tol
        self.t0, self.time_limit = t0, time_limit
        self.data = UEData.from_system(sys_, M_max)
        self.const = math.fsum((sys_.omega[:, None] * sys_.Gamma).ravel().tolist())
        self.root = Restriction.root(self.data, available)
        self.x_given = None if x_given is None else np.asarray(x_given, bool)
        if x_given is not None:  # only the given subset (or none) for each UE
            allowed = np.zeros_like(self.root.allowed)
            code = {tuple(r): i for i, r in enumerate(self.data.subs.tolist())}
            for k, row in enumerate(np.asarray(x_given, bool).tolist()):
                if tuple(row) in code:  # a row over M_max breaks (7b): no subset allowed
                    allowed[k, code[tuple(row)]] = True
            self.root = Restriction(allowed, self.root.s_lo, self.root.s_hi)
        self.best: tuple | None = None  # (objective, x, p, b)
        self.seen: set[bytes] = set()
        self.evals = 0
        self.nu_hint = 0.0

    # -- primal -----------------------------------------------------------------------------
    def consider(self, x: np.ndarray, p: np.ndarray, b: np.ndarray | None) -> None:
        """Complete x by BCD from the powers p (and keep (p, b) itself when feasible)."""
        sys_ = self.sys
        x = np.asarray(x, bool)
        if (x.sum(axis=1) > self.M_max).any() or int(x.sum()) < self.floor:
            return
        if not np.isfinite(sys_.b_min[x]).all() or math.fsum(sys_.b_min[x].tolist()) > 1.0:
            return
        if b is not None and math.fsum(b[x].tolist()) <= 1.0:
            self._offer(x, p, b)
        key = np.packbits(x).tobytes() + np.round(np.log(p[x.any(axis=1)]), 3).tobytes()
        if key in self.seen:
            return
        self.seen.add(key)
        self.evals += 1
        pp, bb, _, _, _ = bcd(sys_, x, p, RoundOptions(grid_start=False))
        self._offer(x, pp, bb)

    def _offer(self, x, p, b) -> None:
        xb, p, b = exact_feasible(self.sys, x, p, b)
        p = np.where(xb.any(axis=1), p, self.sys.P_max)
        obj = self.sys.objective(xb, p, b)
        if math.isfinite(obj) and (self.best is None or obj < self.best[0]):
            self.best = (obj, xb.astype(np.int8), p, np.where(xb, b, 0.0))

    def polish(self) -> None:
        """Sharpen the incumbent for its own x: ν with Σ_k b_k(ν) = 1 by Brent's method on the
        per-UE minimisers (fixed subsets, powers to ~1e-12 in ln p), then the bandwidth (16)
        solved globally at those powers, then BCD; the best point is kept."""
        if self.best is None:
            return
        x = self.best[1] > 0
        if not x.any():
            return
        code = {tuple(r): i for i, r in enumerate(self.data.subs.tolist())}
        allowed = np.zeros((self.data.K, self.data.subs.shape[0]), bool)
        allowed[np.arange(self.data.K), [code[tuple(r)] for r in x.tolist()]] = True
        lo, hi = self.root.s_lo, self.root.s_hi

        def at(nu):
            return ue_search(self.data, nu, 0.0, allowed, lo, hi, levels=7)

        def excess(nu):
            return math.fsum(at(nu).b.ravel().tolist()) - 1.0

        nu = 0.0
        if excess(0.0) > 0:
            # bracket ν around the dual's, widening geometrically
            bot, top = 0.0, max(self.nu_hint, 1e-12) * 1.01
            while excess(top) > 0 and top < 1e12:
                bot, top = top, top * 4.0
            if bot == 0.0 and excess(top / 1.02) > 0:
                bot = top / 1.02
            nu = brentq(excess, bot, top, xtol=1e-15, rtol=1e-10, maxiter=100)
            nu = nu if excess(nu) <= 0 else top
        r = at(nu)
        pp, bb, _, _, _ = bcd_once(self.sys, x, r.p, RoundOptions(), start_with_bandwidth=True,
                                   sweeps=0)
        self._offer(x, pp, bb)
        pp, bb, _, _, _ = bcd(self.sys, x, pp, RoundOptions(grid_start=False, tol=1e-13,
                                                              max_iter=60))
        self._offer(x, pp, bb)

    def _x_of(self, pt: DualPoint) -> np.ndarray:
        return self.data.subs[pt.ue.sub]

    # -- one node -----------------------------------------------------------------------------
    def node(self, restr: Restriction, start):
        """Maximise the node's dual, certify its bound, offer its primal points. Returns
        (certified bound, the weighted cuts, the certified point)."""
        scale = max(abs(self.const), TINY)
        rel = 1e-2 * self.tol
        pt, cuts = maximise_dual(self.data, self.const, self.floor, restr, rel, scale,
                                 start=start)
        K = self.data.K
        tol_ue = 0.25 * self.tol * scale / max(K, 1)
        cert = dual_value(self.data, self.const, self.floor, restr, pt.nu, pt.mu, tol_ue,
                          start=pt.ue)
        for c, _ in sorted(cuts, key=lambda cw: -cw[1]) + [(cert, 0.0)]:
            self.consider(self._x_of(c), c.ue.p, c.ue.b)
        self._combine(cuts)
        return cert.bound, cuts, cert

    def _combine(self, cuts) -> None:
        """The ambiguous UEs' choices from the heaviest cut that meets the band with the others'
        from the cut that meets the floor (the relaxation mixes the two)."""
        if len(cuts) < 2:
            return
        band = [c for c, _ in cuts if c.grad[0] <= 0]
        flo = [c for c, _ in cuts if c.grad[1] <= 0]
        for a in band:
            for f in flo:
                if a is f:
                    continue
                x = self._x_of(a) | self._x_of(f)
                over = x.sum(axis=1) > self.M_max
                x[over] = self._x_of(f)[over]
                p = np.where(self._x_of(a).any(axis=1), a.ue.p, f.ue.p)
                self.consider(x, p, None)

    def branch(self, restr: Restriction, cuts, cert: DualPoint):
        """Children of a node (module docstring), or [] when no UE is split."""
        subs = [c.ue.sub for c, _ in cuts] + [cert.ue.sub]
        ps = [np.log(c.ue.p) for c, _ in cuts] + [np.log(cert.ue.p)]
        S = np.array(subs)
        amb = np.flatnonzero((S != S[0]).any(axis=0))
        if amb.size:
            # the ambiguous UE whose choices differ most in value at the heaviest cut
            heavy = max(cuts, key=lambda cw: cw[1])[0] if cuts else cert
            k = int(amb[np.argmax(np.abs(heavy.ue.ub[amb]))])
            j = int(heavy.ue.sub[k])
            a1 = restr.allowed.copy()
            a1[k] = False
            a1[k, j] = True
            a2 = restr.allowed.copy()
            a2[k, j] = False
            return [Restriction(a, restr.s_lo, restr.s_hi) for a in (a1, a2) if a[k].any()]
        P = np.array(ps)
        spread = P.max(axis=0) - P.min(axis=0)
        on = S[0] > 0
        spread = np.where(on, spread, 0.0)
        k = int(np.argmax(spread))
        if spread[k] <= 1e-9:
            # no UE is split between cuts: cut the widest power range of a scheduled UE
            width = np.where(on, restr.s_hi - restr.s_lo, 0.0)
            k = int(np.argmax(width))
            if width[k] <= 1e-9:
                return []
            cut = 0.5 * (restr.s_lo[k] + restr.s_hi[k])
        else:
            cut = 0.5 * (P[:, k].max() + P[:, k].min())
        lo1, hi1 = restr.s_lo.copy(), restr.s_hi.copy()
        hi1[k] = cut
        lo2, hi2 = restr.s_lo.copy(), restr.s_hi.copy()
        lo2[k] = cut
        return [Restriction(restr.allowed, lo1, hi1), Restriction(restr.allowed, lo2, hi2)]

    def timed_out(self) -> bool:
        return time.perf_counter() - self.t0 > self.time_limit


def solve(sys_: RoundSystem, M_max: int, floor: int, available=None, x_given=None,
          tol: float = 1e-6, time_limit: float = 60.0, max_nodes: int = 10_000):
    """Return (x, p, b, objective, bound, status, nodes, extras); ``bound`` certified and net
    of rounding, ``status`` ``optimal`` only when the caller's :func:`certify` agrees."""
    t0 = time.perf_counter()
    s = _Search(sys_, M_max, floor, available, x_given, tol, time_limit, t0)
    if _floor_infeasible(s, floor):
        return None, None, None, math.nan, math.inf, "infeasible", 0, {}
    root_bound, cuts, cert = s.node(s.root, None)
    s.nu_hint = cert.nu
    extras = {"root_bound": root_bound, "nu": cert.nu, "mu": cert.mu}
    heap: list = []
    leaves: list[float] = []
    counter = 0
    nodes = 1
    status = "optimal"

    def close_tol():
        return tol * max(abs(s.best[0]), TINY) if s.best is not None else 0.0

    def push(bound, restr, cuts, cert):
        nonlocal counter
        if s.best is not None and bound >= s.best[0] - close_tol():
            leaves.append(bound)
            return
        heapq.heappush(heap, (bound, counter, restr, cuts, cert))
        counter += 1

    push(root_bound, s.root, cuts, cert)
    while heap:
        bound, _, restr, cuts, cert = heapq.heappop(heap)
        if s.best is not None and bound >= s.best[0] - close_tol():
            leaves.append(bound)
            continue
        if nodes >= max_nodes or s.timed_out():
            heapq.heappush(heap, (bound, counter, restr, cuts, cert))
            status = "time_limit"
            break
        children = s.branch(restr, cuts, cert)
        if not children:
            leaves.append(bound)
            status = "feasible"
            continue
        for ch in children:
            nodes += 1
            b, c, ce = s.node(ch, (cert.nu, cert.mu))
            push(max(b, bound), ch, c, ce)
    s.polish()
    if s.best is None:  # no point found, nothing proved
        extras["message"] = "no feasible point found"
        return None, None, None, math.nan, -math.inf, "error", nodes, extras
    obj, x, p, b = s.best
    open_b = [h[0] for h in heap]
    bound = min(leaves + open_b) if (leaves or open_b) else obj
    extras.update(nodes=nodes, bcd_evaluations=s.evals)
    return x, p, b, obj, min(bound, obj), status, nodes, extras


def _floor_infeasible(s: _Search, floor: int) -> bool:
    """Proof that no x meets (7b), (7d) and the floor: some UE has no subset left (a given x
    over M_max), or the ``floor`` least b^min over the allowed pairs, at most M_max per UE,
    already exceed the band (or there are fewer pairs than that)."""
    if not s.root.allowed.any(axis=1).all():
        return True
    if s.x_given is not None and math.fsum(s.sys.b_min[s.x_given].tolist()) > 1.0:
        return True
    if floor <= 0:
        return False
    pair_ok = (s.root.allowed[:, 1:, None] & s.data.subs[None, 1:, :]).any(axis=1)
    bm = np.sort(np.where(pair_ok, s.sys.b_min, np.inf), axis=1)[:, :s.M_max].ravel()
    bm = np.sort(bm)[:floor]
    return bm.size < floor or not np.isfinite(bm).all() or math.fsum(bm.tolist()) > 1.0
