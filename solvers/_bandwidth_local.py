"""The paper's methods for (16): the Lambert-W closed form with Newton on ν (``lambertw``)
and Algorithm 1, the two-tier binary search (``alg1``).

Both return the Lagrangian dual value g(ν) at their final ν as a certified lower bound
(MODEL.md: the dual of (16) equals the convex-envelope relaxation), so they are labelled
``optimal`` exactly when that certificate closes the gap to ``tol``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import lambertw

from ._bandwidth_core import Box, d2f, df, f, fsum, inflections, make_feasible
from ._bandwidth_dual import certified_bound


def w0_root(w, a, c) -> np.ndarray:
    """The W₀ root of (19), b = −(2/a) W₀(−(a/2) √(c/(w a))); nan where the argument is
    below −1/e (no real root: f decreasing) or w a = 0."""
    wa = w * a
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -(a / 2.0) * np.sqrt(c / wa)
        real = np.isfinite(z) & (z >= -1.0 / math.e) & (wa > 0)
        out = np.full(w.shape, np.nan)
        out[real] = -(2.0 / a[real]) * lambertw(z[real], 0).real
    return out


def w0_solution(w, a, c, lo, hi) -> np.ndarray:
    """Per-pair global minimiser of f_n on [lo, hi] at ν = 0, by (19).

    b = −(2/a) W₀(−(a/2) √(c/(w a))) is the local minimum when the argument is >= −1/e;
    the per-pair minimum compares it with the endpoints (f decreases, increases up to the
    W₋₁ root, then decreases). Below −1/e (or with a w = 0) f decreases and b = hi.
    """
    root = w0_root(w, a, c)
    real = np.isfinite(root)
    b = hi.copy()
    if real.any():
        r = np.clip(root[real], lo[real], hi[real])
        fr = f(w[real], a[real], c[real], r)
        cands = np.stack([r, lo[real], hi[real]])
        vals = np.stack([fr, f(w[real], a[real], c[real], lo[real]),
                         f(w[real], a[real], c[real], hi[real])])
        b[real] = cands[np.argmin(vals, axis=0), np.arange(r.size)]
    # no real branch: f is decreasing on (0, ∞); compare hi with lo only for safety
    nr = ~real
    if nr.any():
        flo = f(w[nr], a[nr], c[nr], lo[nr])
        fhi = f(w[nr], a[nr], c[nr], hi[nr])
        b[nr] = np.where(flo < fhi, lo[nr], hi[nr])
    return b


def lagrangian_bound(inst, nu: float, box: Box | None = None) -> float:
    """g(ν) = Σ_n min_{[b_min, b_max]} (f_n + ν b) − ν·budget, a valid lower bound on (16)
    (certified per pair and net of rounding, :func:`certified_bound`)."""
    if box is None:
        b1, b2 = inflections(inst.w, inst.a, inst.c, inst.b_min, inst.b_max)
        box = Box(inst.w, inst.a, inst.c, inst.b_min, inst.b_max, b1, b2)
    return certified_bound(box, max(float(nu), 0.0), inst.budget)[0]


def solve_lambertw(inst, tol: float = 1e-9, max_iter: int = 200):
    """(19) per pair; if Σb > budget, Newton on ν for (20) with db_n/dν = −1/f_n''(b_n),
    each b_n(ν) continued on the W₀ (first convex) branch with the endpoint comparison.

    Returns (b, nu, iterations, bound).
    """
    w, a, c, lo, hi, B = inst.w, inst.a, inst.c, inst.b_min, inst.b_max, inst.budget
    b = w0_solution(w, a, c, lo, hi)
    if fsum(b) <= B:
        b = make_feasible(b, lo, hi, B)
        return b, 0.0, 0, lagrangian_bound(inst, 0.0)
    b1, b2 = inflections(w, a, c, lo, hi)
    full = Box(w, a, c, lo, hi, b1, b2)
    local = Box(w, a, c, lo, hi, b1, b2)
    local.pC = None  # the W₀ branch only: the paper's local continuation
    nu, nu_lo, nu_hi = 0.0, 0.0, float(np.max(c / (lo * lo))) * (1 + 1e-9)
    free = (b > lo) & (b < hi)
    s = fsum(b)
    best = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported after the loop)
        slope = float(np.sum(1.0 / d2f(w[free], a[free], c[free], b[free]))) if free.any() else 0.0
        nxt = nu + (s - B) / slope if slope > 0 else math.nan
        if not (nu_lo < nxt < nu_hi):
            nxt = 0.5 * (nu_lo + nu_hi) if nu_lo > 0 or nu_hi < 1e3 else nu_hi * 1e-3
        nu = nxt
        r = local.argmin(nu)
        b, free = r.b, r.free
        s = fsum(b)
        if s > B:
            nu_lo = nu
        else:
            nu_hi = nu
            best = (nu, b)
        if abs(s - B) <= 1e-13 * B or nu_hi - nu_lo <= 2e-16 * nu_hi:
            break
    if abs(s - B) <= 1e-13 * B and free.any():
        inv = 1.0 / d2f(w[free], a[free], c[free], b[free])
        b = b.copy()
        b[free] -= (s - B) * inv / np.sum(inv)
    elif best is not None:
        nu, b = best
    b = make_feasible(b.copy(), lo, hi, B)
    return b, nu, it, lagrangian_bound(inst, nu, full)


def _bisect_piece(w, a, c, nu, l, r, n_iter: int):
    """Tier 1 of Algorithm 1 on convex pieces: bisection on the sign of f' + ν (clipped)."""
    tl = df(w, a, c, l) + nu
    tr = df(w, a, c, r) + nu
    lo, hi = l.copy(), r.copy()
    for _ in range(n_iter):
        mid = np.sqrt(lo * hi)
        neg = df(w, a, c, mid) + nu < 0
        lo = np.where(neg, mid, lo)
        hi = np.where(neg, hi, mid)
    x = np.sqrt(lo * hi)
    x = np.where(tl >= 0, l, np.where(tr <= 0, r, x))
    return x


