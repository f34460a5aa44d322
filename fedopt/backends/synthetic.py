"""The synthetic training backend: the embedded default, pure numpy, no downloads.

The "foundation model" θ₀ is a frozen random feature map φ(x) = [relu(W₀ x + b₀) / √h, 1]
followed by a base classifier head W_base (C × h₁), pre-trained on a domain-shifted copy of
the data. Module m adapts the head's weight:

- LoRA (default): W = W_base + s_m B_m A_m with B_m (C × r_m), A_m (r_m × h₁), s_m = α_m / r_m
  (LoRA's scaling; α_m = 2 r_m by default). B starts at zero, A at N(0, 1/h₁), as in LoRA.
- ``dense=True``: W = W_base + Δ_m with a full matrix Δ_m (C × h₁) and the L2 term (l2/2)‖Δ‖².
  Each local objective F_k(Δ) = CE_k(W_base + Δ) + (l2/2)‖Δ‖² is then l2-strongly convex and
  L-smooth (Assumption 1), which :mod:`fedopt.bound` needs.

Data: a Gaussian mixture with C classes in ``input_dim`` dimensions, split over the K UEs by a
Dirichlet(α_dir) label skew and the population's quantity skew |D_k| = ``population.n_data``.
Each UE has a test split drawn from its own label distribution; a global test set is uniform
over the classes.

Every call works on a whole :class:`PairBatch` at once: the pairs' parameters are stacked
(LoRA ranks zero-padded to the batch's largest rank, which keeps the padding exactly zero under
gradient steps) and every local step is a handful of batched matrix products. Only slicing the results
back into per-pair dicts touches pairs one at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import (
    Evaluation,
    LocalResult,
    ModuleSpec,
    PairBatch,
    Params,
    ensemble_evaluation,
    weighted_mean_aggregate,
)

__all__ = ["SyntheticBackend", "DenseSyntheticBackend", "OPTIONS"]

# option -> default; every key may be set from the run config (flat namespace)
OPTIONS: dict[str, Any] = {
    "classes": 10,  # C
    "input_dim": 16,  # dimension of the Gaussian mixture
    "features": 64,  # width h of the frozen feature map (the "foundation model")
    "separation": 0.8,  # class means ~ N(0, separation^2 I)
    "dense": False,  # full-matrix adapter + L2 (strongly convex) instead of LoRA
    "l2": None,  # L2 weight; None: 0.01 dense, 0 LoRA
    "full_batch": False,  # every local step uses the UE's whole training set
    "test_per_ue": 50,  # size of each UE's test split
    "global_test": 2000,  # size of the global test set
    "probe_batch": 32,  # samples of a probe (ignored with full_batch: the whole set)
    "pretrain_samples": 400,  # domain-shifted samples the base head is fitted on
    "domain_shift": 1.0,  # std of the class-mean shift of the pre-training domain
    "data_dir": None,  # unused by this backend (the data are generated)
}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class SyntheticBackend:
    """Multinomial logistic regression on frozen random features with LoRA (or dense) adapters.

    ``cfg`` is a :class:`fedopt.config.SystemConfig` (K, α_dir, local batch); ``population``
    gives |D_k|; ``seed`` fixes data, features and the sampling stream.
    """

    name = "synthetic"
    OPTIONS = OPTIONS

    def __new__(cls, cfg=None, population=None, seed=0, **options: Any):
        """``dense=True`` builds a :class:`DenseSyntheticBackend` (Theorem 1's oracle)."""
        if cls is SyntheticBackend and options.get("dense"):
            cls = DenseSyntheticBackend
        return super().__new__(cls)

    def __init__(self, cfg, population, seed: int | np.random.SeedSequence = 0, **options: Any):
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ConfigError(f"synthetic backend: unknown option '{sorted(unknown)[0]}'")
        opt = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
        self.options = opt
        self.C = int(opt["classes"])
        self.h1 = int(opt["features"]) + 1
        self.dense = bool(opt["dense"])
        self.l2 = float(opt["l2"] if opt["l2"] is not None else (0.01 if self.dense else 0.0))
        self.full_batch = bool(opt["full_batch"])
        self.batch = int(cfg.batch)
        self.probe_batch = int(opt["probe_batch"])
        if self.C < 2:
            raise ConfigError(f"classes: need at least 2, got {self.C}")
        self.num_ues = int(population.K)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        data_ss, stream_ss = ss.spawn(2)
        self._build_data(cfg, population, np.random.default_rng(data_ss), opt)
        self.rng = np.random.default_rng(stream_ss)

    # --- data ----------------------------------------------------------------------------

    def _build_data(self, cfg, population, rng: np.random.Generator, opt: dict) -> None:
        C, d_in, h = self.C, int(opt["input_dim"]), int(opt["features"])
        means = rng.normal(0.0, float(opt["separation"]), (C, d_in))
        W0 = rng.normal(0.0, 1.0 / np.sqrt(d_in), (h, d_in))
        b0 = rng.normal(0.0, 0.5, h)

        def features(x: np.ndarray) -> np.ndarray:
            z = np.maximum(x @ W0.T + b0, 0.0) / np.sqrt(h) * 2.0
            return np.concatenate([z, np.ones((x.shape[0], 1))], axis=1)

        def sample(labels: np.ndarray, mu: np.ndarray = means) -> np.ndarray:
            return mu[labels] + rng.normal(0.0, 1.0, (labels.shape[0], d_in))

        K = self.num_ues
        n = np.asarray(population.n_data, dtype=int)
        props = rng.dirichlet(np.full(C, float(cfg.alpha_dir)), K)  # label skew, (K, C)
        tr_y = [rng.choice(C, n[k], p=props[k]) for k in range(K)]
        te_y = [rng.choice(C, int(opt["test_per_ue"]), p=props[k]) for k in range(K)]
        self.y_train = np.concatenate(tr_y)
        self.x_train = features(sample(self.y_train))
        self.start = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(int)
        self.n = n
        self.train_ue = np.repeat(np.arange(K), n)
        self.y_test = np.concatenate(te_y)
        self.x_test = features(sample(self.y_test))
        self.test_ue = np.repeat(np.arange(K), [len(y) for y in te_y])
        self.y_global = rng.integers(0, C, int(opt["global_test"]))
        self.x_global = features(sample(self.y_global))
        self.label_props = props
        # the foundation model's head: logistic regression on a domain-shifted pre-training set
        shifted = means + rng.normal(0.0, float(opt["domain_shift"]), means.shape)
        y_pre = rng.integers(0, C, int(opt["pretrain_samples"]))
        x_pre = features(sample(y_pre, shifted))
        W = np.zeros((C, self.h1))
        onehot = np.eye(C)[y_pre]
        for _ in range(300):  # plain GD on the convex pre-training loss, small L2
            G = (_softmax(x_pre @ W.T) - onehot).T @ x_pre / len(y_pre) + 1e-3 * W
            W -= 2.0 * G
        self.W_base = W

    def data_sizes(self) -> np.ndarray:
        return self.n.astype(float).copy()

    # --- modules -------------------------------------------------------------------------

    def _scale(self, spec: ModuleSpec) -> float:
        alpha = spec.lora_alpha if spec.lora_alpha is not None else 2.0 * spec.rank
        return float(alpha) / spec.rank

    def init_modules(self, specs: list[ModuleSpec]) -> list[Params]:
        self.specs = list(specs)
        self.scales = np.array([self._scale(s) for s in specs])
        out = []
        for s in specs:
            if self.dense:
                out.append({"W": np.zeros((self.C, self.h1))})
            else:
                A = self.rng.normal(0.0, 1.0 / np.sqrt(self.h1), (s.rank, self.h1))
                out.append({"A": A, "B": np.zeros((self.C, s.rank))})
        return out

    def num_params(self, spec: ModuleSpec) -> int:
        return self.C * self.h1 if self.dense else spec.rank * (self.C + self.h1)

    def module_size_bits(self, spec: ModuleSpec, bits_per_param: int = 16) -> int:
        return int(self.num_params(spec) * bits_per_param)

    # --- batched math --------------------------------------------------------------------

    def _stack(self, pairs: PairBatch, params: list[Params]) -> dict[str, np.ndarray]:
        """The pairs' parameters stacked: dense W (N, C, h1); LoRA A (N, r, h1), B (N, C, r)."""
        m = pairs.module
        if self.dense:
            return {"W": np.stack([params[j]["W"] for j in range(len(params))])[m]}
        r = max(params[j]["A"].shape[0] for j in np.unique(m)) if len(m) else 1
        A = np.zeros((len(params), r, self.h1))
        B = np.zeros((len(params), self.C, r))
        for j, p in enumerate(params):  # M modules, not N pairs
            rj = min(p["A"].shape[0], r)
            A[j, :rj] = p["A"][:rj]
            B[j, :, :rj] = p["B"][:, :rj]
        return {"A": A[m], "B": B[m]}

    def _weights(self, theta: dict[str, np.ndarray], s: np.ndarray) -> np.ndarray:
        if self.dense:
            return self.W_base + theta["W"]
        return self.W_base + s[:, None, None] * (theta["B"] @ theta["A"])

    def _sample(self, ue: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (N, b) into the training set and their weights (N, b) summing to 1."""
        n = self.n[ue]
        if size is None:  # the whole local set, padded to the largest
            b = int(n.max()) if len(n) else 1
            j = np.arange(b)[None, :]
            valid = j < n[:, None]
            idx = self.start[ue][:, None] + np.where(valid, j, 0)
            return idx, valid / n[:, None]
        u = self.rng.random((len(ue), size))
        idx = self.start[ue][:, None] + (u * n[:, None]).astype(int)
        return idx, np.full((len(ue), size), 1.0 / size)

    def _loss_grad(self, theta: dict[str, np.ndarray], s: np.ndarray, idx: np.ndarray,
                   w: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-pair objective (N,) and its gradient wrt the adapter, on rows ``idx`` weighted ``w``."""
        X = self.x_train[idx]  # (N, b, h1)
        y = self.y_train[idx]
        Z = X @ self._weights(theta, s).transpose(0, 2, 1)  # batched matmul, (N, b, C)
        logp = _log_softmax(Z)
        ce = -(np.take_along_axis(logp, y[..., None], axis=-1)[..., 0] * w).sum(axis=1)
        G = np.exp(logp)
        G[np.arange(G.shape[0])[:, None], np.arange(G.shape[1])[None, :], y] -= 1.0
        G *= w[..., None]
        dW = G.transpose(0, 2, 1) @ X  # (N, C, h1)
        if self.dense:
            W = theta["W"]
            return ce + 0.5 * self.l2 * (W**2).sum(axis=(1, 2)), {"W": dW + self.l2 * W}
        A, B = theta["A"], theta["B"]
        grads = {"A": s[:, None, None] * (B.transpose(0, 2, 1) @ dW),
                 "B": s[:, None, None] * (dW @ A.transpose(0, 2, 1))}
        reg = 0.0
        if self.l2:
            reg = 0.5 * self.l2 * ((A**2).sum(axis=(1, 2)) + (B**2).sum(axis=(1, 2)))
            grads["A"] += self.l2 * A
            grads["B"] += self.l2 * B
        return ce + reg, grads

    @staticmethod
    def _sq_norm(grads: dict[str, np.ndarray]) -> np.ndarray:
        return sum((g**2).sum(axis=tuple(range(1, g.ndim))) for g in grads.values())

    def _unstack(self, pairs: PairBatch, delta: dict[str, np.ndarray]) -> list[Params]:
        if self.dense:
            return [{"W": delta["W"][i]} for i in range(len(pairs))]
        ranks = np.array([s.rank for s in self.specs])[pairs.module]
        return [{"A": delta["A"][i, : ranks[i]], "B": delta["B"][i, :, : ranks[i]]}
                for i in range(len(pairs))]

    # --- the protocol --------------------------------------------------------------------

    def local_update(self, pairs: PairBatch, params: list[Params], steps: int, lr: float
                     ) -> LocalResult:
        """``steps`` SGD steps of size ``lr`` for every pair at once (minibatches of cfg.batch,
        or the whole local set with ``full_batch``). Loss: mean over the steps; ‖∇‖²: at the
        start. D_k^t = steps × batch, or |D_k| with ``full_batch``."""
        N = len(pairs)
        if N == 0:
            return LocalResult([], np.zeros(0), np.zeros(0), np.zeros(0))
        theta0 = self._stack(pairs, params)
        theta = {k: v.copy() for k, v in theta0.items()}
        s = self.scales[pairs.module]
        losses = np.zeros(N)
        grad_sq = None
        for _ in range(int(steps)):
            idx, w = self._sample(pairs.ue, None if self.full_batch else self.batch)
            loss, grads = self._loss_grad(theta, s, idx, w)
            if grad_sq is None:
                grad_sq = self._sq_norm(grads)
            losses += loss
            for k in theta:
                theta[k] -= lr * grads[k]
        delta = {k: theta[k] - theta0[k] for k in theta}
        n_samples = (self.n[pairs.ue].astype(float) if self.full_batch
                     else np.full(N, float(steps * self.batch)))
        return LocalResult(self._unstack(pairs, delta), losses / max(int(steps), 1),
                           grad_sq if grad_sq is not None else np.zeros(N), n_samples)

    def probe(self, pairs: PairBatch, params: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        """(loss, ‖∇‖²) (N,) on ``probe_batch`` samples of each pair's data (the whole local
        set with ``full_batch``, where they are exactly F_k and ‖∇F_k‖²)."""
        if len(pairs) == 0:
            return np.zeros(0), np.zeros(0)
        theta = self._stack(pairs, params)
        idx, w = self._sample(pairs.ue, None if self.full_batch else self.probe_batch)
        loss, grads = self._loss_grad(theta, self.scales[pairs.module], idx, w)
        return loss, self._sq_norm(grads)

    def aggregate(self, module: int, params: Params, updates: list[Params], weights: np.ndarray
                  ) -> Params:
        return weighted_mean_aggregate(params, updates, weights)

    def _module_weights(self, params: list[Params]) -> np.ndarray:
        """W_base + adapter of every module, (M, C, h1)."""
        if self.dense:
            return self.W_base + np.stack([p["W"] for p in params])
        return np.stack([self.W_base + s * (p["B"] @ p["A"]) for p, s in zip(params, self.scales)])

    def evaluate(self, params: list[Params], ensembles: np.ndarray) -> Evaluation:
        """Eq. (3) (:func:`~fedopt.backends.base.ensemble_evaluation`): UE k's logits are the
        mean of its subscribed modules' logits (every module before its first subscription),
        on its own test split; the global test set uses the uniform ensemble of all modules."""
        Wm = self._module_weights(params)
        logits = np.stack([self.x_test @ W.T for W in Wm])  # (M, n, C); M BLAS calls
        g_logits = np.stack([self.x_global @ W.T for W in Wm])
        return ensemble_evaluation(logits, self.y_test, ensembles, self.n / self.n.sum(),
                                   sample_ue=self.test_ue, global_logits=g_logits,
                                   global_labels=self.y_global)

    # --- checkpointing -------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class DenseSyntheticBackend(SyntheticBackend):
    """The synthetic backend with dense adapters (``dense=True``): each F_k is l2-strongly
    convex and L-smooth, and the exact quantities of Theorem 1 are available
    (:class:`~fedopt.backends.base.SupportsTheoremOracle`)."""

    # --- exact quantities of the dense problem, for Theorem 1 ------------------------------

    def local_objectives(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F_k(Δ) (K,) and ∇F_k(Δ) (K, C, h1) on every UE's whole local set."""
        Z = self.x_train @ (self.W_base + delta).T
        logp = _log_softmax(Z)
        rows = np.arange(len(self.y_train))
        ce = -logp[rows, self.y_train]
        G = np.exp(logp)
        G[rows, self.y_train] -= 1.0
        G /= self.n[self.train_ue][:, None]
        F = np.add.reduceat(ce, self.start) / self.n + 0.5 * self.l2 * (delta**2).sum()
        outer = G[:, :, None] * self.x_train[:, None, :]  # (n, C, h1)
        grads = np.add.reduceat(outer, self.start, axis=0) + self.l2 * delta
        return F, grads

    def global_objective(self, delta: np.ndarray) -> tuple[float, np.ndarray]:
        """F(Δ) = Σ_k ω_k F_k(Δ) and its gradient (C, h1)."""
        Z = self.x_train @ (self.W_base + delta).T
        logp = _log_softmax(Z)
        rows = np.arange(len(self.y_train))
        N = len(self.y_train)
        G = np.exp(logp)
        G[rows, self.y_train] -= 1.0
        F = -logp[rows, self.y_train].sum() / N + 0.5 * self.l2 * (delta**2).sum()
        return float(F), G.T @ self.x_train / N + self.l2 * delta

    def smoothness(self) -> tuple[float, float]:
        """(μ, L) of Assumption 1, valid for every F_k at every point.

        The Hessian of F_k is (1/n_k) Σ_i (diag p_i − p_i p_iᵀ) ⊗ φ_i φ_iᵀ + l2 I. The softmax
        block has eigenvalues in [0, 1/2], so λ_max ≤ λ_max(Φ_kᵀΦ_k / n_k) / 2 + l2 = L_k, and
        λ_min → l2 as the logits saturate: μ = l2, L = max_k L_k.
        """
        L = 0.0
        for k in range(self.num_ues):  # K eigenproblems of size h1, once per run
            X = self.x_train[self.start[k]: self.start[k] + self.n[k]]
            L = max(L, float(np.linalg.eigvalsh(X.T @ X / self.n[k])[-1]) / 2.0 + self.l2)
        return self.l2, L

    def hessian_eigenvalues(self, delta: np.ndarray) -> tuple[float, float]:
        """(λ_min, λ_max) of the exact Hessian of F at Δ (for reporting)."""
        P = _softmax(self.x_train @ (self.W_base + delta).T)
        N, C, h1 = len(self.y_train), self.C, self.h1
        H = np.zeros((C * h1, C * h1))
        for c in range(C):  # block (c, c') = Σ_i (δ_cc' p_ic − p_ic p_ic') φ_i φ_iᵀ / N
            for c2 in range(c, C):
                wgt = (P[:, c] * ((c == c2) - P[:, c2])) / N
                blk = (self.x_train * wgt[:, None]).T @ self.x_train
                H[c * h1:(c + 1) * h1, c2 * h1:(c2 + 1) * h1] = blk
                H[c2 * h1:(c2 + 1) * h1, c * h1:(c + 1) * h1] = blk.T
        ev = np.linalg.eigvalsh(H)
        return float(ev[0] + self.l2), float(ev[-1] + self.l2)

    def optimum(self) -> tuple[float, np.ndarray]:
        """F* and θ* of the centralised strongly convex problem (L-BFGS to ‖∇F‖ ≤ 1e-10)."""
        from scipy.optimize import minimize

        shape = (self.C, self.h1)

        def fun(v):
            F, g = self.global_objective(v.reshape(shape))
            return F, g.ravel()

        res = minimize(fun, np.zeros(shape).ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": 20000, "gtol": 1e-11, "ftol": 0.0, "maxcor": 30})
        delta = res.x.reshape(shape)
        F, g = self.global_objective(delta)
        # the residual gradient bounds the error: F(θ) − F* ≤ ‖∇F‖² / (2 μ)
        return F - float((g**2).sum()) / (2 * self.l2), delta
