"""Shared numerics of the bandwidth problem (16): terms, derivatives, inflection points and
the per-pair Lagrangian oracle min_b f_n(b) + ν b on a box (MODEL.md (17)-(20)).

f_n(b) = -w_n e^{-a_n b} + c_n / b          (16), per pair
f_n'(b) = w_n a_n e^{-a_n b} - c_n / b²      so f_n' + ν = 0 is (17)
f_n''(b) = 2 c_n / b³ - w_n a_n² e^{-a_n b}

f_n is convex on b > 0 iff 27 w_n / (2 e³ a_n c_n) <= 1. Otherwise f_n'' > 0 on (0, b1),
< 0 on (b1, b2) and > 0 on (b2, ∞), where b1 < 3/a_n < b2 are the two roots of f_n'' = 0,
b = -(3/a) W_{0,-1}( -(a/3) (2c/(w a²))^{1/3} ). On each convex piece f_n' + ν is
increasing, so the piece's Lagrangian minimiser is its clipped root; on the concave piece
the minimiser is an endpoint of the piece. The per-pair global Lagrangian minimiser is the
best of: lo, hi, the clipped root on [lo, min(hi, b1)] and the clipped root on
[max(lo, b2), hi].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

EPS = np.finfo(float).eps


def f(w, a, c, b):
    """Per-pair term f_n(b), eq. (16)."""
    return -w * np.exp(-a * b) + c / b


def df(w, a, c, b):
    """f_n'(b); (17) is df + ν = 0."""
    return w * a * np.exp(-a * b) - c / (b * b)


def d2f(w, a, c, b):
    """f_n''(b) (MODEL.md, facts for a global method)."""
    return 2.0 * c / (b * b * b) - w * a * a * np.exp(-a * b)


def parts(w, a, c, b):
    """Size of the float evaluation of f_n(b) (16): |−w e^{−ab}|·(3 + ab) + 2 c/b. The
    rounding error of f evaluated in float is at most ε times this (exp to 1 ulp, the
    product a·b propagated through exp, one multiply, one divide, one add)."""
    e = w * np.exp(-a * b)
    return e * (3.0 + a * b) + 2.0 * c / b


def objective_with_rounding(w, a, c, b) -> tuple[float, float, float]:
    """Σ f_n(b) of (16) (fsum), a bound on its rounding error and the size of its terms
    Σ(w e^{−ab} + c/b), from one pass (one exp) over the pairs; see :func:`parts`. fsum adds
    exactly up to N = 20000; above, the pairwise sum adds at most log2(N)·ε·Σ|f_n|."""
    ab = a * b
    e = w * np.exp(-ab)
    cb = c / b
    p = e * (3.0 + ab) + 2.0 * cb  # parts()
    err = 2.0 * EPS * fsum(p)
    if p.size > 20_000:
        err += math.log2(p.size) * EPS * float(np.sum(p))
    return fsum(cb - e), err, fsum(e + cb)


def convex_mask(w, a, c) -> np.ndarray:
    """True where f_n is convex on all of b > 0: 27 w / (2 e³ a c) <= 1 (MODEL.md), or
    a w = 0 (then f_n = −w + c/b or c/b)."""
    return (27.0 * w <= 2.0 * math.e**3 * a * c) | (a == 0) | (w == 0)


