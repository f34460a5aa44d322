"""The fast path: cached frozen prefix + all (UE, module) pairs through one batched LoRA stack.

Three things make a round cheap, on a CPU or a GPU:

- *Frozen-prefix caching.* LoRA sits on the top L blocks only, so the hidden states entering
  block n - L never change. They are computed once per example and kept unpadded in fp16
  (:class:`PrefixCache`); each batch is padded only to its own longest sentence. With LoRA in
  every block (L = n) the cache holds the embedding output: it still saves the embedding pass
  and lets every batch be cut to its own length.
- *Pair batching.* The P pairs of a call are stacked along the batch axis and run through one
  copy of the top blocks whose target linears are :class:`BatchedLoraLinear`: the frozen
  weight once, then a per-pair ``bmm`` with that pair's A (P, r, in) and B (P, out, r). Ranks
  differ per pair, so A and B are zero-padded to the largest rank; padded entries get exactly
  zero gradient. peft keeps ``scaling`` as a Python float per adapter and ``torch.func.vmap``
  fails inside transformers' mask code, hence this layer of our own.
- A per-pair mean-pooling head: logits (P, B, C) = pooled (P, B, H) @ W_p^T + b_p.

Pairs train independently: the summed loss has a block-diagonal Hessian over pairs, so the
gradient with respect to pair p's stack slice is exactly pair p's own gradient.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict

import torch
from torch import nn

from .lora_model import mean_pool

__all__ = ["BatchedLoraLinear", "TopStack", "PrefixCache", "prefix_cache", "PairStacks", "LeafGroups", "plan_groups", "pad_examples"]


class BatchedLoraLinear(nn.Module):
    """y = W x + b + scale_p * B_p A_p x for the rows of pair p (peft LoRA's forward, batched)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.A: torch.Tensor | None = None  # (P, r, in)
        self.B: torch.Tensor | None = None  # (P, out, r)
        self.scale: torch.Tensor | None = None  # (P,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.A is None:
            return y
        P = self.A.shape[0]
        xs = x.reshape(P, -1, x.shape[-1])  # rows of pair p are contiguous: (P, B*S, in)
        delta = torch.bmm(torch.bmm(xs, self.A.transpose(1, 2)), self.B.transpose(1, 2))
        return y + (delta * self.scale.view(P, 1, 1)).reshape(y.shape)


class PairStacks:
    """Per-pair trainable tensors for one pass: LoRA A/B per (layer, target) and the heads.

    ``lora[(layer, target)] = (A (P, r_max, in), B (P, out, r_max), scale (P,))``;
    ``head = (W (P, C, H), b (P, C))``. A and B and the head are leaves with requires_grad.
    """

    def __init__(self, lora: dict, head: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.lora = lora
        self.head = head

    def select(self, idx: list[int]) -> PairStacks:
        """The stacks of pairs ``idx`` (differentiable gathers of the leaves)."""
        if idx == list(range(self.head[0].shape[0])):
            return self
        ix = torch.as_tensor(idx, dtype=torch.long, device=self.head[0].device)
        lora = {k: (A[ix], B[ix], s[ix]) for k, (A, B, s) in self.lora.items()}
        return PairStacks(lora, (self.head[0][ix], self.head[1][ix]))

    def leaves(self) -> list[torch.Tensor]:
        """The trainable tensors, in a fixed order: (A, B) per slot, then the head's W, b."""
        out = []
        for A, B, _ in self.lora.values():
            out += [A, B]
        return out + list(self.head)

    def to(self, device) -> PairStacks:
        """The stacks on ``device`` (trainable tensors and scales)."""
        lora = {k: (A.to(device), B.to(device), s.to(device)) for k, (A, B, s) in self.lora.items()}
        return PairStacks(lora, (self.head[0].to(device), self.head[1].to(device)))

    def replace(self, tensors: list[torch.Tensor]) -> PairStacks:
        """The same slots and scales with new trainable tensors (in :meth:`leaves` order)."""
        it = iter(tensors)
        lora = {k: (next(it), next(it), s) for k, (_, _, s) in self.lora.items()}
        return PairStacks(lora, (next(it), next(it)))


class LeafGroups:
    """The trainable stacks of P pairs held as one leaf tensor per (stack tensor, group).

    An optimizer keeps one step counter per parameter tensor, and AdamW's bias correction
    depends on it; pairs whose kept optimizer state has different step counts therefore train
    as separate leaves (one group each), while the forward pass still sees all P pairs at once
    through :meth:`stacks` (a differentiable concatenation). Everything else in AdamW and SGD
    is elementwise, so a group's leaf trains each of its rows exactly as a separate optimizer
    would train that pair alone.
    """

    def __init__(self, stacks: PairStacks, groups: list[list[int]]) -> None:
        self.template = stacks
        self.groups = [list(g) for g in groups]
        order = [p for g in self.groups for p in g]
        self.inverse = torch.argsort(torch.as_tensor(order, dtype=torch.long))
        device = stacks.head[0].device
        self.leaves = [[t.detach()[torch.as_tensor(g, dtype=torch.long, device=device)].clone()
                        .requires_grad_(True) for t in stacks.leaves()] for g in self.groups]

    def assemble(self, per_group: list[list[torch.Tensor]]) -> PairStacks:
        """Per-group tensors (in :meth:`PairStacks.leaves` order) back in pair order."""
        if len(per_group) == 1 and self.groups[0] == list(range(len(self.groups[0]))):
            return self.template.replace(per_group[0])
        ix = self.inverse.to(per_group[0][0].device)
        return self.template.replace([torch.cat(parts)[ix] for parts in zip(*per_group)])

    def stacks(self) -> PairStacks:
        """The current stacks of all P pairs, differentiable with respect to the leaves."""
        return self.assemble(self.leaves)

    def grad_sq(self, eps: float | None = None) -> torch.Tensor:
        """||grad||^2 of every pair (P,), float64, from the leaves' ``.grad``; with ``eps``,
        sum g^2 / (|g| + eps) instead (:func:`gamma_terms`)."""
        out = torch.zeros(len(self.inverse), dtype=torch.float64, device=self.leaves[0][0].device)
        for g, leaves in zip(self.groups, self.leaves):
            for leaf in leaves:
                term = gamma_terms(leaf.grad.double().flatten(1), eps)
                out[torch.as_tensor(g, device=out.device)] += term.sum(1)
        return out


def gamma_terms(g: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Elementwise terms of the G in Γ = (η/2) G: g² (MODEL.md's ‖∇F‖²), or with ``eps``
    g² / (|g| + eps), AdamW's first-step decrease (``gamma: optimizer``)."""
    return g.pow(2) if eps is None else g.pow(2) / (g.abs() + eps)


class TopStack(nn.Module):
    """A private copy of the top blocks with every LoRA target replaced by BatchedLoraLinear."""

    def __init__(self, layers: list[nn.Module], first: int, targets: set[str], config) -> None:
        super().__init__()
        self.first = first
        self.config = config
        self.blocks = nn.ModuleList([copy.deepcopy(layer) for layer in layers])
        self.slots: dict[tuple[int, str], BatchedLoraLinear] = {}
        for j, block in enumerate(self.blocks):
            for name, mod in list(block.named_modules()):
                if isinstance(mod, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
                    parent_name, _, attr = name.rpartition(".")
                    parent = block.get_submodule(parent_name) if parent_name else block
                    wrapped = BatchedLoraLinear(mod)
                    setattr(parent, attr, wrapped)
                    self.slots[(first + j, name)] = wrapped
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, stacks: PairStacks) -> torch.Tensor:
        """hidden (P*B, S, H) entering block ``first``; returns logits (P, B, C)."""
        from transformers.masking_utils import create_bidirectional_mask

        for key, slot in self.slots.items():
            slot.A, slot.B, slot.scale = stacks.lora.get(key, (None, None, None))
        try:
            ext = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
            h = hidden
            for block in self.blocks:
                out = block(h, ext)
                h = out[0] if isinstance(out, tuple) else out
        finally:
            for slot in self.slots.values():
                slot.A = slot.B = slot.scale = None
        W, b = stacks.head
        P = W.shape[0]
        with torch.autocast(device_type=h.device.type, enabled=False):  # the head in fp32
            pooled = mean_pool(h.float(), mask).reshape(P, -1, h.shape[-1])  # (P, B, H)
            return torch.baddbmm(b.unsqueeze(1), pooled, W.transpose(1, 2))


def plan_groups(lengths: list[int], rows_per_pair: int, overhead: int = 256) -> list[list[int]]:
    """Split pairs into passes of similar padded length (per-batch padding across pairs).

    One pass pads every row to its longest sequence, so mixing a short batch with a long one
    wastes compute. Pairs sorted by their batch's longest sequence are cut into contiguous
    groups minimising Σ_groups (rows x longest + ``overhead``) by dynamic programming;
    ``overhead`` is the fixed cost of one pass in padded-token units. Returns index lists.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    L = [lengths[i] for i in order]
    n = len(L)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # group = order[i:j], padded to L[j-1]
            c = best[i] + (j - i) * rows_per_pair * L[j - 1] + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    groups = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


class _Stop(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


class PrefixCache:
    """Hidden states entering block ``first`` for a list of tokenised examples, unpadded.

    Stored as one flat (total_tokens, H) tensor in ``dtype`` with per-example offsets, on the
    encoder's device. Built by running the frozen encoder (in fp32) with a pre-hook on block
    ``first`` that captures its input and stops the forward pass there, so no block above it is
    ever computed. For ``first = 0`` (LoRA in every block) it holds the embedding layer's
    output: word + position + token-type embeddings after their LayerNorm, exactly what block
    0 receives.
    """

    def __init__(self, encoder: nn.Module, block: nn.Module, examples: list[dict], pad_id: int,
                 dtype: torch.dtype, batch_size: int = 64, progress: bool = False,
                 desc: str = "cache") -> None:
        from tqdm.auto import tqdm

        lengths = torch.tensor([len(e["input_ids"]) for e in examples], dtype=torch.long)
        self.lengths = lengths  # on the host: padding plans never wait for the device
        self.offsets = torch.zeros(len(examples) + 1, dtype=torch.long)
        self.offsets[1:] = torch.cumsum(lengths, 0)
        hidden_size = encoder.config.hidden_size
        self.device = next(encoder.parameters()).device
        self.flat = torch.empty(int(self.offsets[-1]), hidden_size, dtype=dtype, device=self.device)
        self._lengths = lengths.to(self.device)
        self._offsets = self.offsets.to(self.device)

        order = torch.argsort(lengths, descending=True).tolist()  # similar lengths share a batch
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress,
                          leave=False):
            idx = order[start:start + batch_size]
            h = _capture(encoder, block, pad_examples([examples[i] for i in idx], pad_id))
            ix = torch.as_tensor(idx, dtype=torch.long)
            pos = torch.arange(h.shape[1])
            real = pos[None, :] < lengths[ix][:, None]  # (n, S): the real tokens, row-major
            dest = (self.offsets[ix][:, None] + pos[None, :])[real]
            self.flat[dest.to(self.device)] = h[real.to(self.device)].to(dtype)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def nbytes(self) -> int:
        return self.flat.element_size() * self.flat.numel()

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (n, S, H) float32, mask (n, S)) padded to the longest of ``idx``: one gather
        on the device, padding positions exactly zero."""
        S = int(self.lengths[idx].max())
        ix = torch.as_tensor(idx, dtype=torch.long).to(self.device)
        pos = torch.arange(S, device=self.device)
        real = pos[None, :] < self._lengths[ix][:, None]  # (n, S)
        src = torch.where(real, self._offsets[ix][:, None] + pos[None, :], 0)
        hidden = self.flat[src].float() * real[..., None]
        return hidden, real.long()


_MEMO: OrderedDict[str, PrefixCache] = OrderedDict()
MEMO_SIZE = 4  # a train and a test cache for two data splits; QNLI's pair is ~250 MB


def _capture(encoder: nn.Module, block: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """The hidden states entering ``block`` for the padded batch ``enc`` (the forward pass
    stops there)."""

    def hook(module, args, kwargs):
        raise _Stop(args[0] if args else kwargs["hidden_states"])

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(encoder.parameters()).device
    try:
        with torch.no_grad():
            encoder(**{k: v.to(device) for k, v in enc.items()})
        raise RuntimeError("prefix cache: the hooked block was never reached")
    except _Stop as stop:
        return stop.hidden
    finally:
        handle.remove()


def _fingerprint(encoder: nn.Module, block: nn.Module, examples: list[dict], pad_id: int,
                 dtype: torch.dtype) -> str:
    """SHA-1 of what a prefix cache depends on: every example's token ids (and types), the pad
    id, the storage dtype, and the frozen prefix itself, identified by its output on the first
    few examples (so LoRA adapters above the cut, which differ between schemes, do not count)."""
    device = next(encoder.parameters()).device
    h = hashlib.sha1(f"{pad_id}|{dtype}|{device}|{len(examples)}".encode())
    for e in examples:
        for key in ("input_ids", "token_type_ids"):
            if key in e:
                h.update(key.encode())
                h.update(torch.as_tensor(e[key], dtype=torch.int64).numpy().tobytes())
    if examples:
        probe = _capture(encoder, block, pad_examples(examples[:4], pad_id))
        h.update(probe.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def prefix_cache(encoder: nn.Module, block: nn.Module, examples: list[dict],
                 pad_id: int, dtype: torch.dtype, batch_size: int = 64, progress: bool = False,
                 desc: str = "cache") -> PrefixCache:
    """A :class:`PrefixCache`, reused when one with the same content fingerprint was built in
    this process (the schemes of one figure share a seed's data split and the frozen model, so
    only the first of them pays for the frozen forward pass). Caches are read-only once built."""
    key = _fingerprint(encoder, block, examples, pad_id, dtype)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    cache = PrefixCache(encoder, block, examples, pad_id, dtype, batch_size=batch_size,
                        progress=progress, desc=desc)
    _MEMO[key] = cache
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return cache


def pad_examples(examples: list[dict], pad_id: int, length: int | None = None
                 ) -> dict[str, torch.Tensor]:
    """Right-pad tokenised examples to the longest (or to ``length``): input_ids, attention_mask
    and token_type_ids when present."""
    S = length or max(len(e["input_ids"]) for e in examples)
    out = {"input_ids": torch.full((len(examples), S), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(len(examples), S, dtype=torch.long)}
    has_types = "token_type_ids" in examples[0]
    if has_types:
        out["token_type_ids"] = torch.zeros(len(examples), S, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        out["input_ids"][row, :n] = torch.as_tensor(e["input_ids"])
        out["attention_mask"][row, :n] = 1
        if has_types:
            out["token_type_ids"][row, :n] = torch.as_tensor(e["token_type_ids"])
    return out
