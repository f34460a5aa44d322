"""Aggregation rules of the heterogeneous-rank baselines, on LoRA parameter dicts.

A LoRA adapter is a :data:`~fedopt.backends.Params` dict. Its factor pairs are found by name:
``"A"``/``"B"`` (the synthetic backend) or ``"...lora_A..."``/``"...lora_B..."`` (peft state
dicts). A is (r, n_in) and B is (n_out, r), and the adapter adds ΔW = s · B A to the frozen
weight, with LoRA's scaling s = α / r. Every other key (a classifier head, ...) has the same
shape at every rank and is averaged as in FedAvg.

- :func:`hetlora_aggregate`: HetLoRA [6] (Cho et al., EMNLP 2024, Sec. 3): zero-pad every
  local adapter to the largest rank, then take the weighted mean of the padded A's and B's.
- :func:`flexlora_aggregate`: FlexLoRA [7] (Bai et al., arXiv:2402.11505, Sec. 3.2): the
  weighted mean of the full-size products ΔW = Σ_k p_k s_k B_k A_k, one SVD, and for each
  rank r the truncated factors B = U_r Σ_r / s, A = V_rᵀ (peft's ``add_weighted_adapter(...,
  combination_type="svd")`` puts Σ into B the same way).

All functions are pure: they return new dicts and never modify their inputs.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import Params

__all__ = [
    "lora_pairs",
    "rank_of",
    "pad_rank",
    "truncate_rank",
    "delta_w",
    "fedavg",
    "hetlora_aggregate",
    "flexlora_aggregate",
    "tail_norm",
    "shrink_tail",
]


def _partner(key: str) -> str | None:
    if key == "A":
        return "B"
    if "lora_A" in key:
        return key.replace("lora_A", "lora_B")
    return None


def lora_pairs(params: Params) -> list[tuple[str, str]]:
    """The (A key, B key) of every LoRA factor pair in ``params``, in key order."""
    out = []
    for key in sorted(params):
        partner = _partner(key)
        if partner is not None:
            if partner not in params:
                raise ValueError(f"LoRA factor '{key}' has no partner '{partner}'")
            out.append((key, partner))
    return out


def _other_keys(params: Params) -> list[str]:
    paired = {k for pair in lora_pairs(params) for k in pair}
    return [k for k in params if k not in paired]


def rank_of(params: Params) -> int:
    """The adapter's rank r (the rows of its A factors); every pair must agree."""
    ranks = {int(params[a].shape[0]) for a, _ in lora_pairs(params)}
    if len(ranks) != 1:
        raise ValueError(f"adapter has factor pairs of ranks {sorted(ranks)}; expected one rank")
    return ranks.pop()


def pad_rank(params: Params, r: int) -> Params:
    """Zero-pad every factor pair to rank ``r``: A (r_k, n) -> (r, n), B (m, r_k) -> (m, r)."""
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for a, b in lora_pairs(params):
        A, B = params[a], params[b]
        rk = A.shape[0]
        if rk > r:
            raise ValueError(f"cannot pad rank {rk} down to {r}; use truncate_rank")
        Ap = np.zeros((r,) + A.shape[1:], dtype=A.dtype)
        Bp = np.zeros(B.shape[:-1] + (r,), dtype=B.dtype)
        Ap[:rk] = A
        Bp[..., :rk] = B
        out[a], out[b] = Ap, Bp
    return out


def truncate_rank(params: Params, r: int) -> Params:
    """The first ``r`` components of every factor pair: A[:r], B[:, :r] (HetLoRA's download)."""
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for a, b in lora_pairs(params):
        if params[a].shape[0] < r:
            raise ValueError(f"cannot truncate rank {params[a].shape[0]} up to {r}; use pad_rank")
        out[a] = np.array(params[a][:r], copy=True)
        out[b] = np.array(params[b][..., :r], copy=True)
    return out


def delta_w(params: Params, scale: float) -> dict[str, np.ndarray]:
    """ΔW = s · B A of every factor pair, keyed by the A key; shape (n_out, n_in)."""
    return {a: scale * (params[b] @ params[a]) for a, b in lora_pairs(params)}


def _weights(weights, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=float).ravel()
    if w.shape != (n,):
        raise ValueError(f"{n} adapters but {w.shape[0]} weights")
    if n == 0:
        raise ValueError("no adapters to aggregate")
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("aggregation weights must be finite, >= 0 and not all zero")
    return w / w.sum()


def fedavg(local: list[Params], weights) -> Params:
    """FedAvg: Σ_k p_k θ_k with p normalised to sum to 1 (every adapter the same shape)."""
    p = _weights(weights, len(local))
    return {key: np.tensordot(p, np.stack([q[key] for q in local]), axes=1).astype(
        local[0][key].dtype, copy=False) for key in local[0]}


def hetlora_aggregate(local: list[Params], weights, r_max: int | None = None) -> Params:
    """HetLoRA [6]: zero-pad each local adapter to ``r_max`` (default: the largest local
    rank), then the weighted mean Σ_k p_k pad(θ_k), p normalised to sum to 1.

    Components above a UE's rank count as zeros, so the tail of the global adapter is damped by
    the share of low-rank UEs, as in [6]'s zero-padding aggregation. With equal ranks this is
    FedAvg exactly.
    """
    if r_max is None:
        r_max = max(rank_of(q) for q in local)
    return fedavg([pad_rank(q, r_max) for q in local], weights)


