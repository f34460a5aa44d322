"""Theorem 1 evaluated: the per-round contraction (5) and the unrolled risk-gap bound (6).

For module m with η = 1/L (MODEL.md (5)-(6), after [10]):

    E[F(θ_m^{t+1}) − F*] ≤ A_m^t E[F(θ_m^t) − F*] + B_m^t
    A_m^t = 1 − μ/L + (4 μ ξ₂ / L) S_m^t,   B_m^t = (2 ξ₁ / L) S_m^t,
    S_m^t = Σ_k ω_k (1 − x_{k,m}^t q_{k,m}^t)

Derivation (so the branch below is checkable): with aggregation over the received uploads,
θ' = θ − (1/L)(∇F − o), and the descent lemma gives F(θ') ≤ F(θ) − ‖∇F‖²/(2L) + ‖o‖²/(2L).
With ‖∇F_k‖² ≤ ξ₁ + ξ₂‖∇F‖² (Assumption 3), ‖o‖ ≤ 2(1 − W)√(ξ₁ + ξ₂‖∇F‖²) where W is the
received ω-mass, so E‖o‖² ≤ 4 S (ξ₁ + ξ₂‖∇F‖²). Then ‖∇F‖² ≥ 2μ(F − F*) gives A above as
long as 4ξ₂S ≤ 1. When 4ξ₂S > 1 the ‖∇F‖² coefficient changes sign and ‖∇F‖² ≤ 2L(F − F*)
must be used instead: A = 4ξ₂S (ours; MODEL.md's formula would then understate A).

Unrolled, (6) is Π_t A^t · gap₀ + Σ_t B^t Π_{s>t} A^s, the recursion above started at the
foundation model's measured gap. Its third term (heterogeneity of the UEs' ensembles,
ℓ·dist(θ_m*, θ_k*)) concerns a UE's ensemble loss, not F(θ_m) − F*, and is not added here.

On the dense synthetic backend, μ and L are the Hessian eigenvalue bounds of
:meth:`DenseSyntheticBackend.smoothness`, F* solves the centralised problem, and (ξ₁, ξ₂) is an
upper envelope of max_k ‖∇F_k‖² against ‖∇F‖² over the points the run visited.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends.base import SupportsTheoremOracle
from .errors import ConfigError

__all__ = ["coefficients", "unrolled_bound", "fit_envelope", "TheoremTracker", "evaluate_bound"]


def coefficients(x: np.ndarray, q: np.ndarray, omega: np.ndarray, mu: float, L: float,
                 xi1: float, xi2: float) -> tuple[np.ndarray, np.ndarray]:
    """A_m^t and B_m^t of (5) from x, q (T, K, M) and ω (K,); each (T, M)."""
    x = np.asarray(x, dtype=float)
    q = np.asarray(q, dtype=float)
    S = np.einsum("k,tkm->tm", np.asarray(omega, float), 1.0 - x * q)
    A = np.where(4 * xi2 * S <= 1.0, 1.0 - mu / L + 4 * mu * xi2 * S / L, 4 * xi2 * S)
    B = 2.0 * xi1 * S / L
    return A, B


def unrolled_bound(gap0: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(6): the bound on F(θ_m^t) − F* for t = 0..T, shape (T+1, M), from gap₀ (M,)."""
    T, M = A.shape
    out = np.empty((T + 1, M))
    out[0] = gap0
    for t in range(T):  # T rounds, vectorised over modules
        out[t + 1] = A[t] * out[t] + B[t]
    return out


def fit_envelope(gk_max: np.ndarray, g_sq: np.ndarray, score=None,
                 n_grid: int = 60) -> tuple[float, float]:
    """(ξ₁, ξ₂) with max_k ‖∇F_k‖² ≤ ξ₁ + ξ₂ ‖∇F‖² at every visited point (an upper envelope).

    For each ξ₂ on a grid (0 and log-spaced up to the largest ratio), ξ₁ is the smallest value
    that covers every point; ``score(ξ₁, ξ₂)`` (default ξ₁ + ξ₂ · mean ‖∇F‖²) picks the pair.
    """
    gk = np.ravel(gk_max)
    g = np.ravel(g_sq)
    hi = float(np.max(gk / np.maximum(g, 1e-300)))
    grid = np.concatenate([[0.0], np.geomspace(1e-3, max(hi, 2e-3), n_grid)])
    best, best_score = (float(gk.max()), 0.0), np.inf
    for xi2 in grid:
        xi1 = max(float(np.max(gk - xi2 * g)), 0.0)
        s = score(xi1, xi2) if score else xi1 + xi2 * float(g.mean())
        if s < best_score:
            best, best_score = (xi1, float(xi2)), s
    return best


