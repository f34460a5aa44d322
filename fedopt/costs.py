"""Per-pair round costs u^t of (8) and the estimator of the switching coefficients of (7).

- :func:`switching_init` / :func:`switching_update` / :func:`switching_terms`: a plain-data
  estimator that keeps the last measured loss ℓ_{k,m} and ‖∇F_k(θ₀+θ_m)‖² for every pair and
  turns them into Δ^t (the switching mismatch) and Γ^t = (η/2)‖∇‖² (MODEL.md (7)).
- :class:`RoundSystem`: one round's coefficients (a_k, κ_k, ω_k, S_m, b^min, E^cmp, Δ, Γ) with
  q (15), the energy (4), the round objective Φ + ρΣE of (7) and the costs u of (8).
- :func:`nominal_allocation`: the (p, b) at which unscheduled pairs are priced (MODEL.md (8)).
- :func:`best_vertex`: the switching vertex minimising a linear score under (7b), (7c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "switching_init",
    "switching_update",
    "switching_terms",
    "pair_costs",
    "nominal_allocation",
    "best_vertex",
    "RoundSystem",
]


# --- the estimator of Δ and Γ ------------------------------------------------------------------


def switching_init(K: int, M: int) -> dict:
    """Estimator state: last measured loss and squared gradient norm per pair (NaN: never)."""
    return {"loss": np.full((K, M), np.nan), "grad_sq": np.full((K, M), np.nan),
            "measured_at": np.full((K, M), -1, dtype=np.int64)}


def switching_update(state: dict, loss: np.ndarray, grad_sq: np.ndarray, t: int) -> dict:
    """Keep the last measured ℓ_{k,m} and ‖∇‖²: finite entries overwrite, NaN entries keep the
    previous estimate (MODEL.md (7): "pairs not measured this round keep their last estimate")."""
    loss = np.asarray(loss, dtype=float)
    grad_sq = np.asarray(grad_sq, dtype=float)
    seen = np.isfinite(loss) & np.isfinite(grad_sq)
    return {
        "loss": np.where(seen, loss, state["loss"]),
        "grad_sq": np.where(seen, grad_sq, state["grad_sq"]),
        "measured_at": np.where(seen, int(t), state["measured_at"]),
    }


def _fill(v: np.ndarray, default: float) -> np.ndarray:
    """Unmeasured pairs take their module's mean over the UEs that measured it, else the
    overall mean, else ``default`` (ours)."""
    v = np.array(v, dtype=float)
    known = np.isfinite(v)
    if known.all():
        return v
    overall = float(np.mean(v[known])) if known.any() else default
    col_n = known.sum(axis=0)
    col = np.where(col_n > 0, np.where(known, v, 0.0).sum(axis=0) / np.maximum(col_n, 1), overall)
    return np.where(known, v, col[None, :])


def switching_terms(state: dict, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Δ^t_{k,m} = ℓ_{k,m} − min_{m'} ℓ_{k,m'} ≥ 0 and Γ^t_{k,m} = (η/2)‖∇F_k(θ₀+θ_m)‖² (7).

    Shapes (K, M). With nothing measured yet Δ = 0 and Γ = 0 (costs are then energy only).
    """
    loss = _fill(state["loss"], 0.0)
    Delta = loss - loss.min(axis=1, keepdims=True)
    Gamma = 0.5 * lr * _fill(state["grad_sq"], 0.0)
    return Delta, Gamma


def pair_costs(omega, Delta, Gamma, q, E, rho: float) -> np.ndarray:
    """u_{k,m} = ω_k (Δ_{k,m} − q_{k,m} Γ_{k,m}) + ρ E_{k,m}, eq. (8). Shapes (K,), (K, M)."""
    return np.asarray(omega)[:, None] * (Delta - q * Gamma) + rho * E