def flexlora_aggregate(local: list[Params], weights, scales, ranks: list[int],
                       out_scales=None) -> tuple[list[Params], dict[str, np.ndarray]]:
    """FlexLoRA [7]: ΔW = Σ_k p_k s_k B_k A_k, its SVD U Σ Vᵀ, and for every rank r in
    ``ranks`` the factors B = U[:, :r] Σ[:r] / s_out, A = Vᵀ[:r] (so s_out B A is the best
    rank-r approximation of ΔW, Eckart-Young).

    ``scales`` (N,): each local adapter's LoRA scaling s_k = α_k / r_k; ``out_scales``
    (len(ranks),): the scaling of each output adapter (default 1, as peft's SVD merge, which
    sets lora_alpha = r). Non-LoRA keys are averaged. Returns (one Params per rank, ΔW).
    """
    p = _weights(weights, len(local))
    s = np.asarray(scales, dtype=float).ravel()
    if s.shape != (len(local),):
        raise ValueError(f"{len(local)} adapters but {s.shape[0]} scales")
    so = np.ones(len(ranks)) if out_scales is None else np.asarray(out_scales, float).ravel()
    pairs = lora_pairs(local[0])
    dW = {a: sum(p[i] * s[i] * (q[b] @ q[a]) for i, q in enumerate(local)) for a, b in pairs}
    others = {k: np.tensordot(p, np.stack([q[k] for q in local]), axes=1)
              for k in _other_keys(local[0])}
    svd = {a: _svd(dW[a], max(ranks)) for a, _ in pairs}
    out = []
    for r, s_out in zip(ranks, so):
        params: Params = {k: v.copy() for k, v in others.items()}
        for a, b in pairs:
            U, S, Vt = svd[a]
            dtype = local[0][a].dtype
            params[a] = np.asarray(Vt[:r], dtype=dtype)
            params[b] = np.asarray(U[:, :r] * (S[:r] / s_out), dtype=dtype)
        out.append(params)
    return out, dW


def _svd(dW: np.ndarray, r_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U (n_out, r_max), S (r_max,), Vᵀ (r_max, n_in) of ΔW, defined beyond its numerical rank.

    Singular values below numpy's rank tolerance are set to 0 and their right singular
    vectors, which any orthonormal completion could be (LAPACK's pick jumps under 1e-17
    perturbations), are replaced by a fixed one: one at a time, the unit basis vector e_j
    farthest from the rows kept, made orthogonal to them (Gram-Schmidt). A component past the rank then starts like a
    fresh LoRA component, B = 0 and A a unit row (ours: [7] leaves the completion open)."""
    U, S, Vt = np.linalg.svd(dW, full_matrices=False)
    tol = S.max(initial=0.0) * max(dW.shape) * np.finfo(float).eps
    k = min(int(np.sum(S > tol)), r_max)
    n_out, n_in = dW.shape
    rows = [Vt[i] for i in range(k)]
    while len(rows) < min(r_max, n_in):
        Q = np.array(rows).reshape(len(rows), n_in)
        resid = np.eye(n_in) - Q.T @ (Q @ np.eye(n_in))  # e_j minus its projection, columns
        resid -= Q.T @ (Q @ resid)  # re-orthogonalised (Kahan: twice is enough)
        j = int(np.argmax(np.linalg.norm(resid, axis=0)))  # the e_j farthest from the span
        rows.append(resid[:, j] / np.linalg.norm(resid[:, j]))
    A = np.zeros((r_max, n_in))
    A[:len(rows)] = np.array(rows)
    Uo = np.zeros((n_out, r_max))
    Uo[:, :k] = U[:, :k]
    So = np.zeros(r_max)
    So[:k] = S[:k]
    return Uo, So, A


def tail_norm(params: Params, keep: int) -> float:
    """‖(B[:, keep:], A[keep:])‖_F over every factor pair: the part HetLoRA's self-pruning
    regulariser [6] penalises (the components a rank cut to ``keep`` would remove)."""
    total = 0.0
    for a, b in lora_pairs(params):
        total += float(np.sum(params[a][keep:] ** 2) + np.sum(params[b][..., keep:] ** 2))
    return float(np.sqrt(total))


def shrink_tail(params: Params, keep: int, threshold: float) -> Params:
    """Proximal step of HetLoRA's self-pruning regulariser λ‖tail‖_F [6] (a group lasso on the
    components above ``keep``): the tail is scaled by max(0, 1 − threshold / ‖tail‖_F), the
    exact prox of ``threshold`` · ‖·‖_F. Components up to ``keep`` are left alone."""
    norm = tail_norm(params, keep)
    factor = 0.0 if norm <= threshold else 1.0 - threshold / norm
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for a, b in lora_pairs(params):
        out[a][keep:] *= factor
        out[b][..., keep:] *= factor
    return out
