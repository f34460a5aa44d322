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

    def subset(self, k: np.ndarray) -> _Data:
        """The data of UEs k (n,), in that order (then ``at(None, s)`` needs no gathers)."""
        d = _Data.__new__(_Data)
        d.WT, d.AT = self.WT.take(k, axis=1), self.AT.take(k, axis=1)
        d.kappa, d.C, d.g = self.kappa[k], self.C[k], self.g
        return d

    def at(self, k: np.ndarray | None, s: np.ndarray):
        """Quantities at points s (n,) of UEs k (n,) (None: all, in order): X, Y, X' (M, n),
        Ce, F, D (n,), views of :meth:`points`."""
        E = self.points(k, s)
        S, CE, FF, DD, X_, Y_, XP = _rows(self.WT.shape[0])
        return E[X_], E[Y_], E[XP], E[CE], E[FF], E[DD]

    def points(self, k: np.ndarray | None, s: np.ndarray, out: np.ndarray | None = None,
               exps: list | None = None) -> np.ndarray:
        """s, Ce, F, D, X, Y, X' at points s (n,) of UEs k (n,) (None: all, in order) packed
        into one array (R, n) (rows of :func:`_rows`), in ``out`` if given. ``exps``:
        e^{−s}, e^{−γs}, e^s if known."""
        M = self.WT.shape[0]
        S, CE, FF, DD, X_, Y_, XP = _rows(M)
        E = np.empty((4 + 3 * M, s.size)) if out is None else out
        if k is None:
            W, A, kap, C = self.WT, self.AT, self.kappa, self.C
        else:
            W, A = self.WT.take(k, axis=1), self.AT.take(k, axis=1)
            kap, C = self.kappa[k], self.C[k]
        t1, t2, es = exps if exps is not None else (np.exp(-s), np.exp(-self.g * s), None)
        with np.errstate(over="ignore"):  # A/p = inf is q = 0, exactly right
            At1 = A * t1
            kt2 = kap * t2
        em = np.expm1(-(At1 + kt2))  # q − 1, accurate when u is small
        X, Y = E[X_], E[Y_]
        np.add(1.0, em, out=Y)
        np.add(At1, self.g * kt2, out=X)
        np.subtract(-At1, (self.g * self.g) * kt2, out=E[XP])
        E[S] = s
        Ce = np.multiply(C, np.exp(s) if es is None else es, out=E[CE])
        np.subtract(Ce, np.sum(W * em, axis=0), out=E[FF])
        np.subtract(Ce, np.sum(W * X * Y, axis=0), out=E[DD])
        return E

    def d_and_dd(self, s):
        """D, D' and F at points s (n,) of every UE of this data (a :meth:`subset`)."""
        X, Y, Xp, Ce, F, D = self.at(None, s)
        dD = Ce - np.sum(self.WT * Y * (Xp + X * X), axis=0)
        return D, dD, F


def cell_cap(n_live: int) -> int:
    """The cells :func:`solve_batch` refines for n_live UEs at most (then it stops with bounds).
    Below it, every UE is solved on its own: its answer depends on its row alone."""
    return 64 * n_live + 10_000


