"""Independent reference checkers for the bandwidth (16) and power (21) subproblems.

Nothing here shares code with the solvers under test: only the instance classes are imported.
Each checker returns a :class:`Reference`: an *exactly* feasible point (bounds and
``math.fsum`` of b against the budget), its objective evaluated by mpmath at 60 digits, and
an independent lower bound on the optimum (``-inf`` where none is cheap).

Bandwidth (16), ``bandwidth_reference``
    * per pair a dense grid (log- and linearly spaced) on [b_min_n, hi_n], hi_n =
      min(b_max_n, budget − Σ_{m≠n} b_min_m);
    * the Lagrangian dual g(ν) = Σ_n min_b [f_n(b) + ν b] − ν·budget maximised over log ν
      by ``scipy.optimize.minimize_scalar`` on the grid; at the best ν each per-pair minimum
      is bounded below rigorously by cells, min(φ_j, φ_{j+1}) − max|f''| h²/8 (f'' =
      2c/b³ − w a² e^{−ab}, so |f''| ≤ max(2c/b_j³, w a² e^{−a b_j}) on a cell), refined
      where a cell could still hold the minimum, less a rounding margin. Any ν gives a
      valid bound; ν = 0 (the separable minimum) is always tried too;
    * candidate points: the separable per-pair minima (globally optimal when they fit the
      budget), the dual's primal recovery (pairs that jump branches at ν* switched one at a
      time while the budget allows), the solver's own point and perturbations of it, b_min,
      equal shares of the slack, equal shares of the budget and random points; each polished
      by SLSQP and projected exactly into the feasible set; the best by the 60-digit
      objective is kept.
    * ``bandwidth_brute_force`` (N ≤ 2): the exact KKT enumeration (every combination of
      per-pair local minima inside the budget, and the budget line b_1 + b_2 = budget on a
      dense grid refined by Brent) with a rigorous 1-D / 2-D cell lower bound.

Power (21), ``power_reference``
    A log grid (1e6 points by default) on [p_min, p_max], 1 − q as −expm1(−u), the best grid
    local minima refined by ``brentq`` on the derivative (22), the objective in mpmath, and
    a Lipschitz lower bound on the grid cells (|F'| ≤ max(C, Σ W e^{−u(p_{j+1})} |u'(p_j)|)),
    refined where a cell could still hold the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
from scipy.optimize import brentq, minimize, minimize_scalar

from ..instances import BandwidthInstance, PowerInstance

__all__ = ["Reference", "bandwidth_reference", "bandwidth_brute_force", "power_reference",
           "exact_bandwidth_objective", "exact_power_objective", "feasible_bandwidth_point"]

EPS = float(np.finfo(float).eps)
DIGITS = 60


@dataclass(frozen=True)
class Reference:
    """An exactly feasible point, its 60-digit objective and a valid lower bound."""

    x: Any
    objective: float  # the 60-digit objective at x, rounded to float
    objective_mp: mpmath.mpf
    lower_bound: float
    method: str


# --- bandwidth (16) --------------------------------------------------------------------------


def exact_bandwidth_objective(inst: BandwidthInstance, b: np.ndarray) -> mpmath.mpf:
    """Σ_n −w_n e^{−a_n b_n} + c_n / b_n, eq. (16), at 60 digits from the float inputs."""
    with mpmath.workdps(DIGITS):
        terms = [-mpmath.mpf(w) * mpmath.exp(-mpmath.mpf(a) * mpmath.mpf(x))
                 + mpmath.mpf(c) / mpmath.mpf(x)
                 for w, a, c, x in zip(inst.w.tolist(), inst.a.tolist(), inst.c.tolist(),
                                       np.asarray(b, dtype=float).tolist())]
        return mpmath.fsum(terms)


def _is_feasible(inst: BandwidthInstance, b: np.ndarray) -> bool:
    return bool(b.shape == inst.w.shape and np.all(np.isfinite(b)) and np.all(b >= inst.b_min)
                and np.all(b <= inst.b_max) and math.fsum(b.tolist()) <= inst.budget)


def feasible_bandwidth_point(inst: BandwidthInstance, b: np.ndarray) -> np.ndarray:
    """b clipped to its bounds and its excess over the budget taken off b − b_min in
    proportion, shrunk until ``math.fsum(b) <= budget`` holds exactly; b_min as a last resort.
    Raises ValueError when not even b_min is exactly feasible."""
    b = np.clip(np.asarray(b, dtype=float), inst.b_min, inst.b_max)
    if _is_feasible(inst, b):
        return b
    room = b - inst.b_min
    slack = inst.budget - math.fsum(inst.b_min.tolist())
    total = math.fsum(room.tolist())
    if slack > 0 and total > 0:
        theta = slack / total
        for k in range(60):
            x = np.minimum(inst.b_min + room * (theta * (1 - 4.0 * 2.0**k * EPS)), inst.b_max)
            if _is_feasible(inst, x):
                return x
    if _is_feasible(inst, inst.b_min.copy()):
        return inst.b_min.copy()
    raise ValueError("no exactly feasible point: fsum(b_min) exceeds the budget")


def _f(w, a, c, b):
    return -w * np.exp(-a * b) + c / b


def _df(w, a, c, b):
    return w * a * np.exp(-a * b) - c / b**2


def _d2f_bound(w, a, c, b):
    """max |f''| on [b, ·): |2c/b³ − w a² e^{−ab}| ≤ max of the two, both decreasing in b."""
    return np.maximum(2 * c / b**3, w * a * a * np.exp(-a * b))


def _upper_limits(inst: BandwidthInstance) -> np.ndarray:
    others = math.fsum(inst.b_min.tolist()) - inst.b_min
    return np.maximum(inst.b_min, np.minimum(inst.b_max, inst.budget - others))


def _grid(lo: np.ndarray, hi: np.ndarray, g: int) -> np.ndarray:
    """(N, 2g) sorted points on [lo_n, hi_n]: g log-spaced and g linear, endpoints exact."""
    t = np.linspace(0.0, 1.0, g)
    log = lo[:, None] * (hi / lo)[:, None] ** t[None, :]
    lin = lo[:, None] + (hi - lo)[:, None] * t[None, :]
    pts = np.sort(np.concatenate([log, lin], axis=1), axis=1)
    pts[:, 0], pts[:, -1] = lo, hi
    return pts


def _pair_bounds(w, a, c, nu: float, pts: np.ndarray, rounds: int = 4, split: int = 32,
                 cap: int = 400_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: a rigorous lower bound of min_{b in [pts_0, pts_-1]} f_n(b) + ν b, the best
    value found and its point. Cells bound by min(φ_j, φ_{j+1}) − max|f''| h²/8; cells that
    could still hold a lower value are split (``split`` parts, ``rounds`` times)."""
    n = pts.shape[0]
    phi = _f(w[:, None], a[:, None], c[:, None], pts) + nu * pts
    j = np.argmin(phi, axis=1)
    best = phi[np.arange(n), j]
    xbest = pts[np.arange(n), j]
    # refine the best grid point by Brent on φ' over its two neighbouring cells
    for i in range(n):
        lo_b = pts[i, max(j[i] - 1, 0)]
        hi_b = pts[i, min(j[i] + 1, pts.shape[1] - 1)]
        d_lo = _df(w[i], a[i], c[i], lo_b) + nu
        d_hi = _df(w[i], a[i], c[i], hi_b) + nu
        if d_lo < 0 < d_hi:
            r = brentq(lambda b, i=i: _df(w[i], a[i], c[i], b) + nu, lo_b, hi_b,
                       xtol=4 * EPS * hi_b, rtol=4 * EPS, maxiter=200)
            v = _f(w[i], a[i], c[i], r) + nu * r
            if v < best[i]:
                best[i], xbest[i] = v, r
    # cell bounds, flat over (pair, cell)
    idx = np.repeat(np.arange(n), pts.shape[1] - 1)
    left, right = pts[:, :-1].ravel(), pts[:, 1:].ravel()
    vl, vr = phi[:, :-1].ravel(), phi[:, 1:].ravel()
    scale = np.abs(w) + np.abs(c / xbest) + abs(nu) * xbest  # size of the parts at the best
    tol = 64 * EPS * scale
    lower = best - tol
    for r in range(rounds + 1):
        h = right - left
        cb = np.minimum(vl, vr) - _d2f_bound(w[idx], a[idx], c[idx], left) * h * h / 8
        keep = cb < best[idx] - tol[idx]
        if r == rounds or keep.sum() * split > cap:
            if keep.any():
                np.minimum.at(lower, idx[keep], cb[keep])
            break
        idx, left, right = idx[keep], left[keep], right[keep]
        if idx.size == 0:
            break
        t = np.linspace(0.0, 1.0, split + 1)
        sub = left[:, None] + (right - left)[:, None] * t[None, :]
        sub[:, -1] = right
        ii = np.repeat(idx, split)
        vals = _f(w[idx, None], a[idx, None], c[idx, None], sub) + nu * sub
        k = np.argmin(vals, axis=1)
        cand, at = vals[np.arange(idx.size), k], sub[np.arange(idx.size), k]
        better = cand < best[idx]
        for i_, v_, x_ in zip(idx[better], cand[better], at[better]):
            if v_ < best[i_]:
                best[i_], xbest[i_] = v_, x_
        left, right = sub[:, :-1].ravel(), sub[:, 1:].ravel()
        vl, vr = vals[:, :-1].ravel(), vals[:, 1:].ravel()
        idx = ii
    return np.minimum(lower, best - tol) - tol, best, xbest


