"""Algorithm 2's block coordinate descent over (p, b) for a given switching x, with basin
escapes (``solve_round(..., method="bcd")``; ours where marked).

Moved here from ``fedopt/allocator.py``: the allocator calls
:func:`fedopt.solvers.round.solve_round`. Within one BCD (one round, one x) the escape grid's
ν-free part and the power step's per-UE answers are kept between calls (issue 16: the same
answers, faster at K = 1e4-1e5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..costs import RoundSystem
from ..instances import bandwidth_instance, bandwidth_to_matrix, power_batch
from .bandwidth import solve_bandwidth
from .power import global_powers_memo, solve_power_batch

__all__ = ["RoundOptions", "bcd", "bcd_once", "escape"]

#: Most grid values (G·H·pairs, 8 bytes each) one BCD keeps between its escapes.
GRID_CACHE = 2**25


@dataclass(frozen=True)
class RoundOptions:
    """The heuristics' knobs (see :func:`fedopt.solvers.round.solve_round`)."""

    power_method: str | None = None
    bandwidth_method: str | None = None
    tol: float = 1e-6
    max_iter: int = 30
    escapes: int = 10
    grid_start: bool = True
    max_evals: int = 3000


def bcd(sys_: RoundSystem, x: np.ndarray, p0: np.ndarray | None, opts: RoundOptions):
    """Block coordinate descent over (p, b) for a fixed x (Algorithm 2, step 2), with basin
    escapes.

    Starts from p = P_max (or ``p0``) and b = b^min plus an equal share of the slack;
    alternates power (21), batched over UEs, and bandwidth (16) until the round objective
    changes by less than ``tol`` relative. (p, b) is jointly nonconvex, so BCD can stop at
    a point where neither block improves alone although a UE's joint (p_k, b_k) move does
    (typically: a far UE that should give up on its upload, p_k → P_min, b → b^min).
    :func:`escape` looks for such moves on a per-UE grid of the Lagrangian with the
    bandwidth price ν, and BCD restarts from them while the objective improves
    (``escapes``, ours). Returns (p (K,), b (K, M), objective, iterations, the last
    bandwidth Solution or None).
    """
    x = np.asarray(x, bool)
    grid: dict = {}  # escape's grid, shared by its calls below
    powers: dict = {}  # the power step's per-UE answers, shared likewise
    if opts.grid_start and x.any():
        # initial powers: b for the start powers, then each UE's grid minimiser of its
        # share of the Lagrangian at that b's price ν (fewer BCD sweeps, better basins)
        p_start = np.full(x.shape[0], sys_.P_max) if p0 is None else np.asarray(p0, float)
        pb = bcd_once(sys_, x, p_start, opts, start_with_bandwidth=True, sweeps=0,
                      powers=powers)
        p0 = escape(sys_, x, pb[0], pb[1], every=True, grid=grid)
    # from given powers, the bandwidth step comes first (b would otherwise start cold)
    best = bcd_once(sys_, x, p0, opts, start_with_bandwidth=p0 is not None, powers=powers)
    for _ in range(opts.escapes):
        if best[4] is None:
            break
        moves = escape(sys_, x, best[0], best[1], ranked=True, objective=best[2], grid=grid)
        if moves is None:
            break
        p_all, ranked = moves
        # every flagged UE at once; if that does not pay, the single most promising ones
        tries = [p_all] + [np.where(np.arange(x.shape[0]) == k, p_all, best[0])
                           for k in ranked[:3]] if len(ranked) > 1 else [p_all]
        for p_try in tries:
            cand = bcd_once(sys_, x, p_try, opts, start_with_bandwidth=True, powers=powers)
            if cand[2] < best[2] - 1e-13 * abs(best[2]):
                best = (cand[0], cand[1], cand[2], best[3] + cand[3], cand[4])
                break
        else:
            break
    return best