def solve_batch(W, A, kappa, C, alpha, p_min, p_max, grid: int = 4, max_depth: int = 60,
                maxima: bool = True, cells: np.ndarray | None = None):
    """Global minimiser of (21) for every UE. Arrays W, A (K, M); kappa, C (K,).

    Returns (p (K,), objective (K,), bound (K,), stationary points as a pair of arrays
    (UE index, p), levels, n_cells). The stationary points include the interior local
    maxima only with ``maxima`` (they are never the minimum; finding them costs a Newton
    pass of their own). ``cells`` (K,) int, if given, gets each UE's cell count added.
    """
    K = W.shape[0]
    W, A = _compact(W, A)
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
    M = W.shape[1]
    S, CE, FF, DD, X_, Y_, XP = _rows(M)
    n = live.size
    # initial grid, point-major: point j of UE live[i] is column j·n + i, so the cells
    # (points j, j+1) are two column ranges of P, views (no packing)
    sg = np.linspace(s0, s1, grid + 1)
    kk = np.tile(live, grid + 1)
    ss = np.repeat(sg, n)
    # e^{−s}, e^{−γs}, e^s once per grid value (the same values as per point)
    P = d.points(kk, ss, exps=[np.repeat(np.exp(v), n) for v in (-sg, -gamma * sg, sg)])
    Ea, Eb = P[:, :grid * n], P[:, n:]  # the cells' ends a and b: rows of _rows(M)
    kcell = np.tile(live, grid)
    # candidate points (all grid points and midpoints, then Newton roots); per UE they keep
    # the order of the splits, which breaks exact ties in F (_update_best)
    cand_k, cand_s, cand_F = [kk], [ss], [P[FF]]
    lower = np.full(K, np.inf)  # bounds of degenerate cells
    convex_cells = []
    concave_cells = []
    levels = 0
    n_cells = Ea.shape[1]
    if cells is not None:
        cells[live] += grid
    while Ea.shape[1] and levels <= max_depth:
        levels += 1
        Wk = d.WT.take(kcell, axis=1)
        Xa, Ya, Xpa, Xb, Yb, Xpb = Ea[X_], Ea[Y_], Ea[XP], Eb[X_], Eb[Y_], Eb[XP]
        # rounding scale of D: the size of its terms (X Y, not X alone: Y may underflow)
        scale = Eb[CE] + np.sum(Wk * np.maximum(Xa * Yb, 0.0), axis=0) + 1e-300
        Xa2, Xb2 = Xa * Xa, Xb * Xb
        Zl = Xpa + Xb2
        Zu = Xpb + Xa2
        # each term X_m Y_m is monotone in s where Z_m = X'_m + X_m² keeps its sign
        # (d(XY)/ds = Y Z): then its endpoint values bound it exactly
        XYa = Xa * Ya
        XYb = Xb * Yb
        mono = (Zl > 0) | (Zu < 0)
        t_hi = np.where(mono, np.maximum(XYa, XYb), Xa * Yb)
        t_lo = np.where(mono, np.minimum(XYa, XYb), Xb * Ya)
        D_low = Ea[CE] - np.sum(Wk * t_hi, axis=0)
        D_up = Eb[CE] - np.sum(Wk * t_lo, axis=0)
        monotone = (D_low > MARGIN * scale) | (D_up < -MARGIN * scale)
        # flat cells: F changes by at most max|D|·width, below 1e-15 of F; keep the
        # rigorous bound F(s_a) + min(0, D_low)·width and stop refining them
        width = Eb[S] - Ea[S]
        flat = ~monotone & (np.maximum(np.abs(D_low), np.abs(D_up)) * width
                            <= 1e-15 * np.abs(Ea[FF]) + 1e-300)
        if flat.any():
            lb = Ea[FF][flat] + np.minimum(0.0, D_low[flat]) * width[flat]
            np.minimum.at(lower, kcell[flat], lb)
            monotone |= flat
        if monotone.all():
            break
        # monotone cells are done (their minimum is an endpoint, a candidate); the tests
        # below run on every cell (cheaper than compressing), monotone ones masked out
        T_up = np.maximum(Zu * Ya, Zu * Yb)
        T_low = np.minimum(Zl * Ya, Zl * Yb)
        # T_m = Y_m Z_m is monotone where G = X³ + 3 X X' + X'' keeps its sign
        # (dT/ds = Y G; X'' = −γX − (1+γ)X' decreases): then its endpoint values bound it
        X2a = -gamma * Xa - (1 + gamma) * Xpa
        X2b = -gamma * Xb - (1 + gamma) * Xpb
        G_low = Xb2 * Xb + 3 * Xa * Xpa + X2b
        G_up = Xa2 * Xa + 3 * Xb * Xpb + X2a
        monoT = (G_low > 0) | (G_up < 0)
        if monoT.any():
            Ta = Ya * (Xpa + Xa2)
            Tb = Yb * (Xpb + Xb2)
            T_up = np.where(monoT, np.maximum(Ta, Tb), T_up)
            T_low = np.where(monoT, np.minimum(Ta, Tb), T_low)
        scale2 = Eb[CE] + np.sum(Wk * Yb * (Xa2 - Xpa), axis=0) + 1e-300
        DD_low = Ea[CE] - np.sum(Wk * T_up, axis=0)
        DD_up = Eb[CE] - np.sum(Wk * T_low, axis=0)
        convex = ~monotone & (DD_low > MARGIN * scale2)
        concave = ~monotone & ~convex & (DD_up < -MARGIN * scale2)
        # convex cells with a sign change of D hold one interior minimum
        sc = convex & (Ea[DD] < 0) & (Eb[DD] > 0)
        if sc.any():
            convex_cells.append((kcell[sc], Ea[S][sc], Eb[S][sc], Ea[DD][sc], Eb[DD][sc]))
        sm_ = concave & (Ea[DD] > 0) & (Eb[DD] < 0)  # one local maximum inside
        if maxima and sm_.any():
            concave_cells.append((kcell[sm_], Ea[S][sm_], Eb[S][sm_], Ea[DD][sm_], Eb[DD][sm_]))
        undecided = ~(monotone | convex | concave)
        if levels > max_depth or n_cells > cell_cap(n):  # cap: keep rigorous bounds
            u = undecided
            if u.any():
                lb = Ea[FF][u] + np.minimum(0.0, D_low[u]) * (Eb[S][u] - Ea[S][u])
                np.minimum.at(lower, kcell[u], lb)
            break
        if not undecided.any():
            break
        # split: the left halves (a, mid) come first, then the right halves (mid, b)
        nu = int(np.count_nonzero(undecided))
        kc = kcell[undecided]
        sm = 0.5 * (Ea[S][undecided] + Eb[S][undecided])
        new_a, new_b = np.empty((Ea.shape[0], 2 * nu)), np.empty((Ea.shape[0], 2 * nu))
        Em = d.points(kc, sm, out=new_a[:, nu:])
        new_a[:, :nu] = Ea.compress(undecided, axis=1)
        new_b[:, :nu] = Em
        new_b[:, nu:] = Eb.compress(undecided, axis=1)
        cand_k.append(kc)
        cand_s.append(sm)
        cand_F.append(Em[FF])
        Ea, Eb = new_a, new_b
        kcell = np.concatenate([kc, kc])
        n_cells += Ea.shape[1]
        if cells is not None:
            np.add.at(cells, kc, 2)
    # Newton in each convex cell with a sign change
    if convex_cells:
        kc, sa, sb, Da, Db = (np.concatenate(v) for v in zip(*convex_cells))
        s_root, F_root, D_root = _newton(d, kc, sa, sb, Da, Db)
        cand_k.append(kc)
        cand_s.append(s_root)
        cand_F.append(F_root)
        st_k.append(kc)
        st_s.append(s_root)
        # F is convex in s on the cell, so it lies above its tangent at the root found:
        # min F >= F(x) + min(D(x)(s_a − x), D(x)(s_b − x)); an inexact root only lowers it
        tangent = F_root + np.minimum(D_root * (sa - s_root), D_root * (sb - s_root))
        np.minimum.at(lower, kc, tangent)
    if concave_cells:  # local maxima, reported only
        kc, sa, sb, Da, Db = (np.concatenate(v) for v in zip(*concave_cells))
        s_root = _newton(d, kc, sa, sb, -Da, -Db, sign=-1.0)[0]
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