def _dual_value_grid(phi_f: np.ndarray, pts: np.ndarray, nu: float, budget: float) -> float:
    return float(np.sum(np.min(phi_f + nu * pts, axis=1))) - nu * budget


def _slsqp(inst: BandwidthInstance, x0: np.ndarray) -> np.ndarray:
    """SLSQP from x0 on (16), objective scaled by the size of its parts at x0."""
    w, a, c = inst.w, inst.a, inst.c
    scale = float(np.sum(w * np.exp(-a * x0) + c / x0)) or 1.0
    res = minimize(
        lambda b: float(np.sum(_f(w, a, c, b))) / scale, x0,
        jac=lambda b: _df(w, a, c, b) / scale, method="SLSQP",
        bounds=list(zip(inst.b_min, inst.b_max)),
        constraints=[{"type": "ineq", "fun": lambda b: inst.budget - float(np.sum(b)),
                      "jac": lambda b: -np.ones_like(b)}],
        options={"maxiter": 100, "ftol": 1e-14},
    )
    return res.x if np.all(np.isfinite(res.x)) else x0


def bandwidth_reference(inst: BandwidthInstance, x0: np.ndarray | None = None, *,
                        grid: int = 1024, starts: int = 2, polish: int = 4, seed: int = 0
                        ) -> Reference:
    """Independent reference for (16): the best exactly feasible point of a multistart and a
    Lagrangian-dual lower bound (module docstring). ``x0``: e.g. the solver's own point."""
    rng = np.random.default_rng(seed)
    w, a, c, lo, budget = inst.w, inst.a, inst.c, inst.b_min, inst.budget
    hi = _upper_limits(inst)
    pts = _grid(lo, hi, grid)
    fvals = _f(w[:, None], a[:, None], c[:, None], pts)
    # ν = 0: the separable minimum, and the dual bound maximised over log ν
    lb0, _, sep = _pair_bounds(w, a, c, 0.0, pts)
    bound = math.fsum(lb0.tolist())
    nu_top = float(np.max(c / lo**2 - w * a * np.exp(-a * lo), initial=0.0))
    candidates: list[np.ndarray] = [sep]
    nu_star = 0.0
    if math.fsum(sep.tolist()) > budget and nu_top > 0:
        res = minimize_scalar(lambda t: -_dual_value_grid(fvals, pts, math.exp(t), budget),
                              bounds=(math.log(nu_top) - 40.0, math.log(nu_top) + 0.1),
                              method="bounded", options={"xatol": 1e-10, "maxiter": 200})
        nu_star = math.exp(res.x)
        lbn, _, _ = _pair_bounds(w, a, c, nu_star, pts)
        bound = max(bound, math.fsum(lbn.tolist()) - nu_star * budget
                    - 4 * EPS * nu_star * budget)
        # primal recovery: pairs that jump at ν* switched one at a time
        below = pts[np.arange(inst.n), np.argmin(fvals + nu_star * (1 - 1e-7) * pts, axis=1)]
        above = pts[np.arange(inst.n), np.argmin(fvals + nu_star * (1 + 1e-7) * pts, axis=1)]
        x = np.minimum(above, below)
        for i in np.argsort(below - above)[::-1]:
            y = x.copy()
            y[i] = below[i]
            if math.fsum(y.tolist()) <= budget:
                x = y
        candidates.append(x)
    if x0 is not None and np.asarray(x0).shape == w.shape and np.all(np.isfinite(x0)):
        x0 = np.asarray(x0, dtype=float)
        candidates += [x0] + [x0 * (1 + 1e-3 * rng.standard_normal(inst.n)) for _ in range(2)]
    slack = max(budget - math.fsum(lo.tolist()), 0.0)
    candidates += [lo.copy(), lo + slack / inst.n, np.full(inst.n, budget / inst.n)]
    candidates += [lo + slack * rng.dirichlet(np.ones(inst.n)) for _ in range(starts)]
    # every start as it is, then SLSQP from the ``polish`` best, until the bound certifies
    feasible = []
    for cand in candidates:
        try:
            feasible.append(feasible_bandwidth_point(inst, cand))
        except ValueError:
            continue
    vals = [exact_bandwidth_objective(inst, x) for x in feasible]
    order = sorted(range(len(feasible)), key=lambda i: vals[i])
    best_x, best_v = (feasible[order[0]], vals[order[0]]) if feasible else (None, None)
    for i in order[:polish]:
        parts = float(np.sum(w * np.exp(-a * best_x) + c / best_x)) + nu_star * budget
        if float(best_v) - bound <= 1e-12 * abs(float(best_v)) + 256 * EPS * parts:
            break  # certified by the independent bound: no multistart needed
        x = feasible_bandwidth_point(inst, _slsqp(inst, feasible[i]))
        v = exact_bandwidth_objective(inst, x)
        if v < best_v:
            best_x, best_v = x, v
    if best_x is None:
        raise ValueError("no exactly feasible point: fsum(b_min) exceeds the budget")
    return Reference(best_x, float(best_v), best_v, bound, "bandwidth: grid dual + multistart")


