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

from ._bandwidth_core import Box, d2f, f, fsum, make_feasible


@dataclass
class DualResult:
    nu: float
    bound: float          # g(ν), a valid lower bound on the box's optimum
    b: np.ndarray         # the relaxation's point (a convex combination of b(ν⁻), b(ν⁺)), feasible
    objective: float      # Σ f_n(b)
    env_gap: np.ndarray   # f_n(b_n) − envelope value at b_n, per pair (>= 0)
    iterations: int
    binding: bool
    jumped: bool          # S(ν) jumps at ν* (a nonconvex pair switches piece)


def solve_dual(box: Box, budget: float, rel_tol: float = 1e-13, max_iter: int = 300) -> DualResult:
    """Maximise g(ν) over ν >= 0 on the box (MODEL.md (20)).

    Stops when S(ν) = budget to 1e-13 relative (then the free pairs absorb the residual by
    one Newton correction in b, db/dν = −1/f''), or when the ν bracket is so tight that g can
    gain at most rel_tol·scale by going on (the bound's slack is at most
    (ν_hi − ν_lo)·(S(ν_lo) − S(ν_hi))), which is how a jump of S at ν* ends.
    """
    w, a, c, lo, hi = box.w, box.a, box.c, box.lo, box.hi
    b0, v0, free0, _ = box.argmin(0.0)
    s0 = fsum(b0)
    if s0 <= budget:
        b = make_feasible(b0.copy(), lo, hi, budget)
        obj = fsum(f(w, a, c, b))
        return DualResult(0.0, fsum(v0), b, obj, np.zeros_like(b), 1, False, False)
    scale = max(float(np.sum(np.abs(v0))), 1e-300)
    nu_lo, b_lo, v_lo, s_lo = 0.0, b0, v0, s0
    nu_hi = float(np.max(c / (lo * lo))) * (1 + 1e-9) + 1e-300
    b_hi, v_hi, s_hi = None, None, None
    nu = _initial_nu(w, a, c, lo, hi, budget, nu_hi)
    res_prev = abs(s0 - budget)
    it = 0
    exact = None
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported after the loop)
        if not (nu_lo < nu < nu_hi):
            nu = _bisect(nu_lo, nu_hi)
        b, v, free, _ = box.argmin(nu)
        s = float(np.sum(b))
        if s > budget:
            nu_lo, b_lo, v_lo, s_lo = nu, b, v, s
        else:
            nu_hi, b_hi, v_hi, s_hi = nu, b, v, s
        inv = 1.0 / d2f(w[free], a[free], c[free], b[free]) if free.any() else None
        slope = float(np.sum(inv)) if inv is not None else 0.0
        res = abs(s - budget)
        if res <= 1e-13 * budget and slope > 0:
            exact = (nu, b, v, free, inv, slope)
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
        nu, b, v, free, inv, slope = exact
        b = b.copy()
        corr = (fsum(b) - budget) / slope  # Newton correction: Σ db = budget − S
        b[free] -= corr * inv
        b = make_feasible(b, lo, hi, budget)
        bound = fsum(v) - nu * budget
        fb = f(w, a, c, b)
        return DualResult(nu, bound, b, fsum(fb), np.zeros_like(b), it, True, False)
    if b_hi is None:  # never found S <= budget (cannot happen: b(nu_hi) = lo)
        b_hi, v_hi, _, _ = box.argmin(nu_hi)
    s_lo, s_hi = fsum(b_lo), fsum(b_hi)
    g_lo = fsum(v_lo) - nu_lo * budget
    g_hi = fsum(v_hi) - nu_hi * budget
    bound = max(g_lo, g_hi)
    theta = (budget - s_hi) / (s_lo - s_hi) if s_lo > s_hi else 0.0
    theta = min(max(theta, 0.0), 1.0)
    b = b_hi + theta * (b_lo - b_hi)
    b = make_feasible(b, lo, hi, budget)
    fb = f(w, a, c, b)
    env = (1 - theta) * f(w, a, c, b_hi) + theta * f(w, a, c, b_lo)
    env_gap = np.maximum(fb - env, 0.0)
    jumped = bool(np.max(b_lo - b_hi) > 1e-9 * max(1.0, float(np.max(hi))))
    return DualResult(0.5 * (nu_lo + nu_hi), bound, b, fsum(fb), env_gap, it, True, jumped)


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
