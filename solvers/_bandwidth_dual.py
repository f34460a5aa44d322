"""Lagrangian dual of (16) on a box: max_ν≥0 g(ν), g(ν) = Σ_n min_b [f_n(b) + ν b] − ν·budget.

g equals the value of the convex-envelope relaxation (MODEL.md (16)-(20), facts for a global
method). ν is found by safeguarded Newton on S(ν) = Σ_n b_n(ν) = budget (20), with
dS/dν = −Σ_free 1/f_n''(b_n), falling back to bisection when Newton leaves the bracket or the
bracket stops halving (S jumps where a nonconvex pair switches piece).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._bandwidth_core import EPS, Box, d2f, f, fsum, make_feasible, objective_with_rounding


@dataclass
class DualResult:
    nu: float
    bound: float          # certified lower bound on the box's optimum (rounding subtracted)
    b: np.ndarray         # the relaxation's point (see :func:`fill`), feasible
    objective: float      # Σ f_n(b)
    env_gap: np.ndarray   # f_n(b_n) − envelope value at b_n, per pair (>= 0)
    iterations: int
    binding: bool
    jumped: bool          # S(ν) jumps at ν* (a nonconvex pair switches piece)
    rounding: float = 0.0  # the rounding allowance subtracted from ``bound``
    obj_rounding: float = 0.0  # a bound on the rounding error of ``objective``


def certified_bound(box: Box, nu: float, budget: float) -> tuple[float, float]:
    """g(ν) = Σ_n min_b [f_n(b) + ν b] − ν·budget, certified: each per-pair minimum is
    replaced by its lower bound from :meth:`Box.argmin` (``bound=True``), and the rounding
    of the float evaluation is subtracted. Any ν >= 0 gives a valid lower bound on (16) on
    the box (weak duality). Returns (bound, rounding allowance)."""
    r = box.argmin(nu, bound=True)
    rounding = 2.0 * EPS * (fsum(r.size) + nu * budget)
    return fsum(r.lb) - nu * budget - rounding, rounding


def solve_dual(box: Box, budget: float, rel_tol: float = 1e-13, max_iter: int = 300) -> DualResult:
    """Maximise g(ν) over ν >= 0 on the box (MODEL.md (20)).

    Stops when S(ν) = budget to 1e-13 relative (then the free pairs absorb the residual by
    one Newton correction in b, db/dν = −1/f''), or when the ν bracket is so tight that g can
    gain at most rel_tol·scale by going on (the bound's slack is at most
    (ν_hi − ν_lo)·(S(ν_lo) − S(ν_hi))), which is how a jump of S at ν* ends. The bound is
    then re-evaluated with certificates at the best ν (:func:`certified_bound`).
    """
    w, a, c, lo, hi = box.w, box.a, box.c, box.lo, box.hi
    r0 = box.argmin(0.0)
    s0 = fsum(r0.b)
    if s0 <= budget:
        b = make_feasible(r0.b.copy(), lo, hi, budget)
        obj, err, _ = objective_with_rounding(w, a, c, b)
        bound, rounding = certified_bound(box, 0.0, budget)
        return DualResult(0.0, bound, b, obj, np.zeros_like(b), 1, False, False, rounding, err)
    scale = max(float(np.sum(np.abs(r0.v))), 1e-300)
    nu_lo, lo_r, s_lo = 0.0, r0, s0
    nu_hi = float(np.max(c / (lo * lo))) * (1 + 1e-9) + 1e-300
    hi_r, s_hi = None, None
    nu = _initial_nu(w, a, c, lo, hi, budget, nu_hi)
    res_prev = abs(s0 - budget)
    it = 0
    exact = None
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported after the loop)
        if not (nu_lo < nu < nu_hi):
            nu = _bisect(nu_lo, nu_hi)
        r = box.argmin(nu)
        s = float(np.sum(r.b))
        if s > budget:
            nu_lo, lo_r, s_lo = nu, r, s
        else:
            nu_hi, hi_r, s_hi = nu, r, s
        free = r.free
        inv = 1.0 / d2f(w[free], a[free], c[free], r.b[free]) if free.any() else None
        slope = float(np.sum(inv)) if inv is not None else 0.0
        res = abs(s - budget)
        if res <= 1e-13 * budget and slope > 0:
            exact = (nu, r, inv, slope)
            break
        if nu_hi - nu_lo <= 2e-16 * nu_hi:
            break
        if s_hi is not None and (nu_hi - nu_lo) * (s_lo - s_hi) <= rel_tol * scale:
            break
        nxt = _newton_step(nu, s, slope, budget)
        if res > 0.5 * res_prev:
            nxt = math.nan  # Newton is not converging (S jumps near ν*): bisect once
            res_prev = math.inf
        else:
            res_prev = res
        nu = nxt
    if exact is not None:
        nu, r, inv, slope = exact
        b = r.b.copy()
        corr = (fsum(b) - budget) / slope  # Newton correction: Σ db = budget − S
        b[r.free] -= corr * inv
        b = make_feasible(b, lo, hi, budget)
        bound, rounding = certified_bound(box, nu, budget)
        obj, err, _ = objective_with_rounding(w, a, c, b)
        return DualResult(nu, bound, b, obj, np.zeros_like(b), it, True, False, rounding, err)
    if hi_r is None:  # never found S <= budget (cannot happen: b(nu_hi) = lo)
        hi_r = box.argmin(nu_hi)
    g_lo = fsum(lo_r.v) - nu_lo * budget
    g_hi = fsum(hi_r.v) - nu_hi * budget
    bound, rounding = certified_bound(box, nu_lo if g_lo >= g_hi else nu_hi, budget)
    b, env_gap = fill(box, hi_r, lo_r, budget)
    jumped = bool(np.any(hi_r.piece != lo_r.piece))
    obj, err, _ = objective_with_rounding(w, a, c, b)
    return DualResult(0.5 * (nu_lo + nu_hi), bound, b, obj, env_gap, it, True, jumped, rounding,
                      err)


def fill(box: Box, hi_r, lo_r, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """The relaxation's point from the Lagrangian minimisers at the ends of the final ν
    bracket: b(ν_hi) (Σ <= budget) and b(ν_lo) (Σ > budget).

    Pairs that stay on one piece move together by one fraction θ (on a convex piece the
    interpolation lies on the envelope). Pairs that jump between pieces (the nonconvex ones,
    where the envelope is linear between the two minimisers) are raised from b(ν_hi) to
    b(ν_lo) one at a time, in decreasing index, until the budget is used: so at most one of
    them sits strictly inside its linear piece, above f_n (Udell and Boyd's "at most one term
    above its envelope"), even when many identical pairs jump at the same ν. Within a group
    of identical pairs the higher copies get the larger b, as the B&B's ordering expects.
    Returns (b feasible, env_gap per pair).
    """
    w, a, c = box.w, box.a, box.c
    b_hi, b_lo = hi_r.b, lo_r.b
    d = np.maximum(b_lo - b_hi, 0.0)
    jump = (hi_r.piece != lo_r.piece) & (d > 0)
    room = budget - fsum(b_hi)
    b = b_hi.copy()
    t = np.zeros_like(b)
    cont = ~jump
    dc = fsum(d[cont]) if cont.any() else 0.0
    if room > 0 and dc > 0:
        th = min(1.0, room / dc)
        t[cont] = th
        room -= th * dc
    if room > 0 and jump.any():
        ji = np.flatnonzero(jump)[::-1]
        cum = np.cumsum(d[ji])
        full = cum <= room
        t[ji[full]] = 1.0
        k = int(np.count_nonzero(full))
        if k < ji.size:
            rest = room - (cum[k - 1] if k else 0.0)
            t[ji[k]] = min(1.0, max(0.0, rest / d[ji[k]]))
    b = b_hi + t * d
    b = make_feasible(b, box.lo, box.hi, budget)
    fb = f(w, a, c, b)
    env = (1 - t) * f(w, a, c, b_hi) + t * f(w, a, c, b_lo)
    return b, np.maximum(fb - env, 0.0)


def _newton_step(nu: float, s: float, slope: float, budget: float) -> float:
    """Newton on ln S(ν) = ln budget in ln ν (S ~ ν^{-1/2} for free pairs with small a·b,
    so this is nearly exact there); dS/dν = −slope."""
    if not (slope > 0 and nu > 0 and s > 0):
        return math.nan
    el = -nu * slope / s  # d ln S / d ln ν
    if el >= 0:
        return math.nan
    return nu * math.exp(min(50.0, max(-50.0, (math.log(budget) - math.log(s)) / el)))


def _initial_nu(w, a, c, lo, hi, budget, nu_hi) -> float:
    """ν from the small-a·b model b_n(ν) ≈ clip(sqrt(c_n / (ν + w_n a_n))), by a few bracketed
    log-Newton steps (cheap: no exponentials). Only a starting point."""
    K = w * a
    br_lo, br_hi = 0.0, nu_hi
    nu = max(float(np.median(c / (hi * hi))), 1e-300)
    for _ in range(40):
        if not (br_lo < nu < br_hi):
            nu = _bisect(br_lo, br_hi)
        r = np.sqrt(c / (nu + K))
        s = float(np.sum(np.clip(r, lo, hi)))
        if s > budget:
            br_lo = nu
        else:
            br_hi = nu
        if abs(s - budget) <= 1e-3 * budget or br_hi - br_lo <= 1e-6 * br_hi:
            return nu
        free = (r > lo) & (r < hi)
        slope = float(np.sum((0.5 * r / (nu + K))[free]))
        nu = _newton_step(nu, s, slope, budget)
    return nu if br_lo < nu < br_hi else _bisect(br_lo, br_hi)


def _bisect(lo: float, hi: float) -> float:
    if lo <= 0.0:
        return hi * 1e-3
    if hi > 4.0 * lo:
        return math.sqrt(lo * hi)
    return 0.5 * (lo + hi)
