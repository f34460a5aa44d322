"""Certified global method for the power problem (21), vectorised over UEs.

In s = ln p the objective of (21) and its derivatives are, with t₁ = e^{−s}, t₂ = e^{−γs},
γ = 2/α, u_m = A_m t₁ + κ t₂ (so q_m = Y_m = e^{−u_m}) and X_m = A_m t₁ + γκ t₂:

    F(s)  = Σ_m W_m (1 − Y_m) + C e^s                         (21)
    D(s)  = dF/ds = p·F'(p) = C e^s − Σ_m W_m X_m Y_m          (22) times p
    D'(s) = C e^s − Σ_m W_m Y_m (X'_m + X_m²),  X'_m = −A_m t₁ − γ²κ t₂

Why no stationary point can be missed (a certified grid): on any cell [s_a, s_b] each factor
is monotone — X_m and X_m² decrease, Y_m, X'_m and C e^s increase — so interval enclosures
of D and D' on the cell follow from the endpoint values alone (tightened to the endpoint
values of X_m Y_m, resp. Y_m Z_m, where their derivatives Y Z, resp. Y(X³ + 3XX' + X''),
have a certified sign on the cell):

    D  ∈ [C e^{s_a} − Σ W X(s_a) Y(s_b),  C e^{s_b} − Σ W X(s_b) Y(s_a)]
    D' ∈ [C e^{s_a} − Σ W max(Z⁺Y),        C e^{s_b} − Σ W min(Z⁻Y)],
         Z⁻ = X'(s_a) + X(s_b)², Z⁺ = X'(s_b) + X(s_a)², Y ∈ [Y(s_a), Y(s_b)].

Every cell is split until it is *proved* (i) monotone (D's enclosure excludes 0: no
stationary point, the minimum is an endpoint), (ii) convex in s (D' > 0: at most one
stationary point, a minimum, found by safeguarded Newton inside the sign change of D) or
(iii) concave in s (D' < 0: minimum at an endpoint). The global minimum is then the best of
all cell endpoints (which include p_min and p_max) and the Newton roots, and its value is
also the certified lower bound. Cells still undecided after ``max_depth`` splits (only at a
degenerate point where D = D' = 0) keep the rigorous bound F(s_a) + min(0, D_low)(s_b − s_a).
Enclosures get a relative safety margin of 1e-12 against rounding.
"""

from __future__ import annotations

import math

import numpy as np

MARGIN = 1e-12

# Column gathers use ``take`` / ``compress`` rather than ``a[:, idx]``: the same copies,
# several times faster on these (rows, n) arrays at large K (issue 16).


class _Data:
    def __init__(self, W, A, kappa, C, gamma):
        # module-major layout (M, K): sums over modules are then contiguous row additions
        self.WT, self.AT = np.ascontiguousarray(W.T), np.ascontiguousarray(A.T)
        self.kappa, self.C, self.g = kappa, C, gamma

    def at(self, k: np.ndarray, s: np.ndarray):
        """Quantities at points s (n,) of UEs k (n,): X, Y, X' (M, n), Ce, F, D (n,)."""
        W, A = self.WT.take(k, axis=1), self.AT.take(k, axis=1)
        kap = self.kappa[k]
        t1 = np.exp(-s)
        t2 = np.exp(-self.g * s)
        with np.errstate(over="ignore"):  # A/p = inf is q = 0, exactly right
            At1 = A * t1
            kt2 = kap * t2
        em = np.expm1(-(At1 + kt2))  # q − 1, accurate when u is small
        Y = 1.0 + em
        X = At1 + self.g * kt2
        Xp = -At1 - (self.g * self.g) * kt2
        Ce = self.C[k] * np.exp(s)
        F = Ce - np.sum(W * em, axis=0)
        D = Ce - np.sum(W * X * Y, axis=0)
        return X, Y, Xp, Ce, F, D

    def d_and_dd(self, k, s):
        X, Y, Xp, Ce, F, D = self.at(k, s)
        dD = Ce - np.sum(self.WT.take(k, axis=1) * Y * (Xp + X * X), axis=0)
        return D, dD, F