def inflections(w, a, c, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Inflection points (b1, b2) of f_n that matter on the box [lo, hi]. Shape (N,) each.

    f_n'' > 0 iff h(b) = ln(2c) − 3 ln b − ln(w a²) + a b > 0; h is convex in u = ln b with
    its minimum at b = 3/a, so b1 < 3/a < b2. Where f_n is convex on the whole box
    (h(clip(3/a)) >= 0, which covers MODEL.md's criterion 27w/(2e³ac) <= 1) both are +inf.
    Otherwise b1 = 0 when b1 <= lo (no first convex piece in the box), b2 = +inf when
    b2 >= hi (no last convex piece), and the others are found by Newton on h(u), which
    converges monotonically from lo (for b1) and from hi (for b2) because h is convex in u.
    """
    n = w.shape[0]
    b1 = np.full(n, np.inf)
    b2 = np.full(n, np.inf)
    cand = ~convex_mask(w, a, c)
    if not cand.any():
        return b1, b2
    idx = np.flatnonzero(cand)
    wi, ai, ci, li, hi_ = w[idx], a[idx], c[idx], lo[idx], hi[idx]
    with np.errstate(divide="ignore"):
        k = np.log(2.0 * ci) - np.log(wi * ai * ai)

    def h(b):
        return k - 3.0 * np.log(b) + ai * b

    m = np.clip(3.0 / ai, li, hi_)
    conc = h(m) < 0  # a concave piece meets the box
    idx, k, ai, li, hi_ = idx[conc], k[conc], ai[conc], li[conc], hi_[conc]
    if idx.size == 0:
        return b1, b2
    m = 3.0 / ai
    for side in (0, 1):
        start = li if side == 0 else hi_
        hs = k - 3.0 * np.log(start) + ai * start
        has = (hs > 0) & ((start < m) if side == 0 else (start > m))
        r = np.where(side == 0, 0.0, np.inf) * np.ones(idx.size)
        sel = np.flatnonzero(has)
        if sel.size:
            u = np.log(start[sel])
            kk, aa = k[sel], ai[sel]
            # Newton until every step is tiny (100 steps at most). The map u -> u − step is
            # fixed per pair, so an iterate that comes back to its value one step (fixed
            # point) or two steps (a 2-cycle, at the last ulp) earlier repeats forever: it
            # leaves the loop with its verdicts kept by the parity of the step, and the
            # others iterate exactly as they would with it
            act, ua, ka, a_ = np.arange(sel.size), u, kk, aa
            up = sp = None  # the active iterates one step back, and their verdicts
            fixed_ok, cycle_ok = True, [True, True]
            cycles = []  # (pairs, step found, the value after even steps, after odd)
            last = 99
            for it in range(100):
                e = a_ * np.exp(ua)
                step = (ka - 3.0 * ua + e) / (e - 3.0)
                un = ua - step
                small = np.abs(step) <= 1e-15 * (1.0 + np.abs(un))
                if fixed_ok and cycle_ok[it % 2] and np.all(small):
                    last = it
                    break
                fixed = un == ua
                two = (un == up) & ~fixed if up is not None else np.zeros_like(fixed)
                if fixed.any() or two.any():
                    if fixed.any():
                        fixed_ok &= bool(np.all(small[fixed]))
                        u[act[fixed]] = un[fixed]
                    if two.any():
                        cycle_ok[it % 2] &= bool(np.all(small[two]))
                        cycle_ok[1 - it % 2] &= bool(np.all(sp[two]))
                        cycles.append((act[two], it, un[two], ua[two]))
                    moving = ~(fixed | two)
                    act, un, ua, ka, a_, small = (act[moving], un[moving], ua[moving],
                                                  ka[moving], a_[moving], small[moving])
                up, sp, ua = ua, small, un
            u[act] = un
            for pairs, it, even, odd in cycles:
                u[pairs] = even if (last - it) % 2 == 0 else odd
            r[sel] = np.exp(u)
        if side == 0:
            b1[idx] = r
        else:
            b2[idx] = r
    return b1, b2


def monotone_root(w, a, c, nu, lo, hi, x0=None, max_iter: int = 100):
    """Root of φ(b) = f'(b) + ν on [lo, hi] where φ is increasing and φ(lo) < 0 < φ(hi).

    φ = 0 is (17): c/b² = ν + w a e^{-ab}. The start is one fixed-point step
    b = sqrt(c / (ν + w a e^{-ab})) (exact when a b -> 0); Newton then runs on
    H(b) = b² (ν + w a e^{-ab}) − c = b² φ(b), which has the sign of φ and is almost
    quadratic, so one or two steps usually suffice. Every step is safeguarded by the
    bracket [lo, hi] (updated with the sign of H) and replaced by a geometric bisection
    when it leaves it or stops shrinking. Vectorised; ν may be a scalar.
    Returns (root, iterations).
    """
    lo = lo.copy()
    hi = hi.copy()
    if x0 is None:
        x = np.sqrt(c / (nu + w * a))
    else:
        x = np.sqrt(c / (nu + w * a * np.exp(-a * x0)))
    inside = (x > lo) & (x < hi)
    if not inside.all():
        x = np.where(inside, x, np.sqrt(lo * hi))
    out = x.copy()
    idx = None
    W, A, C = w, a, c
    NU = nu
    vec_nu = np.ndim(nu) > 0
    it = 0
    prev = None
    while it < max_iter:
        it += 1
        e = W * A * np.exp(-A * x)
        K = NU + e
        H = x * x * K - C
        dH = x * (2.0 * K - A * x * e)
        neg = H < 0
        lo = np.where(neg, x, lo)
        hi = np.where(neg, hi, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = H / dH
        xn = x - step
        newton_done = np.abs(step) <= 8 * EPS * x
        bad = ~((xn >= lo) & (xn <= hi))
        if prev is not None:
            bad |= np.abs(step) > 0.5 * prev  # not converging: bisect
        bad &= ~newton_done  # a converged Newton iterate is never replaced by a midpoint
        if bad.any():
            xn = np.where(bad, np.sqrt(lo * hi), xn)
        done = newton_done | (hi - lo <= 4 * EPS * hi) | (H == 0)
        if idx is None:
            out = xn
        else:
            out[idx] = xn
        if done.all():
            break
        if done.any():
            keep = np.flatnonzero(~done)
            idx = keep if idx is None else idx[keep]
            x, lo, hi = xn[keep], lo[keep], hi[keep]
            W, A, C = W[keep], A[keep], C[keep]
            if vec_nu:
                NU = NU[keep]
            prev = np.where(bad, np.inf, np.abs(step))[keep]
        else:
            x = xn
            prev = np.where(bad, np.inf, np.abs(step))
    return out, it


class _Piece:
    """Convex pieces [l, r] of the pairs ``idx`` (None: all pairs), with f' and f at the ends."""

    def __init__(self, w, a, c, idx, l, r, fl, fr) -> None:
        self.idx = idx
        if idx is None:
            self.w, self.a, self.c = w, a, c
        else:
            self.w, self.a, self.c = w[idx], a[idx], c[idx]
        self.l, self.r, self.fl, self.fr = l, r, fl, fr
        self.dl = df(self.w, self.a, self.c, l)
        self.dr = df(self.w, self.a, self.c, r)
        self.warm: np.ndarray | None = None
        self.last: tuple | None = None  # (ν, answer) of the latest solve

    def solve(self, nu: float):
        """Clipped root of f' + ν on each piece: (b, f(b), free mask, iterations)."""
        if self.last is not None and self.last[0] == nu:
            return self.last[1]  # the bound pass asks again at the final ν
        tl = self.dl + nu
        at_l = tl >= 0
        free = ~at_l & (self.dr + nu > 0)
        x = np.where(at_l, self.l, self.r)
        val = np.where(at_l, self.fl, self.fr)
        iters = 0
        n = x.shape[0]
        fi = np.flatnonzero(free)
        if fi.size == n:
            x0 = self.warm
            x, iters = monotone_root(self.w, self.a, self.c, nu, self.l, self.r, x0)
            val = f(self.w, self.a, self.c, x)
        elif fi.size:
            x0 = None if self.warm is None else self.warm[fi]
            w, a, c = self.w[fi], self.a[fi], self.c[fi]
            r_, iters = monotone_root(w, a, c, nu, self.l[fi], self.r[fi], x0)
            x[fi] = r_
            val[fi] = f(w, a, c, r_)
        self.warm = x
        self.last = (nu, (x, val, free, iters))
        return x, val, free, iters

    def lower(self, nu: float, x: np.ndarray, val: np.ndarray):
        """A certified lower bound on min_{[l, r]} f + ν b from any point x of the piece, and
        the size of its float evaluation.

        f + ν b is convex on the piece, so it lies above its tangent at x:
        min ≥ f(x) + ν x + min(φ(x)(l − x), φ(x)(r − x)), φ = f' + ν. At an exact root φ = 0
        and the bound is the value itself; an inexact or wrong root only lowers the bound,
        never lifts it above the true minimum (the a-posteriori check of the oracle).
        """
        cx = self.c / x
        e = cx - val  # w e^{−ax} from f(x) = −w e^{−ax} + c/x: no second exp
        phi = self.a * e - cx / x + nu
        corr = np.minimum(phi * (self.l - x), phi * (self.r - x))
        size = np.abs(e) * (3.0 + self.a * x) + 2.0 * cx + 2.0 * abs(nu) * x + 4.0 * np.abs(corr)
        return val + nu * x + corr, size


class Argmin(NamedTuple):
    """The per-pair Lagrangian oracle's answer at one ν. Arrays (N,)."""

    b: np.ndarray        # global minimiser of f_n(b) + ν b on [lo_n, hi_n]
    v: np.ndarray        # its value
    free: np.ndarray     # True where b is an interior root of (17)
    iterations: int
    piece: np.ndarray    # 0: at lo, 1: at hi, 2: first convex piece, 3: last convex piece
    lb: np.ndarray | None    # certified lower bound on each pair's minimum (``bound=True``)
    size: np.ndarray | None  # size of the float evaluation of each lb (rounding is ε·size)


class Box:
    """The per-pair Lagrangian oracle on one box [lo, hi] (one B&B node). Arrays (N,)."""

    def __init__(self, w, a, c, lo, hi, b1, b2) -> None:
        self.w, self.a, self.c, self.lo, self.hi = w, a, c, lo, hi
        self.f_lo = f(w, a, c, lo)
        self.f_hi = f(w, a, c, hi)
        n = w.shape[0]
        # first convex piece [lo, min(hi, b1)]
        A_r = np.minimum(hi, b1)
        hasA = A_r >= lo
        if hasA.all():
            fr = np.where(A_r == hi, self.f_hi, f(w, a, c, A_r))
            self.pA = _Piece(w, a, c, None, lo, A_r, self.f_lo, fr)
        else:
            ia = np.flatnonzero(hasA)
            self.pA = _Piece(w, a, c, ia, lo[ia], A_r[ia], self.f_lo[ia],
                             f(w[ia], a[ia], c[ia], A_r[ia])) if ia.size else None
        # last convex piece [max(lo, b2), hi] (pairs whose b2 lies below hi)
        ic = np.flatnonzero(b2 < hi)
        if ic.size:
            C_l = np.maximum(lo[ic], b2[ic])
            self.pC = _Piece(w, a, c, ic, C_l, hi[ic], f(w[ic], a[ic], c[ic], C_l),
                             self.f_hi[ic])
        else:
            self.pC = None
        self.n = n

    def argmin(self, nu: float, bound: bool = False) -> Argmin:
        """Global minimiser of f_n(b) + ν b on [lo_n, hi_n] for every pair.

        The candidates are lo, hi and the clipped root of (17) on each convex piece (the
        concave piece between has its minimum at an end). With ``bound=True`` it also returns
        each pair's certified lower bound (:meth:`_Piece.lower` on both convex pieces, the
        exact values at lo and hi), which holds even if a root were wrong.
        """
        lo, hi = self.lo, self.hi
        v_lo = self.f_lo + nu * lo
        v_hi = self.f_hi + nu * hi
        m = v_hi < v_lo
        best_b = np.where(m, hi, lo)
        best_v = np.where(m, v_hi, v_lo)
        piece = m.astype(np.int8)
        free = np.zeros(self.n, dtype=bool)
        lb = size = None
        if bound:
            lb = best_v.copy()
            end = np.where(m, hi, lo)
            f_end = np.where(m, self.f_hi, self.f_lo)
            # parts() at the end from f already known: w e^{−ab} = c/b − f (a magnitude)
            cb = self.c / end
            e = np.abs(cb - f_end)
            size = e * (3.0 + self.a * end) + 2.0 * cb + 2.0 * abs(nu) * end
        iters = 0
        for pid, p in ((2, self.pA), (3, self.pC)):
            if p is None:
                continue
            x, fx, fr, it = p.solve(nu)
            iters = max(iters, it)
            v = fx + nu * x
            sel = slice(None) if p.idx is None else p.idx
            m = v <= best_v[sel]
            if p.idx is None:
                best_b = np.where(m, x, best_b)
                best_v = np.where(m, v, best_v)
                free = np.where(m, fr, free)
                piece = np.where(m, pid, piece).astype(np.int8)
            else:
                s_ = p.idx[m]
                best_b[s_] = x[m]
                best_v[s_] = v[m]
                free[s_] = fr[m]
                piece[s_] = pid
            if bound:
                plb, psize = p.lower(nu, x, fx)
                lb[sel] = np.minimum(lb[sel], plb)
                size[sel] = np.maximum(size[sel], psize)
        return Argmin(best_b, best_v, free, iters, piece, lb, size)


def fsum(x: np.ndarray) -> float:
    """Exactly rounded sum (math.fsum) for N <= 20000, numpy's pairwise sum above (relative
    error ~1e-15, far inside every tolerance here)."""
    x = np.asarray(x, dtype=float)
    # a memoryview yields the same floats as tolist() without building the list
    return math.fsum(memoryview(x.ravel())) if x.size <= 20_000 else float(np.sum(x))


def make_feasible(b: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: float) -> np.ndarray:
    """Clip b into [lo, hi] and remove any excess over the budget (in place).

    The correctly rounded sum (fsum) is kept one ulp below the budget, so the exact sum of
    the floats (at most half an ulp above fsum's) cannot exceed it. For large N the pairwise
    np.sum (error < 1e-15 relative here) is used with a 4e-15 margin instead, so
    Σ b <= budget holds exactly either way.
    """
    np.clip(b, lo, hi, out=b)
    big = b.size > 20_000
    cap = budget * (1 - 4e-15) if big else math.nextafter(budget, 0.0)
    for _ in range(20):
        excess = (float(np.sum(b)) if big else fsum(b)) - cap
        if excess <= 0:
            return b
        room = b - lo
        k = int(np.argmax(room))
        b[k] = max(lo[k], b[k] - excess * (1 + 1e-12) - 4 * EPS * b[k])
    return b