def _compact(W: np.ndarray, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W, A with each UE's used module slots (W or A nonzero) first, in their order, and the
    slots no UE uses dropped (BCD's batches: at most M_max of M). An unused slot adds an
    exact 0 to every sum over slots, so the sums, in the same order, are unchanged."""
    used = (W != 0) | (A != 0)
    m = int(used.sum(axis=1).max(initial=0))
    if m == W.shape[1]:
        return W, A
    rows, cols = np.nonzero(used)  # row by row, slots in order
    slot = np.cumsum(used, axis=1)[rows, cols] - 1
    Wc, Ac = np.zeros((W.shape[0], m)), np.zeros((W.shape[0], m))
    Wc[rows, slot], Ac[rows, slot] = W[rows, cols], A[rows, cols]
    return Wc, Ac


def _rows(M: int) -> tuple:
    """Rows of a packed array of points (R, n), R = 4 + 3M: s, C e^s, F, D, then X, Y, X'
    (M rows each)."""
    return 0, 1, 2, 3, slice(4, 4 + M), slice(4 + M, 4 + 2 * M), slice(4 + 2 * M, 4 + 3 * M)


def _update_best(best_F, best_s, k, s, F):
    """Per UE, keep the candidate point with the least objective."""
    np.minimum.at(best_F, k, F)
    hit = F == best_F[k]
    best_s[k[hit]] = s[hit]


def _newton(d: _Data, k, lo, hi, Dlo, Dhi, max_iter: int = 100, sign: float = 1.0):
    """Root of sign·D(s) on [lo, hi] where it is increasing (certified), negative at lo and
    positive at hi: Newton from the secant point, safeguarded by bisection.
    Returns (s, F(s), D(s))."""
    lo, hi = lo.copy(), hi.copy()
    s = lo - Dlo * (hi - lo) / (Dhi - Dlo)
    s = np.where((s > lo) & (s < hi), s, 0.5 * (lo + hi))
    out_s = s.copy()
    out_F = np.zeros_like(s)
    out_D = np.zeros_like(s)
    idx = np.arange(s.size)
    dk = d.subset(k)  # the data of the cells still iterating
    for _ in range(max_iter):
        D, dD, F = dk.d_and_dd(s)
        out_s[idx] = s
        out_F[idx] = F
        out_D[idx] = D
        D, dD = sign * D, sign * dD
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
        keep = np.flatnonzero(~done)
        idx, s, lo, hi = idx[keep], sn[keep], lo[keep], hi[keep]
        dk = dk.subset(keep)
    return out_s, out_F, out_D