def bcd_once(sys_: RoundSystem, x: np.ndarray, p0, opts: RoundOptions,
             start_with_bandwidth=False, sweeps: int | None = None, powers: dict | None = None):
    """BCD sweeps from p0 (see :func:`bcd`). ``powers``: a dict kept across the calls of one
    BCD (same round and x), in which the power step keeps its per-UE answers: a UE whose
    power problem (21) is unchanged (its pairs' b at b^min, typically) is not solved again
    (:func:`fedopt.solvers.power.global_powers_memo`; the same p)."""
    powers = {} if powers is None else powers
    K, M = x.shape
    p = np.full(K, sys_.P_max) if p0 is None else np.asarray(p0, float).copy()
    b = np.zeros((K, M))
    if not x.any():
        return p, b, sys_.objective(x, p, b), 0, None
    common = dict(omega=sys_.omega, Gamma=sys_.Gamma, a=sys_.a, kappa=sys_.kappa, S=sys_.S,
                  rho=sys_.rho, B=sys_.B, theta=sys_.theta, alpha=sys_.alpha)
    pkw = {} if opts.power_method is None else {"method": opts.power_method}
    bkw = {} if opts.bandwidth_method is None else {"method": opts.bandwidth_method}
    on = x.any(axis=1)
    sub = dict(common, omega=sys_.omega[on], Gamma=sys_.Gamma[on], a=sys_.a[on],
               kappa=sys_.kappa[on])
    bw = None
    if start_with_bandwidth:
        inst = bandwidth_instance(x=x, p=p, b_min=sys_.b_min, **common)
        bw = solve_bandwidth(inst, **bkw)
        b = bandwidth_to_matrix(inst, np.asarray(bw.x, float))
    else:
        bm = np.where(x, sys_.b_min, 0.0)
        b = np.where(x, bm + (1.0 - bm.sum()) / x.sum(), 0.0)
    obj = sys_.objective(x, p, b)
    it = 0
    for it in range(1, (opts.max_iter if sweeps is None else sweeps) + 1):  # noqa: B007
        # only the UEs with a scheduled pair enter the batch (the others keep p)
        batch = power_batch(x=x[on], b=b[on], p_min=sys_.P_min, p_max=sys_.P_max, **sub)
        p_new = p.copy()
        if opts.power_method in (None, "auto", "global"):
            # BCD uses p alone: the certified minimiser without the bound's bookkeeping
            p_new[on] = global_powers_memo(batch, powers)
        else:
            p_new[on] = np.asarray(solve_power_batch(batch, **pkw).x, float)
        inst = bandwidth_instance(x=x, p=p_new, b_min=sys_.b_min, **common)
        bw_new = solve_bandwidth(inst, **bkw)
        b_new = bandwidth_to_matrix(inst, np.asarray(bw_new.x, float))
        new = sys_.objective(x, p_new, b_new)
        if new <= obj or opts.power_method == "max":  # keep the best point
            p, b, bw = p_new, b_new, bw_new
        done = abs(obj - new) <= opts.tol * max(abs(new), 1e-300)
        obj = min(obj, new)
        if done:
            break
    # obj is already the objective at the kept (p, b), except for "max" (p kept regardless)
    return p, b, sys_.objective(x, p, b) if opts.power_method == "max" else obj, it, bw