def solve_batch(W, A, kappa, C, alpha, p_min, p_max, grid: int = 4, max_depth: int = 60,
                maxima: bool = True):
    """Global minimiser of (21) for every UE. Arrays W, A (K, M); kappa, C (K,).

    Returns (p (K,), objective (K,), bound (K,), stationary points as a pair of arrays
    (UE index, p), levels, n_cells). The stationary points include the interior local
    maxima only with ``maxima`` (they are never the minimum; finding them costs a Newton
    pass of their own).
    """
    K = W.shape[0]
    gamma = 2.0 / alpha
    p = np.full(K, p_min)
    obj = C * p_min
    bound = obj.copy()
    st_k: list[np.ndarray] = []
    st_s: list[np.ndarray] = []
    live = np.flatnonzero(W.sum(axis=1) > 0)
    if live.size == 0 or p_min == p_max:
        if p_min == p_max and live.size:
            d = _Data(W, A, kappa, C, gamma)
            s = np.full(live.size, math.log(p_min))
            F = d.at(live, s)[4]
            obj[live] = F
            bound[live] = F
        return p, obj, bound, (np.zeros(0, int), np.zeros(0)), 0, 0
    d = _Data(W, A, kappa, C, gamma)
    s0, s1 = math.log(p_min), math.log(p_max)
    # initial grid: points (live, grid+1)
    sg = np.linspace(s0, s1, grid + 1)
    kk = np.repeat(live, grid + 1)
    ss = np.tile(sg, live.size)
    X, Y, Xp, Ce, F, D = d.at(kk, ss)
    n = live.size
    ia = (np.arange(n)[:, None] * (grid + 1) + np.arange(grid)[None, :]).ravel()
    ib = ia + 1
    M = W.shape[1]
    idx, R = _layout(M)
    arr = np.empty((R, ia.size))
    arr[idx["k"]] = kk[ia]
    arr[idx["sa"]], arr[idx["sb"]] = ss[ia], ss[ib]
    arr[idx["Ca"]], arr[idx["Fa"]], arr[idx["Da"]] = Ce[ia], F[ia], D[ia]
    arr[idx["Cb"]], arr[idx["Fb"]], arr[idx["Db"]] = Ce[ib], F[ib], D[ib]
    arr[idx["Xa"]], arr[idx["Ya"]], arr[idx["Xpa"]] = X.take(ia, 1), Y.take(ia, 1), Xp.take(ia, 1)
    arr[idx["Xb"]], arr[idx["Yb"]], arr[idx["Xpb"]] = X.take(ib, 1), Y.take(ib, 1), Xp.take(ib, 1)
    # best endpoint so far per UE (all grid points are candidates)
    cand_k, cand_s, cand_F = [kk], [ss], [F]
    lower = np.full(K, np.inf)  # bounds of degenerate cells
    convex_cells = []
    concave_cells = []
    levels = 0
    n_cells = arr.shape[1]
    while arr.shape[1] and levels <= max_depth:
        levels += 1
        cell = {name: arr[i] for name, i in idx.items()}
        kcell = cell["k"].astype(np.intp)
        Wk = d.WT.take(kcell, axis=1)
        # rounding scale of D: the size of its terms (X Y, not X alone: Y may underflow)
        scale = cell["Cb"] + np.sum(Wk * np.maximum(cell["Xa"] * cell["Yb"], 0.0), axis=0) + 1e-300
        Xa, Xb, Xpa, Xpb = cell["Xa"], cell["Xb"], cell["Xpa"], cell["Xpb"]
        Xa2, Xb2 = Xa * Xa, Xb * Xb
        Zl = Xpa + Xb2
        Zu = Xpb + Xa2
        # each term X_m Y_m is monotone in s where Z_m = X'_m + X_m² keeps its sign
        # (d(XY)/ds = Y Z): then its endpoint values bound it exactly
        XYa = cell["Xa"] * cell["Ya"]
        XYb = cell["Xb"] * cell["Yb"]
        mono = (Zl > 0) | (Zu < 0)
        t_hi = np.where(mono, np.maximum(XYa, XYb), cell["Xa"] * cell["Yb"])
        t_lo = np.where(mono, np.minimum(XYa, XYb), cell["Xb"] * cell["Ya"])
        D_low = cell["Ca"] - np.sum(Wk * t_hi, axis=0)
        D_up = cell["Cb"] - np.sum(Wk * t_lo, axis=0)
        monotone = (D_low > MARGIN * scale) | (D_up < -MARGIN * scale)
        # flat cells: F changes by at most max|D|·width, below 1e-15 of F; keep the
        # rigorous bound F(s_a) + min(0, D_low)·width and stop refining them
        width = cell["sb"] - cell["sa"]
        flat = ~monotone & (np.maximum(np.abs(D_low), np.abs(D_up)) * width
                            <= 1e-15 * np.abs(cell["Fa"]) + 1e-300)
        if flat.any():
            lb = cell["Fa"][flat] + np.minimum(0.0, D_low[flat]) * width[flat]
            np.minimum.at(lower, kcell[flat], lb)
            monotone |= flat
        if monotone.all():
            break
        if monotone.any():  # done with these: their minimum is an endpoint (a candidate)
            keep = ~monotone
            arr = arr.compress(keep, axis=1)
            cell = {name: arr[i] for name, i in idx.items()}
            kcell = kcell[keep]
            Wk, Zl, Zu, D_low = (Wk.compress(keep, 1), Zl.compress(keep, 1), Zu.compress(keep, 1),
                                 D_low[keep])
            Xa, Xb, Xpa, Xpb = cell["Xa"], cell["Xb"], cell["Xpa"], cell["Xpb"]
            Xa2, Xb2 = Xa2.compress(keep, 1), Xb2.compress(keep, 1)
        T_up = np.maximum(Zu * cell["Ya"], Zu * cell["Yb"])
        T_low = np.minimum(Zl * cell["Ya"], Zl * cell["Yb"])
        # T_m = Y_m Z_m is monotone where G = X³ + 3 X X' + X'' keeps its sign
        # (dT/ds = Y G; X'' = −γX − (1+γ)X' decreases): then its endpoint values bound it
        X2a = -gamma * Xa - (1 + gamma) * Xpa
        X2b = -gamma * Xb - (1 + gamma) * Xpb
        G_low = Xb2 * Xb + 3 * Xa * Xpa + X2b
        G_up = Xa2 * Xa + 3 * Xb * Xpb + X2a
        monoT = (G_low > 0) | (G_up < 0)
        if monoT.any():
            Ta = cell["Ya"] * (Xpa + Xa2)
            Tb = cell["Yb"] * (Xpb + Xb2)
            T_up = np.where(monoT, np.maximum(Ta, Tb), T_up)
            T_low = np.where(monoT, np.minimum(Ta, Tb), T_low)
        scale2 = cell["Cb"] + np.sum(Wk * cell["Yb"] * (Xa2 - Xpa), axis=0) + 1e-300
        DD_low = cell["Ca"] - np.sum(Wk * T_up, axis=0)
        DD_up = cell["Cb"] - np.sum(Wk * T_low, axis=0)
        convex = DD_low > MARGIN * scale2
        concave = ~convex & (DD_up < -MARGIN * scale2)
        # convex cells with a sign change of D hold one interior minimum
        sc = convex & (cell["Da"] < 0) & (cell["Db"] > 0)
        if sc.any():
            convex_cells.append(arr.compress(sc, axis=1))
        sm_ = concave & (cell["Da"] > 0) & (cell["Db"] < 0)  # one local maximum inside
        if sm_.any():
            concave_cells.append(arr.compress(sm_, axis=1))
        undecided = ~(convex | concave)
        if levels > max_depth or n_cells > 64 * n + 10_000:  # cap: keep rigorous bounds
            u = undecided
            if u.any():
                lb = cell["Fa"][u] + np.minimum(0.0, D_low[u]) * (cell["sb"][u] - cell["sa"][u])
                np.minimum.at(lower, kcell[u], lb)
            break
        if not undecided.any():
            break
        c = arr.compress(undecided, axis=1)
        kc = kcell[undecided]
        sm = 0.5 * (c[idx["sa"]] + c[idx["sb"]])
        Xm, Ym, Xpm, Cm, Fm, Dm = d.at(kc, sm)
        cand_k.append(kc)
        cand_s.append(sm)
        cand_F.append(Fm)
        left = c.copy()
        left[idx["sb"]], left[idx["Cb"]], left[idx["Fb"]], left[idx["Db"]] = sm, Cm, Fm, Dm
        left[idx["Xb"]], left[idx["Yb"]], left[idx["Xpb"]] = Xm, Ym, Xpm
        c[idx["sa"]], c[idx["Ca"]], c[idx["Fa"]], c[idx["Da"]] = sm, Cm, Fm, Dm
        c[idx["Xa"]], c[idx["Ya"]], c[idx["Xpa"]] = Xm, Ym, Xpm
        arr = np.concatenate([left, c], axis=1)
        n_cells += arr.shape[1]
    # Newton in each convex cell with a sign change
    if convex_cells:
        cc = np.concatenate(convex_cells, axis=1)
        kc = cc[idx["k"]].astype(np.intp)
        sa, sb = cc[idx["sa"]], cc[idx["sb"]]
        s_root, F_root = _newton(d, kc, sa, sb, cc[idx["Da"]], cc[idx["Db"]])
        cand_k.append(kc)
        cand_s.append(s_root)
        cand_F.append(F_root)
        st_k.append(kc)
        st_s.append(s_root)
        # F is convex in s on the cell, so it lies above its tangent at the root found:
        # min F >= F(x) + min(D(x)(s_a − x), D(x)(s_b − x)); an inexact root only lowers it
        D_root = d.at(kc, s_root)[5]
        tangent = F_root + np.minimum(D_root * (sa - s_root), D_root * (sb - s_root))
        np.minimum.at(lower, kc, tangent)
    if concave_cells and maxima:  # local maxima, reported only
        cc = np.concatenate(concave_cells, axis=1)
        kc = cc[idx["k"]].astype(np.intp)
        s_root, _ = _newton(d, kc, cc[idx["sa"]], cc[idx["sb"]], -cc[idx["Da"]],
                            -cc[idx["Db"]], sign=-1.0)
        st_k.append(kc)
        st_s.append(s_root)
    best_F = np.full(K, np.inf)
    best_s = np.full(K, s0)
    _update_best(best_F, best_s, np.concatenate(cand_k), np.concatenate(cand_s),
                 np.concatenate(cand_F))
    p[live] = np.exp(best_s[live])
    p[live] = np.where(best_s[live] == s0, p_min, np.where(best_s[live] == s1, p_max, p[live]))
    p = np.clip(p, p_min, p_max)
    obj[live] = best_F[live]
    bound[live] = np.minimum(best_F[live], lower[live])
    stationary = ((np.concatenate(st_k), np.exp(np.concatenate(st_s))) if st_k
                  else (np.zeros(0, int), np.zeros(0)))
    return p, obj, bound, stationary, levels, n_cells