class TheoremTracker:
    """A round observer (:class:`fedopt.fl.round.RoundObserver`) that records, at every
    module's θ_m^t before each round, F(θ_m^t) − F*, max_k ‖∇F_k‖² and ‖∇F‖², on a backend
    with the exact oracle (:class:`~fedopt.backends.SupportsTheoremOracle`: the dense
    synthetic backend). F*, θ* and (μ, L) are computed once, here."""

    def __init__(self, oracle: SupportsTheoremOracle,
                 smoothness: tuple[float, float] | None = None) -> None:
        if not isinstance(oracle, SupportsTheoremOracle):
            raise ConfigError("--bound needs the dense synthetic backend (backend=synthetic, dense=true)")
        self.oracle = oracle
        self.F_star, self.theta_star = oracle.optimum()
        self.mu, self.L = smoothness if smoothness is not None else oracle.smoothness()
        n = np.asarray(oracle.data_sizes(), float)
        self.omega = n / n.sum()
        self.trace: dict[str, list] = {"gap": [], "gk_max": [], "g_sq": []}

    def record(self, params: list) -> None:
        """One entry per module of ``params`` (θ^t)."""
        gaps, gk, g = [], [], []
        for p in params:
            Fk, grads = self.oracle.local_objectives(p["W"])
            grad_F = np.tensordot(self.omega, grads, axes=1)
            gaps.append(float(self.omega @ Fk) - self.F_star)
            gk.append(float((grads**2).sum(axis=(1, 2)).max()))
            g.append(float((grad_F**2).sum()))
        self.trace["gap"].append(gaps)
        self.trace["gk_max"].append(gk)
        self.trace["g_sq"].append(g)

    def on_plan(self, engine, plan) -> None:
        if len(self.trace["gap"]) == plan.t:  # once per round (a resumed run has the rest)
            self.record(plan.params)

    def on_complete(self, engine, plan, params, row) -> None:
        pass

    def bound(self, x: np.ndarray, q: np.ndarray, lr: float, final_params: list) -> dict[str, Any]:
        """Theorem 1 on the finished run: ``x``, ``q`` (T, K, M) as played, ``final_params``
        θ^T. Returns ``gap`` and ``bound`` (T+1, M), ``A`` and ``B`` (T, M) and the constants."""
        if len(self.trace["gap"]) == len(x):  # the gap after the last round
            self.record(final_params)
        return evaluate_bound(self.trace, np.asarray(x, float), np.asarray(q, float), self.omega,
                              self.mu, self.L, self.F_star, lr,
                              self.oracle.hessian_eigenvalues(self.theta_star))


def evaluate_bound(trace: dict[str, list], x: np.ndarray, q: np.ndarray, omega: np.ndarray,
                   mu: float, L: float, F_star: float, lr: float,
                   hessian_at_optimum: tuple[float, float]) -> dict[str, Any]:
    """(5)-(6) with (ξ₁, ξ₂) fitted to the recorded trace (see the module docstring)."""
    gap = np.asarray(trace["gap"], float)
    gk = np.asarray(trace["gk_max"], float)
    g = np.asarray(trace["g_sq"], float)

    def score(xi1, xi2):
        A, B = coefficients(x, q, omega, mu, L, xi1, xi2)
        return float(unrolled_bound(gap[0], A, B).sum())

    xi1, xi2 = fit_envelope(gk, g, score)
    A, B = coefficients(x, q, omega, mu, L, xi1, xi2)
    bound = unrolled_bound(gap[0], A, B)
    ratio = gap[1:] / np.maximum(bound[1:], 1e-300)  # bound[0] is gap[0] by construction
    return {
        "gap": gap, "bound": bound, "A": A, "B": B,
        "mu": mu, "L": L, "xi1": xi1, "xi2": xi2, "F_star": F_star,
        "lr": lr,
        "hessian_at_optimum": list(hessian_at_optimum),
        "final_gap": gap[-1].tolist(), "final_bound": bound[-1].tolist(),
        "max_ratio": float(ratio.max()) if ratio.size else 0.0,
        "holds": bool(np.all(gap <= bound * (1 + 1e-9) + 1e-12)),
    }