def bandwidth_brute_force(inst: BandwidthInstance, points: int = 100_000) -> Reference:
    """Exact enumeration for N ≤ 2 (module docstring); ``points`` per pair / on the line."""
    if inst.n > 2:
        raise ValueError("bandwidth_brute_force is for N <= 2")
    w, a, c, lo, budget = inst.w, inst.a, inst.c, inst.b_min, inst.budget
    hi = _upper_limits(inst)
    pts = _grid(lo, hi, points // 2)
    lb, _, _ = _pair_bounds(w, a, c, 0.0, pts)
    # every per-pair local minimum of the grid, refined by Brent, and the endpoints
    mins: list[list[float]] = []
    for i in range(inst.n):
        v = _f(w[i], a[i], c[i], pts[i])
        loc = np.flatnonzero((v[1:-1] <= v[:-2]) & (v[1:-1] <= v[2:])) + 1
        out = [float(lo[i]), float(hi[i])]
        for j in loc[:50]:
            r = minimize_scalar(lambda b, i=i: _f(w[i], a[i], c[i], b), method="bounded",
                                bounds=(pts[i, j - 1], pts[i, j + 1]),
                                options={"xatol": 4 * EPS * pts[i, j]})
            out.append(float(r.x))
        mins.append(out)
    cands = [np.array(x) for x in np.array(np.meshgrid(*mins)).reshape(inst.n, -1).T]
    bound = -math.inf
    if inst.n == 1:
        bound = float(lb[0])
    else:
        # the budget line b_0 + b_1 = budget, and the 2-D cells below it
        s0, s1 = max(lo[0], budget - hi[1]), min(hi[0], budget - lo[1])
        line_lb = math.inf
        if s0 <= s1:
            t = np.linspace(s0, s1, points)
            v = _f(w[0], a[0], c[0], t) + _f(w[1], a[1], c[1], budget - t)
            j = int(np.argmin(v))
            r = minimize_scalar(lambda b: _f(w[0], a[0], c[0], b) + _f(w[1], a[1], c[1], budget - b),
                                method="bounded", bounds=(t[max(j - 1, 0)], t[min(j + 1, t.size - 1)]))
            cands += [np.array([r.x, budget - r.x]), np.array([t[j], budget - t[j]])]
            h = t[1] - t[0]
            m2 = (_d2f_bound(w[0], a[0], c[0], t[:-1])
                  + _d2f_bound(w[1], a[1], c[1], budget - t[1:]))
            line_lb = float(np.min(np.minimum(v[:-1], v[1:]) - m2 * h * h / 8))
            line_lb -= 64 * EPS * float(np.max(np.abs(w) + c / lo))
        cell = []
        for i in range(2):
            f_i = _f(w[i], a[i], c[i], pts[i])
            hh = np.diff(pts[i])
            cell.append(np.minimum(f_i[:-1], f_i[1:])
                        - _d2f_bound(w[i], a[i], c[i], pts[i, :-1]) * hh * hh / 8)
        pref = np.minimum.accumulate(cell[1])
        k = np.searchsorted(pts[1, :-1], budget - pts[0, :-1], side="right") - 1
        ok = k >= 0
        box_lb = float(np.min(cell[0][ok] + pref[k[ok]])) if ok.any() else math.inf
        box_lb -= 64 * EPS * float(np.max(np.abs(w) + c / lo)) * 2
        bound = min(line_lb, box_lb)
    best_x, best_v = None, None
    for x in cands:
        if not _is_feasible(inst, x):
            continue
        v = exact_bandwidth_objective(inst, x)
        if best_v is None or v < best_v:
            best_x, best_v = x, v
    if best_x is None:
        best_x = feasible_bandwidth_point(inst, lo)
        best_v = exact_bandwidth_objective(inst, best_x)
    return Reference(best_x, float(best_v), best_v, bound, "bandwidth: brute force N <= 2")


# --- power (21) ------------------------------------------------------------------------------


def exact_power_objective(inst: PowerInstance, p: float) -> mpmath.mpf:
    """Σ_m W_m (1 − exp(−A_m/p − κ p^{−2/α})) + C p, eq. (21), at 60 digits."""
    with mpmath.workdps(DIGITS):
        p_ = mpmath.mpf(float(p))
        g = 2 / mpmath.mpf(inst.alpha)
        s = mpmath.mpf(inst.kappa) * p_ ** (-g)
        terms = [-mpmath.mpf(W) * mpmath.expm1(-(mpmath.mpf(A) / p_ + s))
                 for W, A in zip(inst.W.tolist(), inst.A.tolist())]
        return mpmath.fsum(terms + [mpmath.mpf(inst.C) * p_])


def _power_grid(inst: PowerInstance, p: np.ndarray, chunk: int = 2_000_000
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(21) on a vector of p, 1 − q as −expm1(−u), and S0 = Σ W e^{−u}, S1 = Σ W A e^{−u}
    (for the Lipschitz bound), in chunks of M·len(p) <= ``chunk``."""
    g = 2.0 / inst.alpha
    m = max(inst.W.size, 1)
    step = max(chunk // m, 1)
    F, S0, S1 = np.empty(p.size), np.empty(p.size), np.empty(p.size)
    WA = inst.W * inst.A
    for s in range(0, p.size, step):
        q = p[s:s + step]
        em1 = np.expm1(-(inst.A[:, None] / q[None, :] + inst.kappa * q[None, :] ** (-g)))
        F[s:s + step] = inst.W @ -em1 + inst.C * q
        S0[s:s + step] = inst.W @ em1 + inst.W.sum()
        S1[s:s + step] = WA @ em1 + WA.sum()
    return F, np.maximum(S0, 0.0), np.maximum(S1, 0.0)


def _power_dF(inst: PowerInstance, p: float) -> float:
    """Derivative (22): C − Σ W e^{−u} (A/p² + (2κ/α) p^{−2/α−1})."""
    g = 2.0 / inst.alpha
    u = inst.A / p + inst.kappa * p**-g
    du = inst.A / p**2 + g * inst.kappa * p ** (-g - 1)
    return inst.C - float(np.sum(inst.W * np.exp(-u) * du))


def _power_cell_bounds(inst: PowerInstance, p: np.ndarray, F: np.ndarray, S0: np.ndarray,
                       S1: np.ndarray) -> np.ndarray:
    """Lower bound of (21) on each cell [p_j, p_{j+1}] of sorted grids (along the last axis):
    (F_j + F_{j+1})/2 − L_j h_j / 2 with L_j = max(C, Σ W e^{−u(p_{j+1})} |u'(p_j)|) ≥ |F'|
    on the cell (u decreasing, |u'| = A/p² + (2κ/α) p^{−2/α−1} decreasing in p)."""
    g = 2.0 / inst.alpha
    left = p[..., :-1]
    L = np.maximum(inst.C, S1[..., 1:] / left**2 + g * inst.kappa * left ** (-g - 1) * S0[..., 1:])
    L *= 1 + 1e-12  # the rounding of S0, S1
    cb = 0.5 * (F[..., :-1] + F[..., 1:]) - L * (p[..., 1:] - left) / 2
    return np.minimum(cb, np.minimum(F[..., :-1], F[..., 1:])).ravel()


def power_reference(inst: PowerInstance, x0: float | None = None, *,
                    points: int = 1_000_000, rounds: int = 2, split: int = 64,
                    cap: int = 20_000) -> Reference:
    """Independent reference for (21) (module docstring); ``x0``: e.g. the solver's p."""
    lo, hi = inst.p_min, inst.p_max
    if lo == hi:
        v = exact_power_objective(inst, lo)
        return Reference(lo, float(v), v, float(v) * (1 - 8 * EPS) - 1e-300, "power: p fixed")
    p = np.geomspace(lo, hi, points)
    p[0], p[-1] = lo, hi
    F, S0, S1 = _power_grid(inst, p)
    loc = np.flatnonzero((F[1:-1] <= F[:-2]) & (F[1:-1] <= F[2:])) + 1
    loc = loc[np.argsort(F[loc])[:8]]
    cands = [lo, hi, float(p[int(np.argmin(F))])]
    for j in loc:
        a_, b_ = p[j - 1], p[j + 1]
        if _power_dF(inst, a_) < 0 < _power_dF(inst, b_):
            cands.append(brentq(lambda x: _power_dF(inst, x), a_, b_, xtol=4 * EPS * a_,
                                rtol=4 * EPS, maxiter=200))
    if x0 is not None and math.isfinite(x0) and lo <= x0 <= hi:
        cands.append(float(x0))
    vals = [exact_power_objective(inst, x) for x in cands]
    k = min(range(len(vals)), key=lambda i: vals[i])
    best_x, best_v = float(cands[k]), vals[k]
    ub = float(best_v)
    # Lipschitz lower bound on the cells, refined where a cell could hold a lower value
    tol = 16 * EPS * abs(ub)
    bound = ub - tol
    cb = _power_cell_bounds(inst, p, F, S0, S1)
    left, right = p[:-1], p[1:]
    for r in range(rounds + 1):
        keep = cb < ub - tol
        if r == rounds or keep.sum() > cap:
            if keep.any():
                bound = min(bound, float(np.min(cb[keep])))
            break
        left, right = left[keep], right[keep]
        if left.size == 0:
            break
        sub = np.geomspace(left, right, split + 1, axis=1)
        sub[:, 0], sub[:, -1] = left, right
        Fs, S0s, S1s = (v.reshape(sub.shape) for v in _power_grid(inst, sub.ravel()))
        cb = _power_cell_bounds(inst, sub, Fs, S0s, S1s)
        left, right = sub[:, :-1].ravel(), sub[:, 1:].ravel()
    return Reference(best_x, ub, best_v, bound - 16 * EPS * abs(ub), "power: log grid")
