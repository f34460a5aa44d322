"""The offline benchmark: the LP relaxation of (8) over all T rounds with every u^t known.

Declarative CVXPY (MODEL.md, (8)-(9)); solved by :func:`fedopt.online.hindsight.solve_hindsight`
with HiGHS or Clarabel. Decision x ∈ [0,1]^{T×K×M}, stored as a (T·K, M) variable (row t·K + k):

    min   (1/T) Σ_t Σ_k ⟨u_k^t, x_k^t⟩
    s.t.  0 ≤ x_k^t ≤ feasible_k^t                     (7c) relaxed; infeasible pairs at 0
          1ᵀ x_k^t ≤ M_max                            (7b)
          (1/T) Σ_t 1ᵀ x_k^t ≥ β            ∀k        (7f)
          (1/T) Σ_t ⟨E_k^t, x_k^t⟩ ≤ Ē_k    ∀k        optional energy budget
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

__all__ = ["hindsight_problem"]


def hindsight_problem(costs: np.ndarray, feasible: np.ndarray, beta: float, M_max: int,
                      energy: np.ndarray | None = None, energy_budget: float = 0.0
                      ) -> tuple[cp.Problem, cp.Variable]:
    """Build the hindsight LP. ``costs``, ``feasible``, ``energy``: (T, K, M). Returns
    (problem, x) with x of shape (T·K, M)."""
    T, K, M = costs.shape
    U = costs.reshape(T * K, M)
    F = np.asarray(feasible, dtype=float).reshape(T * K, M)
    x = cp.Variable((T * K, M), name="x")
    # S sums the T rows of each UE: (K, T·K) with S[k, t·K + k] = 1
    S = sp.csr_matrix((np.ones(T * K), (np.tile(np.arange(K), T), np.arange(T * K))), shape=(K, T * K))
    per_round = cp.sum(x, axis=1)  # (T·K,)
    cons = [x >= 0, x <= F, per_round <= M_max, S @ per_round >= beta * T]
    if energy_budget > 0 and energy is not None:
        E = np.asarray(energy, dtype=float).reshape(T * K, M)
        cons.append(S @ cp.sum(cp.multiply(E, x), axis=1) <= energy_budget * T)
    obj = cp.Minimize(cp.sum(cp.multiply(U, x)) / T)
    return cp.Problem(obj, cons), x
