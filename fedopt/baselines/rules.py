"""HetLoRA [6] and FlexLoRA [7] as aggregation rules of the round engine: :class:`RankLevels`.

Rank levels are modules: the config's ranks (4, 8, 16 by default) become M "virtual" modules
that all hold truncations of one global adapter. UE k may subscribe only to its own level
(its rank r_k, :mod:`.ranks`), so the allocator prices its upload S_{r_k} and compute φ_{r_k}
exactly as for the proposed method, and the same policy schedules who participates (7f).
Aggregation pools every received upload over all levels and hands each level its truncation
of the new global adapter. The pooled weights are D_k / Σ_received D (both papers average
what arrives), whatever the run's ``normalize``.

The rule is a :class:`~fedopt.fl.round.AggregationRule` and a
:class:`~fedopt.fl.round.RestrictsPairs`, so it runs under every driver of the engine
(``fedopt simulate`` and Flower alike).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.base import ModuleSpec, PairBatch, Params
from ..errors import ConfigError
from .aggregation import (
    flexlora_aggregate,
    hetlora_aggregate,
    shrink_tail,
    tail_norm,
    truncate_rank,
)
from .ranks import assign_rank_levels

__all__ = ["RankLevels"]


class RankLevels:
    """One global adapter shared by rank levels (HetLoRA / FlexLoRA).

    ``kind``: ``"hetlora"`` or ``"flexlora"``; ``specs``: the levels (increasing ranks);
    ``system``, ``population``: the UEs' levels (:func:`assign_rank_levels`).
    ``prune_lambda`` > 0 turns on HetLoRA's self-pruning [6]: after local training each
    upload's components above the next lower level get the proximal step of λ‖·‖_F (threshold
    lr · I · λ), and a UE whose tail norm fell since its previous upload moves down one level.
    """

    def __init__(self, kind: str, specs: list[ModuleSpec], system, population, *,
                 prune_lambda: float = 0.0) -> None:
        if kind not in ("hetlora", "flexlora"):
            raise ConfigError(f"rule: 'hetlora' or 'flexlora', got {kind!r}")
        if prune_lambda and kind != "hetlora":
            raise ConfigError("prune_lambda: self-pruning belongs to HetLoRA only")
        ranks = [s.rank for s in specs]
        if any(b <= a for a, b in zip(ranks, ranks[1:])):
            raise ConfigError(f"ranks: rank levels must increase, got {ranks}")
        self.name = kind
        self.ranks = ranks
        self.scales = np.array([(s.lora_alpha or 2.0 * s.rank) / s.rank for s in specs])
        self.prune_lambda = float(prune_lambda)
        self.prune_threshold = float(system.lr * system.local_steps * self.prune_lambda)
        self.level = assign_rank_levels(system, population)
        self.prev_tail = np.full(population.K, np.inf)

    def initial_params(self, params: list[Params]) -> list[Params]:
        top = params[-1]  # one global adapter at the largest rank
        return [truncate_rank(top, r) for r in self.ranks]

    def allowed_pairs(self) -> np.ndarray:
        """(K, M) bool: UE k may subscribe only to its own rank level."""
        mask = np.zeros((self.level.shape[0], len(self.ranks)), bool)
        ok = self.level >= 0
        mask[np.flatnonzero(ok), self.level[ok]] = True
        return mask

    def aggregate(self, params: list[Params], pairs: PairBatch, updates: list[Params | None],
                  n_samples: np.ndarray, received: np.ndarray) -> list[Params]:
        sel = np.flatnonzero(np.asarray(received, bool))
        if sel.size == 0:
            return params
        mods = pairs.module[sel]
        local = [{k: params[m][k] + updates[i][k] for k in params[m]} for i, m in zip(sel, mods)]
        if self.prune_lambda > 0:
            local = self._self_prune(pairs.ue[sel], mods, local)
        w = np.asarray(n_samples, float)[sel]
        if self.name == "hetlora":
            g = hetlora_aggregate(local, w, self.ranks[-1])
            new = [truncate_rank(g, r) for r in self.ranks]
        else:
            new, _ = flexlora_aggregate(local, w, self.scales[mods], self.ranks,
                                        out_scales=self.scales)
        # keep each module's dtype (the SVD and the weighted sums run in float64)
        return [{k: np.asarray(v, dtype=params[m][k].dtype) for k, v in p.items()}
                for m, p in enumerate(new)]

    def _self_prune(self, ues, mods, local):
        out = []
        for k, m, p in zip(ues, mods, local):
            if m == 0:  # the lowest level has nothing left to prune
                out.append(p)
                continue
            keep = self.ranks[m - 1]
            p = shrink_tail(p, keep, self.prune_threshold)
            norm = tail_norm(p, keep)
            # [6]: prune when the regularised tail is gone or keeps shrinking between uploads
            if norm == 0.0 or (np.isfinite(self.prev_tail[k]) and norm < self.prev_tail[k]):
                self.level[k] = m - 1
                self.prev_tail[k] = np.inf
            else:
                self.prev_tail[k] = norm
            out.append(p)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rank_level": self.level.copy(), "prev_tail": self.prev_tail.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level = np.asarray(state["rank_level"]).copy()
        self.prev_tail = np.asarray(state["prev_tail"]).copy()