def escape(sys_: RoundSystem, x: np.ndarray, p: np.ndarray, b: np.ndarray,
           n_grid: int | None = None, every: bool = False, ranked: bool = False,
           objective: float | None = None, grid: dict | None = None):
    """Per-UE joint (p_k, b_k) moves that BCD cannot see. With the bandwidth price
    ν = −f_n'(b_n) of (17) at the current point (0 if the band is slack), UE k's share of
    the Lagrangian, Σ_m [ω Γ (1 − q(p, b_m)) + ρ p S_m/(b_m R) + ν b_m], is minimised on a
    log grid of p and of each b_m; UEs whose grid minimum beats their current value get
    the grid's p (``objective``: the round objective at (p, b) if known, else it is
    computed). ``grid``: a dict shared by the escapes of one BCD (same round and x) that
    keeps the ν-free part of the grid (up to :data:`GRID_CACHE` values). Returns the new p
    (K,) (with ``ranked``: and the moving UEs by gain, largest first) or None when no UE
    can improve."""
    K, M = x.shape
    R = sys_.rate_per_b
    ks, ms = np.nonzero(x)
    W = sys_.omega[ks] * sys_.Gamma[ks, ms]
    c = sys_.rho * p[ks] * sys_.S[ms] / R
    a = sys_.a[ks] / p[ks]
    e = np.exp(-sys_.kappa[ks] * p[ks] ** (-2.0 / sys_.alpha))
    bn = b[ks, ms]
    free = (bn > sys_.b_min[ks, ms] * (1 + 1e-9)) & (bn < 1 - 1e-9)
    nu = 0.0
    if math.fsum(memoryview(bn)) >= 1 - 1e-9 and free.any():
        nu = float(np.median(c[free] / bn[free] ** 2 - W[free] * e[free] * a[free] * np.exp(-a[free] * bn[free])))
        nu = max(nu, 0.0)

    A, Kap, Sm = sys_.a[ks], sys_.kappa[ks], sys_.S[ms] * (sys_.rho / R)
    g = 2.0 / sys_.alpha
    # W (1 − q) + ρ p S/(b R) + ν b with q of (15), at the current point per pair
    pk = p[ks]
    cur = np.exp(-(A / pk) * bn)
    cur *= np.exp(-Kap * pk ** (-g))
    cur = W * (1 - cur)
    cur += (Sm * pk) / bn
    cur += nu * bn
    if n_grid is None:  # the grid costs N·G² exponentials: coarser for big rounds
        n_grid = 33 if ks.size <= 1000 else 17
    pg = np.geomspace(sys_.P_min, sys_.P_max, n_grid)
    lo = np.log(sys_.b_min[ks, ms])
    # the grid in layout (G or H, pairs): every operation below runs along the pairs (long
    # contiguous loops, not G-long ones), in chunks of pairs
    bg = np.exp(lo[None, :] + (0.0 - lo)[None, :] * np.linspace(0, 1, n_grid)[:, None])
    ekp = np.exp(-Kap[None, :] * (pg ** (-g))[:, None]) if grid is None or n_grid not in grid \
        else None  # e^{−κ p^{−2/α}} (G, N)
    per = np.empty((n_grid, ks.size))  # best b per p and pair
    # the ν-free part W (1 − q) + ρ p S/(b R) of the grid depends on the round and x only:
    # kept in ``grid`` for the next escape of the same BCD (then one add and a min per call)
    base = None if grid is None else grid.get(n_grid)
    fresh = base is None
    if fresh and grid is not None and n_grid * n_grid * ks.size <= GRID_CACHE:
        base = grid[n_grid] = np.empty((n_grid, n_grid, ks.size))
    step = 8192  # pairs per chunk: long loops; numpy call overhead matters more than L2
    buf, tmp = np.empty((n_grid, step)), np.empty((n_grid, step))
    for i in range(0, ks.size, step):
        sl = slice(i, i + step)
        n = min(step, ks.size - i)
        b_, nub = bg[:, sl], nu * bg[:, sl]
        t = tmp[:, :n]
        for jp in range(n_grid):  # the same operations as `cur`, at p = pg[jp]
            out = buf[:, :n] if base is None else base[jp, :, sl]
            if fresh:
                np.multiply(-(A[sl] / pg[jp]), b_, out=out)
                np.exp(out, out=out)
                np.multiply(ekp[jp, sl], out, out=out)
                np.subtract(1, out, out=out)
                np.multiply(W[sl], out, out=out)
                np.divide(Sm[sl] * pg[jp], b_, out=t)
                out += t
            np.add(out, nub, out=t)
            np.min(t, axis=0, out=per[jp, sl])
    # per-UE sums; pairs come UE by UE (np.nonzero), so a segment sum adds what add.at did
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    users = ks[first]
    tot = np.zeros((K, n_grid))
    tot[users] = np.add.reduceat(per, first, axis=1).T
    now = np.zeros(K)
    now[users] = np.add.reduceat(cur, first)
    j = np.argmin(tot, axis=1)
    gain = now - tot[np.arange(K), j]
    if every:  # the grid's p for every UE (an initial point, not an escape)
        move = x.any(axis=1)
    else:
        if objective is None:
            objective = sys_.objective(x, p, b)
        scale = max(abs(objective), 1e-300)
        move = x.any(axis=1) & (gain > 1e-7 * scale)  # well below the 1e-5 that matters
    if not move.any():
        return None
    out = p.copy()
    out[move] = pg[j[move]]
    if ranked:  # also the moving UEs, largest gain first
        ks_move = np.flatnonzero(move)
        return out, ks_move[np.argsort(-gain[ks_move])].tolist()
    return out
