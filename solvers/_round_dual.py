"""The Lagrangian dual of the round problem (7) in (ν, μ): the band (7d) priced by ν >= 0, the
participation floor Σ x >= F by μ >= 0 (``solve_round(..., method="auto")``, issue 16).

    D(ν, μ) = Σ_{k,m} ω_k Γ_{k,m} + Σ_k L_k(ν, μ) − ν + μ F

with L_k the per-UE subproblem of :mod:`._round_ue`. D is concave (a minimum of affine
functions of (ν, μ)) and every (ν, μ) >= 0 gives a lower bound on (7) (weak duality); with
each L_k replaced by its certified lower bound the bound is certified. D is maximised by
Kelley's cutting planes (a small LP in (ν, μ, t), scipy's HiGHS) with the per-UE oracle's
incumbents as the cuts' values and supergradients (Σ_k b_k − 1, F − Σ_k |S_k|); the LP's
duals weigh the cuts, and the UEs whose minimiser differs between the cuts that carry
weight are the ones the relaxation splits (the "ambiguous" UEs a branch and bound branches
on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from ._bandwidth_core import EPS
from ._round_ue import UEData, UEResult, ue_lagrangian, ue_search

__all__ = ["Restriction", "DualPoint", "dual_value", "maximise_dual"]


@dataclass(frozen=True, eq=False)
class Restriction:
    """A node of the search: the subsets each UE may take (K, n_S) and its powers' range
    [s_lo, s_hi] (K,) in ln p."""

    allowed: np.ndarray
    s_lo: np.ndarray
    s_hi: np.ndarray

    @classmethod
    def root(cls, data: UEData, available: np.ndarray | None = None) -> Restriction:
        allowed = data.sub_ok.copy()
        if available is not None:
            allowed[~available, 1:] = False
        return cls(allowed, np.full(data.K, data.s_min), np.full(data.K, data.s_max))


@dataclass(frozen=True, eq=False)
class DualPoint:
    """D at (ν, μ): ``value`` from the incumbents (>= D), ``bound`` certified (<= D, rounding
    subtracted); the supergradient and the per-UE answer."""

    nu: float
    mu: float
    value: float
    bound: float
    grad: tuple[float, float]
    ue: UEResult


def dual_value(data: UEData, const: float, floor: int, restr: Restriction, nu: float,
               mu: float, tol=None, start: UEResult | None = None) -> DualPoint:
    """D(ν, μ): certified with the per-UE oracle at tolerance ``tol`` (per UE; ``start``: the
    search oracle's answer at the same point); with ``tol=None`` from the uncertified search
    oracle (``bound`` is then −inf)."""
    if tol is None:
        r = ue_search(data, nu, mu, restr.allowed, restr.s_lo, restr.s_hi)
    else:
        r = ue_lagrangian(data, nu, mu, restr.allowed, restr.s_lo, restr.s_hi, tol,
                          start=start)
    lin = -nu + mu * floor
    value = const + math.fsum(r.ub.tolist()) + lin
    rounding = 2.0 * EPS * (abs(const) + math.fsum(np.abs(r.lb).tolist()) + abs(nu) + abs(mu * floor))
    bound = const + math.fsum(r.lb.tolist()) + lin - rounding
    n_pairs = int(data.subs[r.sub].sum())
    grad = (math.fsum(r.b.ravel().tolist()) - 1.0, float(floor - n_pairs))
    return DualPoint(nu, mu, value, bound, grad, r)


def maximise_dual(data: UEData, const: float, floor: int, restr: Restriction,
                  rel_tol: float, scale: float, max_iter: int = 80,
                  start: tuple[float, float] | None = None):
    """Kelley's cutting planes on D over the box [0, ν_max] × [0, μ_max] (μ = 0 without a
    floor). Stops when the LP's model maximum is within ``rel_tol · scale`` of the best value
    found. Returns (best DualPoint, the cuts that carry LP weight with their weights)."""
    live = restr.allowed[:, 1:] & data.sub_ok[:, 1:]
    W_max = float(np.max(np.where(live.any(axis=1), data.W.sum(axis=1), 0.0))) if live.any() else 0.0
    d_max = float(np.max(np.abs(data.d))) if data.d.size else 0.0
    # beyond μ_max every pair pays for itself whatever ν (the floor's price is at most the
    # cost of a pair at its least bandwidth plus the band it takes); beyond ν_max no pair is
    # worth its least bandwidth, S = ∅ everywhere
    lo_min = float(np.min(np.where(data.feasible, data.lo, np.inf))) if data.feasible.any() else 1.0
    c_max = float(np.max(data.cS)) * math.exp(data.s_max)
    nu_max = 2.0 * (W_max + d_max + 1e-300) / lo_min
    mu_max = 0.0 if floor <= 0 else 2.0 * (d_max + W_max + c_max / lo_min + nu_max)
    box_hi = np.array([nu_max, mu_max])

    pts: list[DualPoint] = []

    def evaluate(z):
        p = dual_value(data, const, floor, restr, float(z[0]), float(z[1]))
        pts.append(p)
        return p

    z0 = np.array(start if start is not None else (0.0, 0.0), float)
    z0 = np.clip(z0, 0.0, box_hi)
    best = evaluate(z0)
    if best.grad[0] <= 0 and (floor <= 0 or best.grad[1] <= 0) and z0[0] == 0 and z0[1] == 0:
        return best, [(best, 1.0)]  # (0, 0) is a maximiser: both supergradients point inward
    weights = [(best, 1.0)]
    dims = 2 if mu_max > 0 else 1
    r = box_hi.copy()  # trust region: half widths around the best point
    for _ in range(max_iter):
        # max t s.t. t <= value_i + g_i·(z − z_i) over the trust region, in coordinates
        # u in [0, 1] of the region and t = best + s_t τ (HiGHS works to absolute tolerances)
        z_b = np.array([best.nu, best.mu])
        lo_B = np.maximum(0.0, z_b - r)
        width = np.minimum(box_hi, z_b + r) - lo_B
        width = np.where(width > 0, width, 1.0)
        G = np.array([p.grad for p in pts])[:, :dims] * width[:dims]
        s_t = max(float(np.max(np.abs(G))), 1e-300)
        Z = np.array([[p.nu, p.mu] for p in pts])[:, :dims]
        V = np.array([p.value for p in pts])
        rhs = (V - best.value + np.sum(np.array([p.grad for p in pts])[:, :dims]
                                       * (lo_B[:dims] - Z), axis=1)) / s_t
        A = np.hstack([-G / s_t, np.ones((len(pts), 1))])
        lp = linprog(np.r_[np.zeros(dims), -1.0], A_ub=A, b_ub=rhs,
                     bounds=[(0.0, 1.0)] * dims + [(None, None)], method="highs")
        if lp.status != 0:
            break
        gain = -lp.fun * s_t  # the model's predicted increase over the best value
        duals = -np.asarray(lp.ineqlin.marginals)
        weights = [(pts[i], float(duals[i])) for i in np.flatnonzero(duals > 1e-12)]
        if gain <= rel_tol * scale:
            break
        z = np.zeros(2)
        z[:dims] = lo_B[:dims] + lp.x[:dims] * width[:dims]
        if any(p.nu == z[0] and p.mu == z[1] for p in pts) or np.all(r <= 1e-13 * (np.abs(z_b) + 1e-300)):
            break  # the cuts are as good as they get
        p = evaluate(z)
        step = np.abs(z - z_b)
        floor_r = 1e-6 * box_hi + 1e-15 * np.abs(z_b)
        if p.value > best.value + 0.1 * gain:  # a good step: a region a few steps wide
            best = p
            r = np.clip(4.0 * step, floor_r, box_hi)
        elif p.value <= best.value:  # the model overestimates here: a smaller region
            r = np.maximum(np.minimum(0.5 * r, 2.0 * step), floor_r)
        else:
            best = p
    return best, weights