def _layout(M: int) -> tuple[dict, int]:
    """Rows of the packed cell array (R, n): scalars, then the (M,) endpoint vectors."""
    names = ["k", "sa", "sb", "Ca", "Fa", "Da", "Cb", "Fb", "Db"]
    idx: dict = {name: i for i, name in enumerate(names)}
    off = len(names)
    for name in ("Xa", "Ya", "Xpa", "Xb", "Yb", "Xpb"):
        idx[name] = slice(off, off + M)
        off += M
    return idx, off


def _update_best(best_F, best_s, k, s, F):
    """Per UE, keep the candidate point with the least objective."""
    np.minimum.at(best_F, k, F)
    hit = F == best_F[k]
    best_s[k[hit]] = s[hit]


def _newton(d: _Data, k, lo, hi, Dlo, Dhi, max_iter: int = 100, sign: float = 1.0):
    """Root of sign·D(s) on [lo, hi] where it is increasing (certified), negative at lo and
    positive at hi: Newton from the secant point, safeguarded by bisection.
    Returns (s, F(s))."""
    lo, hi = lo.copy(), hi.copy()
    s = lo - Dlo * (hi - lo) / (Dhi - Dlo)
    s = np.where((s > lo) & (s < hi), s, 0.5 * (lo + hi))
    out_s = s.copy()
    out_F = np.zeros_like(s)
    idx = np.arange(s.size)
    kk = k
    for _ in range(max_iter):
        D, dD, F = d.d_and_dd(kk, s)
        D, dD = sign * D, sign * dD
        out_s[idx] = s
        out_F[idx] = F
        neg = D < 0
        lo = np.where(neg, s, lo)
        hi = np.where(neg, hi, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = D / dD
        sn = s - step
        done = (np.abs(step) <= 4e-16 * np.maximum(1.0, np.abs(s))) | (D == 0) | (hi - lo <= 4e-16 * np.maximum(1.0, np.abs(s)))
        bad = ~((sn > lo) & (sn < hi)) & ~done
        sn = np.where(bad, 0.5 * (lo + hi), sn)
        if done.all():
            break
        keep = ~done
        idx, kk, s, lo, hi = idx[keep], kk[keep], sn[keep], lo[keep], hi[keep]
    return out_s, out_F