def nominal_allocation(x: np.ndarray, p: np.ndarray, b: np.ndarray, b_min: np.ndarray,
                       P_max: float, b_default: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, b) at which every pair is priced (MODEL.md (8), ours).

    Scheduled pairs keep their own (p_k, b_{k,m}). Others get the UE's power this round, or
    P_max if it had none, and b = max(b^min, mean b of the round's scheduled pairs); with no
    scheduled pair the mean is ``b_default``. Returns p (K,), b (K, M).
    """
    x = np.asarray(x) > 0
    on = x.any(axis=1)
    p_nom = np.where(on, p, P_max)
    mean_b = float(np.mean(b[x])) if x.any() else b_default
    with np.errstate(invalid="ignore"):
        b_nom = np.where(x, b, np.maximum(np.where(np.isfinite(b_min), b_min, 1.0), mean_b))
    return p_nom, np.minimum(b_nom, 1.0)


def best_vertex(scores: np.ndarray, feasible: np.ndarray, M_max: int) -> np.ndarray:
    """argmin over 𝒳 ∩ {0,1}^M of ⟨scores_k, x⟩ per row: the ≤ M_max most negative feasible entries.

    ``scores`` (K, M); returns int8 (K, M). Ties at 0 are left unselected.
    """
    s = np.where(feasible, scores, np.inf)
    order = np.argsort(s, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
    return ((rank < M_max) & (s < 0)).astype(np.int8)


# --- one round's coefficients -----------------------------------------------------------------


def _sum(v: np.ndarray) -> float:
    """Exactly rounded fsum for small arrays; numpy's pairwise sum (error ~1e-16 log N) above
    4096 terms, where fsum would dominate the allocator's time at K = 1e4."""
    v = np.ravel(v)
    return math.fsum(v) if v.size <= 4096 else float(np.sum(v))


@dataclass(frozen=True, eq=False)
class RoundSystem:
    """The coefficients of one round's problem (7), shapes (K,) per UE and (K, M) per pair.

    ``a``, ``kappa``: the noise and interference coefficients of (15), with a known fade h_k
    folded in (a_k/h_k, κ_k h_k^{−2/α}); ``omega``: ω_k; ``S``, ``phi`` (M,); ``b_min`` (K, M)
    (inf: misses the deadline); ``E_cmp`` (K, M) computation energy (4); ``Delta``, ``Gamma``.
    """

    a: np.ndarray
    kappa: np.ndarray
    omega: np.ndarray
    S: np.ndarray
    b_min: np.ndarray
    E_cmp: np.ndarray
    Delta: np.ndarray
    Gamma: np.ndarray
    rho: float
    B: float
    theta: float
    alpha: float
    P_min: float
    P_max: float

    @property
    def K(self) -> int:
        return int(self.a.shape[0])

    @property
    def M(self) -> int:
        return int(self.S.shape[0])

    @property
    def rate_per_b(self) -> float:
        """B log2(1+θ): the rate of the whole band (13)."""
        return self.B * math.log2(1.0 + self.theta)

    def q(self, p: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Success probability (15) at p (K,), b (K, M). Shape (K, M)."""
        p = np.asarray(p, dtype=float)[:, None]
        return np.exp(-self.a[:, None] * b / p - self.kappa[:, None] * p ** (-2.0 / self.alpha))

    def E_com(self, p: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Communication energy p_k S_m / (b B log2(1+θ)) of (4). Shape (K, M)."""
        with np.errstate(divide="ignore"):
            return np.asarray(p, dtype=float)[:, None] * self.S[None, :] / (np.asarray(b) * self.rate_per_b)

    def objective(self, x: np.ndarray, p: np.ndarray, b: np.ndarray) -> float:
        """Round objective of (7): Φ + ρ Σ_k E_k, with
        Φ = Σ_k Σ_m ω_k [x Δ + (1 − x q) Γ] (MODEL.md (7)) and E_k of (4)."""
        x = np.asarray(x) > 0
        bb = np.where(x, b, 1.0)
        q = np.where(x, self.q(p, bb), 0.0)
        phi = self.omega[:, None] * (np.where(x, self.Delta, 0.0) + (1.0 - q) * self.Gamma)
        E = np.where(x, self.E_cmp + self.E_com(p, bb), 0.0)
        return _sum(phi) + self.rho * _sum(E)

    def costs(self, p: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """u (8), q (15) and E (4) of every pair priced at (p (K,), b (K, M)). Shapes (K, M)."""
        bb = np.where(np.isfinite(b) & (b > 0), b, 1.0)
        q = self.q(p, bb)
        E = self.E_cmp + self.E_com(p, bb)
        return pair_costs(self.omega, self.Delta, self.Gamma, q, E, self.rho), q, E