def solve_alg1(inst, eps: float = 1e-12, max_iter: int = 400):
    """Algorithm 1 (MODEL.md (20)): two-tier binary search, vectorised over pairs.

    Tier 1, for a given ν: each b_n(ν) is the global minimiser of f_n(b) + ν b on
    [b_min_n, b_max_n], by bisection on each convex piece plus the endpoint check.
    Tier 2: bisection on ν; keep the larger half if Σ b_n(ν) > budget, else the smaller.
    Stop when |Σb − budget| <= eps·budget or the ν interval is shorter than eps·ν (relative).
    Returns (b, nu, tier-2 iterations, bound, tier-1 iterations per call).
    """
    w, a, c, lo, hi, B = inst.w, inst.a, inst.c, inst.b_min, inst.b_max, inst.budget
    b1, b2 = inflections(w, a, c, lo, hi)
    A_r = np.minimum(hi, b1)
    hasA = A_r >= lo
    A_r = np.where(hasA, A_r, lo)
    hasC = b2 < hi
    C_l = np.where(hasC, np.maximum(lo, b2), hi)
    width = float(np.max(np.log(hi / lo)))
    n1 = max(1, math.ceil(math.log2(max(width, 1e-300) / 1e-15)))

    def tier1(nu: float):
        cands = [lo, hi]
        xa = _bisect_piece(w, a, c, nu, lo, A_r, n1)
        cands.append(np.where(hasA, xa, lo))
        if hasC.any():
            xc = _bisect_piece(w, a, c, nu, C_l, hi, n1)
            cands.append(np.where(hasC, xc, hi))
        X = np.stack(cands)
        V = f(w, a, c, X) + nu * X
        k = np.argmin(V, axis=0)
        idx = np.arange(w.shape[0])
        return X[k, idx], V[k, idx]

    b, v = tier1(0.0)
    if fsum(b) <= B:
        b = make_feasible(b, lo, hi, B)
        return b, 0.0, 0, lagrangian_bound(inst, 0.0), n1
    nu_lo, nu_hi = 0.0, float(np.max(c / (lo * lo))) * (1 + 1e-9)
    best = None
    it = 0
    while it < max_iter:
        it += 1
        # binary search on ν; geometric once the interval spans more than a factor of 4
        nu = 0.5 * (nu_lo + nu_hi) if nu_lo == 0 or nu_hi < 4 * nu_lo else math.sqrt(nu_lo * nu_hi)
        b, v = tier1(nu)
        s = fsum(b)
        if s > B:
            nu_lo = nu
        else:
            nu_hi = nu
            best = (nu, b, v)
        if abs(s - B) <= eps * B or nu_hi - nu_lo <= eps * nu_hi:
            break
    if best is None:
        b, v = tier1(nu_hi)
        best = (nu_hi, b, v)
    nu, b, v = best
    bound = lagrangian_bound(inst, nu)  # g(ν) with certified per-pair minima
    b = make_feasible(b.copy(), lo, hi, B)
    return b, nu, it, bound, n1
