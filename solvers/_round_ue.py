"""The per-UE Lagrangian subproblem of the round problem (7), solved globally with a
certificate, vectorised over UEs (``solve_round(..., method="auto")``, issue 16).

With the band constraint (7d) priced by ν >= 0 and the participation floor by μ >= 0, (7)
separates by UE. UE k's share of the Lagrangian is

    L_k(ν, μ) = min_{S, p, b}  Σ_{m∈S} [ d_{k,m} − μ + f_{k,m}(p, b_m) + ν b_m ],
    d_{k,m} = ω_k Δ_{k,m} + ρ E^cmp_{k,m},
    f_{k,m}(p, b) = −ω_k Γ_{k,m} q_{k,m}(p, b) + ρ p S_m / (b B log2(1+θ))           (7), (15)

over the subsets S of the UE's feasible modules with |S| <= M_max (7b), p in [P_min, P_max]
(7e) and b_m in [b^min_{k,m}, 1] (7d); S = ∅ costs 0. For a fixed p each b_m is the
bandwidth oracle's 1-D problem, f(b) + νb with w = ω Γ e^{−κ p^{−2/α}}, a' = a/p,
c = ρ p S_m/(B log2(1+θ)) (MODEL.md (16)): :class:`._bandwidth_core.Box` returns its global
minimiser and a certified lower bound.

The certificate over p is an interval branch and bound in s = ln p. On a cell
[s_a, s_b], −ω Γ q(p, b) decreases in p (q increases in p) and ρ p S/(bR) increases, so

    f(p, b) >= −ω Γ q(p_b, b) + ρ p_a S/(bR)    for every p in [p_a, p_b] and every b,

a bandwidth term of the same form (w and a' from p_b, c from p_a). Its certified minimum
(Box.argmin's tangent bounds, net of rounding) bounds every pair on the cell from below, and
sums over each subset bound the cell. Each cell is also probed at its midpoint (an achieved
value, the incumbent). A cell whose bound is within ``tol`` of the UE's incumbent is
closed; the others are halved. The bound of a cell tends to its value as the cell shrinks,
so the search ends; the UE's certified bound is the least bound over its closed cells (and
0 for S = ∅ where allowed).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..costs import RoundSystem
from ._bandwidth_core import EPS, Box, inflections

__all__ = ["UEData", "UEResult", "subsets", "ue_lagrangian", "ue_search"]


def subsets(M: int, M_max: int) -> np.ndarray:
    """All subsets S of the M modules with |S| <= M_max (7b), as a bool (n_S, M) array; row 0
    is the empty set."""
    rows = [np.zeros(M, bool)]
    for r in range(1, min(M, M_max) + 1):
        for c in itertools.combinations(range(M), r):
            row = np.zeros(M, bool)
            row[list(c)] = True
            rows.append(row)
    return np.array(rows)


@dataclass(frozen=True, eq=False)
class UEData:
    """The arrays of (7) that the per-UE subproblem needs (built once per round)."""

    W: np.ndarray        # (K, M) ω_k Γ_{k,m}
    d: np.ndarray        # (K, M) ω_k Δ_{k,m} + ρ E^cmp_{k,m}
    a: np.ndarray        # (K,)
    kappa: np.ndarray    # (K,)
    cS: np.ndarray       # (M,) ρ S_m / (B log2(1+θ))
    lo: np.ndarray       # (K, M) b^min, 1 where the pair misses the deadline
    feasible: np.ndarray  # (K, M) b^min finite and <= 1
    subs: np.ndarray     # (n_S, M) subsets, row 0 empty
    sub_ok: np.ndarray   # (K, n_S) subsets made of feasible modules only
    gamma: float
    s_min: float
    s_max: float

    @classmethod
    def from_system(cls, sys_: RoundSystem, M_max: int) -> UEData:
        feas = np.isfinite(sys_.b_min) & (sys_.b_min <= 1.0)
        subs = subsets(sys_.M, M_max)
        sub_ok = ~((~feas).astype(np.int8) @ subs.T.astype(np.int8)).astype(bool)
        return cls(W=sys_.omega[:, None] * sys_.Gamma,
                   d=sys_.omega[:, None] * sys_.Delta + sys_.rho * sys_.E_cmp,
                   a=np.asarray(sys_.a, float), kappa=np.asarray(sys_.kappa, float),
                   cS=sys_.rho * np.asarray(sys_.S, float) / sys_.rate_per_b,
                   lo=np.where(feas, sys_.b_min, 1.0), feasible=feas, subs=subs, sub_ok=sub_ok,
                   gamma=2.0 / sys_.alpha, s_min=math.log(sys_.P_min),
                   s_max=math.log(sys_.P_max))

    @property
    def K(self) -> int:
        return int(self.a.shape[0])


class UEResult(NamedTuple):
    """Per UE (K,): a certified lower bound on L_k, the incumbent's value, its subset (row of
    :func:`subsets`), its p, its b (K, M) (0 off the subset); ``cells`` evaluated in all."""

    lb: np.ndarray
    ub: np.ndarray
    sub: np.ndarray
    p: np.ndarray
    b: np.ndarray
    cells: int


def _boxes(data: UEData, ks: np.ndarray, s_w: np.ndarray, s_c: np.ndarray, nu: float,
           bound: bool):
    """Box.argmin for every module of the UEs ``ks`` (n,), with w and a' taken at s_w and c at
    s_c (equal: the exact pair terms at p = e^s; s_w = s_b, s_c = s_a: the cell's minorant).
    Returns (b, value, lb, size), each (n, M)."""
    M = data.cS.size
    w = data.W[ks] * np.exp(-data.kappa[ks] * np.exp(-data.gamma * s_w))[:, None]
    a = np.repeat((data.a[ks] * np.exp(-s_w))[:, None], M, axis=1)
    c = data.cS[None, :] * np.exp(s_c)[:, None]
    return _box(data, ks, w, a, c, nu, bound)


def _box(data: UEData, ks, w, a, c, nu: float, bound: bool):
    """Box.argmin of −w e^{−a b} + c/b + ν b on [b^min, 1] for the (n, M) pairs of UEs ``ks``."""
    shape = w.shape
    lo = data.lo[ks]
    w, a, c, lo = w.ravel(), a.ravel(), c.ravel(), lo.ravel()
    hi = np.ones_like(lo)
    b1, b2 = inflections(w, a, c, lo, hi)
    r = Box(w, a, c, lo, hi, b1, b2).argmin(nu, bound=bound)
    if not bound:
        return r.b.reshape(shape), r.v.reshape(shape), None, None
    return r.b.reshape(shape), r.v.reshape(shape), r.lb.reshape(shape), r.size.reshape(shape)


def _taylor_bounds(data: UEData, ks, sa, sb, nu: float):
    """Second-order bounds of a cell [s_a, s_b] in s = ln p, for the two ends t = ±h of
    s = s_m + t (h the half width): per pair (n, M) a certified lower bound on
    min_b [F(s_m, b) ± h F_s(s_m, b)] and the curvature allowance ½ h² M2.

    With A = −ωΓ q (u = a e^{−s} b + κ e^{−γs}, q = e^{−u}) and C = ρ e^s S/(bR), F = A + C + νb:
    C is convex in s (above its tangent C(1 + t)) and −A_ss = ωΓ q ((r + γv)² − r − γ²v)
    <= M2 := ωΓ min(4/e², q_max (r_max + γ v_max)²) on the cell (r = a e^{−s} b, v = κ e^{−γs},
    q_max at s_b, b^min; r_max, v_max at s_a, b = 1), so F(s_m + t, b) >= F(s_m, b) +
    t F_s(s_m, b) − ½ M2 t². Summed over a subset the first two terms are concave in t (a
    minimum over b of affine functions), so their least over |t| <= h is at t = ±h. There
    A + t A_s = −ωΓ e^{−v} e^{−a'b} (1 + t(γv + a'b)) (a' = a e^{−s_m}), and 1 + x <= e^x puts
    each end in the bandwidth form: w'' = ωΓ e^{−v}(1 ± hγv), a'' = a'(1 ∓ h/(1 ± hγv)),
    c'' = c (1 ± h) (for the minus end w'' = 0 when hγv >= 1). Returns (lb_minus, lb_plus,
    size_max, curvature), each (n, M); needs h < 1."""
    M = data.cS.size
    h = 0.5 * (sb - sa)
    sm = 0.5 * (sa + sb)
    W = data.W[ks]
    v = (data.kappa[ks] * np.exp(-data.gamma * sm))[:, None]
    ap = np.repeat((data.a[ks] * np.exp(-sm))[:, None], M, axis=1)
    c = data.cS[None, :] * np.exp(sm)[:, None]
    hh = h[:, None]
    gv = data.gamma * v
    Wv = W * np.exp(-v)
    out = []
    for sign in (-1.0, 1.0):
        f = 1.0 + sign * hh * gv
        w2 = np.where(f > 0, Wv * f, 0.0)
        a2 = ap * np.where(f > 0, 1.0 - sign * hh / np.where(f > 0, f, 1.0), 1.0)
        _, _, lb, size = _box(data, ks, w2, a2, c * (1.0 + sign * hh), nu, True)
        out.append((lb, size))
    q_max = np.exp(-(data.a[ks] * np.exp(-sb))[:, None] * data.lo[ks]
                   - (data.kappa[ks] * np.exp(-data.gamma * sb))[:, None])
    rv = (data.a[ks] * np.exp(-sa) + data.gamma * data.kappa[ks] * np.exp(-data.gamma * sa))[:, None]
    M2 = W * np.minimum(4.0 / math.e**2, q_max * rv * rv)
    curv = 0.5 * hh * hh * M2 * (1.0 + 1e-12)
    return out[0][0], out[1][0], np.maximum(out[0][1], out[1][1]), curv


def _subset_values(data: UEData, ks, pair_v, mu: float, allowed):
    """Σ_{m∈S} (d − μ + v_m) for every subset (n, n_S); +inf where S is not allowed."""
    vals = (data.d[ks] - mu + pair_v) @ data.subs.T.astype(float)
    ok = allowed[ks] & data.sub_ok[ks]
    return np.where(ok, vals, np.inf)


def ue_search(data: UEData, nu: float, mu: float, allowed: np.ndarray, s_lo: np.ndarray,
              s_hi: np.ndarray, grid: int = 17, zoom: int = 17, levels: int = 5) -> UEResult:
    """Each UE's best point without a certificate (the dual search's oracle): for every
    allowed subset, the best of ``grid`` powers in [s_lo, s_hi], refined by zooming into the
    grid cells beside it; then the best subset (or S = ∅ at 0). Returns a
    :class:`UEResult` with lb = −inf."""
    K, M = data.K, data.cS.size
    nS = data.subs.shape[0]
    t = np.linspace(0.0, 1.0, grid)
    span = s_hi - s_lo
    sg = s_lo[:, None] + span[:, None] * t[None, :]
    ks = np.repeat(np.arange(K), grid)
    _, v, _, _ = _boxes(data, ks, sg.ravel(), sg.ravel(), nu, False)
    vals = _subset_values(data, ks, v, mu, allowed).reshape(K, grid, nS)
    # zoom per (UE, nonempty subset): ``zoom`` points on the two grid cells beside its best
    # point, then again on the two beside the new best, ``levels`` times (each ×(zoom−1)/2)
    # only subsets whose grid minimum is within the grid's resolution (the largest step
    # between neighbouring grid values) of the UE's best can win after zooming
    gmin = vals.min(axis=1)
    steps = np.abs(np.diff(vals, axis=1))
    res = np.where(np.isfinite(steps), steps, 0.0).max(axis=1)
    best_k = np.minimum(np.where(allowed[:, 0], 0.0, np.inf), gmin[:, 1:].min(axis=1))
    kk, jj = np.nonzero(np.isfinite(gmin[:, 1:]) & (gmin[:, 1:] <= best_k[:, None] + res[:, 1:]))
    jj = jj + 1
    g = np.argmin(vals[kk, :, jj], axis=1)
    best_s, best_v = sg[kk, g], vals[kk, g, jj]
    half = span[kk] / (grid - 1)
    subm = data.subs[jj].astype(float)
    u = np.linspace(-1.0, 1.0, zoom)
    n = kk.size
    for _ in range(levels if n else 0):
        x = np.clip(best_s[:, None] + half[:, None] * u[None, :], s_lo[kk, None], s_hi[kk, None])
        kz = np.repeat(kk, zoom)
        _, vz, _, _ = _boxes(data, kz, x.ravel(), x.ravel(), nu, False)
        fz = np.einsum("nzm,nm->nz", (data.d[kz] - mu + vz).reshape(n, zoom, M), subm)
        i = np.argmin(fz, axis=1)
        fi = fz[np.arange(n), i]
        better = fi < best_v
        best_s = np.where(better, x[np.arange(n), i], best_s)
        best_v = np.where(better, fi, best_v)
        half = half * 2.0 / (zoom - 1)
    # the best subset per UE
    ub = np.where(allowed[:, 0], 0.0, np.inf)
    sub = np.zeros(K, np.intp)
    p = np.exp(s_hi).copy()
    order = np.lexsort((best_v, kk))
    first = np.ones(order.size, bool)
    first[1:] = kk[order][1:] != kk[order][:-1]
    i = order[first]
    i = i[best_v[i] < ub[kk[i]]]
    ub[kk[i]], sub[kk[i]], p[kk[i]] = best_v[i], jj[i], np.exp(best_s[i])
    b, _, _, _ = _boxes(data, np.arange(K), np.log(p), np.log(p), nu, False)
    return UEResult(np.full(K, -np.inf), ub, sub, p, np.where(data.subs[sub], b, 0.0),
                    K * grid + kk.size * zoom * levels)


def ue_lagrangian(data: UEData, nu: float, mu: float, allowed: np.ndarray, s_lo: np.ndarray,
                  s_hi: np.ndarray, tol, init_cells: int = 8, max_levels: int = 48,
                  max_cells: int = 2_000_000, start: UEResult | None = None) -> UEResult:
    """Certified L_k(ν, μ) for every UE (module docstring): lb <= L_k <= ub, with
    ub − lb <= tol_k (``tol`` a scalar or (K,)) unless the level or cell cap stops a UE first
    (its lb stays valid, only looser). ``allowed`` (K, n_S) bool restricts the subsets (column
    0: S = ∅) and [s_lo, s_hi] (K,) the powers (ln p) of each UE. ``start``: incumbents at
    the same (ν, μ) and restriction (:func:`ue_search`), which close cells sooner."""
    K, M = data.K, data.cS.size
    tol = np.broadcast_to(np.asarray(tol, float), (K,))
    ub = np.where(allowed[:, 0], 0.0, np.inf)
    sub = np.zeros(K, np.intp)
    p_best = np.exp(s_hi).copy()
    b_best = np.zeros((K, M))
    if start is not None:
        ub, sub = start.ub.copy(), start.sub.copy()
        p_best, b_best = start.p.copy(), start.b.copy()
    lb = np.full(K, np.inf)
    live = (allowed[:, 1:] & data.sub_ok[:, 1:]).any(axis=1)
    lb[~live] = ub[~live]
    ks = np.repeat(np.flatnonzero(live), init_cells)
    t = np.arange(init_cells, dtype=float)
    w0 = (s_hi - s_lo)[ks] / init_cells
    sa = s_lo[ks] + w0 * np.tile(t, int(live.sum()))
    sb = np.where(np.tile(t, int(live.sum())) == init_cells - 1, s_hi[ks], sa + w0)
    parent_lb = np.full(ks.size, -np.inf)
    cells = 0
    for level in range(max_levels + 1):
        if ks.size == 0:
            break
        cells += ks.size
        # the incumbent: every cell's midpoint
        sm = 0.5 * (sa + sb)
        bm, vm, _, _ = _boxes(data, ks, sm, sm, nu, False)
        vals = _subset_values(data, ks, vm, mu, allowed)
        j = np.argmin(vals, axis=1)
        v = vals[np.arange(ks.size), j]
        order = np.lexsort((v, ks))
        first = np.ones(order.size, bool)
        first[1:] = ks[order][1:] != ks[order][:-1]
        i = order[first]
        better = v[i] < ub[ks[i]]
        i = i[better]
        k_i = ks[i]
        ub[k_i] = v[i]
        sub[k_i] = j[i]
        p_best[k_i] = np.exp(sm[i])
        b_best[k_i] = np.where(data.subs[j[i]], bm[i], 0.0)
        # the cells' certified bounds: the monotone minorant (w, a' at s_b; c at s_a), and
        # where the cell is narrow the second-order one (:func:`_taylor_bounds`)
        _, _, plb, size = _boxes(data, ks, sb, sa, nu, True)
        dmu = data.d[ks] - mu
        rnd = 2.0 * EPS * (size + np.abs(dmu)) + EPS * np.abs(plb + dmu)
        lbv = _subset_values(data, ks, plb - rnd, mu, allowed)
        narrow = (sb - sa) < 0.5
        if narrow.any():
            i = np.flatnonzero(narrow)
            lm, lp, tsize, curv = _taylor_bounds(data, ks[i], sa[i], sb[i], nu)
            trnd = 2.0 * EPS * (tsize + np.abs(dmu[i])) + EPS * np.abs(np.minimum(lm, lp) + dmu[i])
            t_lb = np.minimum(
                _subset_values(data, ks[i], lm - trnd - curv, mu, allowed),
                _subset_values(data, ks[i], lp - trnd - curv, mu, allowed))
            lbv[i] = np.maximum(lbv[i], t_lb)
        lbv[:, 0] = np.inf  # S = ∅ is counted once per UE (ub starts at 0)
        clb = np.maximum(lbv.min(axis=1), parent_lb)
        close = clb >= ub[ks] - tol[ks]
        if level == max_levels or cells + 2 * int((~close).sum()) > max_cells:
            close[:] = True
        np.minimum.at(lb, ks[close], clb[close])
        keep = ~close
        if not keep.any():
            break
        ks, sa, sb, clb = ks[keep], sa[keep], sb[keep], clb[keep]
        mid = 0.5 * (sa + sb)
        ks = np.concatenate([ks, ks])
        sa, sb = np.concatenate([sa, mid]), np.concatenate([mid, sb])
        parent_lb = np.concatenate([clb, clb])
    lb = np.minimum(lb, ub)
    return UEResult(lb, ub, sub, p_best, b_best, cells)
