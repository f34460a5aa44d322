"""Run a baseline scheme through the runtime: :func:`run_scheme`.

HetLoRA [6] and FlexLoRA [7] run with *rank levels as modules*: the config's ranks
(4, 8, 16 by default) become M "virtual" modules that all hold truncations of one global
adapter. UE k subscribes only to its own level (its rank r_k, :mod:`.ranks`), so the
allocator prices its upload S_{r_k} and compute φ_{r_k} exactly as for the proposed method,
and the same primal-dual policy schedules who participates (7f). Aggregation pools every
received upload over all levels (the :meth:`Simulation.aggregate` hook) and hands each level
its truncation of the new global adapter. The pooled weights are D_k / Σ_received D (both
papers average what arrives), whatever the run's ``normalize``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..fl.runtime import Simulation
from .aggregation import (
    flexlora_aggregate,
    hetlora_aggregate,
    shrink_tail,
    tail_norm,
    truncate_rank,
)
from .ranks import assign_rank_levels
from .schemes import Scheme, configure, get_scheme

__all__ = ["RankLevelSimulation", "run_scheme", "restrict_policy"]


def restrict_policy(policy, mask_fn):
    """A :class:`~fedopt.online.SwitchingPolicy` that may only pick pairs in ``mask_fn()`` (K, M)."""
    from ..online import SwitchingPolicy

    def update(costs, feasible, t, state, **kw):
        return policy.update(costs, np.asarray(feasible, bool) & mask_fn(), t, state, **kw)

    return SwitchingPolicy(f"{policy.name}+rank", policy.init, update, dict(policy.params))


class RankLevelSimulation(Simulation):
    """The runtime with one global adapter shared by rank levels (HetLoRA / FlexLoRA).

    ``rule``: ``"hetlora"`` or ``"flexlora"``. ``prune_lambda`` > 0 turns on HetLoRA's
    self-pruning [6]: after local training each upload's components above the next lower
    level get the proximal step of λ‖·‖_F (threshold lr · I · λ), and a UE whose tail norm
    fell since its previous upload moves down one level (γ = the ratio of adjacent levels).
    """

    def __init__(self, run, out=None, *, rule: str, prune_lambda: float = 0.0, **kw: Any):
        if rule not in ("hetlora", "flexlora"):
            raise ConfigError(f"rule: 'hetlora' or 'flexlora', got {rule!r}")
        if prune_lambda and rule != "hetlora":
            raise ConfigError("prune_lambda: self-pruning belongs to HetLoRA only")
        self.rule = rule
        self.prune_lambda = float(prune_lambda)
        super().__init__(run, out, **kw)

    def _setup(self) -> None:
        super()._setup()
        ranks = [s.rank for s in self.specs]
        if any(b <= a for a, b in zip(ranks, ranks[1:])):
            raise ConfigError(f"ranks: rank levels must increase, got {ranks}")
        self.ranks = ranks
        self.scales = np.array([(s.lora_alpha or 2.0 * s.rank) / s.rank for s in self.specs])
        self.level = assign_rank_levels(self.system, self.pop)
        self.prev_tail = np.full(self.pop.K, np.inf)
        top = self.params[-1]  # one global adapter at the largest rank
        self.params = [truncate_rank(top, r) for r in ranks]
        self.allocator.policy = restrict_policy(self.allocator.policy, self.level_mask)

    def level_mask(self) -> np.ndarray:
        """(K, M) bool: UE k may subscribe only to its own rank level."""
        mask = np.zeros((self.pop.K, len(self.ranks)), bool)
        ok = self.level >= 0
        mask[np.flatnonzero(ok), self.level[ok]] = True
        return mask

    def aggregate(self, pairs, res, received) -> list:
        sel = np.flatnonzero(np.asarray(received, bool))
        if sel.size == 0:
            return self.params
        mods = pairs.module[sel]
        local = [{k: self.params[m][k] + res.updates[i][k] for k in self.params[m]}
                 for i, m in zip(sel, mods)]
        if self.prune_lambda > 0:
            local = self._self_prune(pairs.ue[sel], mods, local)
        w = np.asarray(res.n_samples, float)[sel]
        if self.rule == "hetlora":
            g = hetlora_aggregate(local, w, self.ranks[-1])
            new = [truncate_rank(g, r) for r in self.ranks]
        else:
            new, _ = flexlora_aggregate(local, w, self.scales[mods], self.ranks,
                                        out_scales=self.scales)
        # keep each module's dtype (the SVD and the weighted sums run in float64)
        return [{k: np.asarray(v, dtype=self.params[m][k].dtype) for k, v in p.items()}
                for m, p in enumerate(new)]

    def _self_prune(self, ues, mods, local):
        thr = self.system.lr * self.system.local_steps * self.prune_lambda
        out = []
        for k, m, p in zip(ues, mods, local):
            if m == 0:  # the lowest level has nothing left to prune
                out.append(p)
                continue
            keep = self.ranks[m - 1]
            p = shrink_tail(p, keep, thr)
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
        state = super().state_dict()
        state["rank_level"] = self.level.copy()
        state["prev_tail"] = self.prev_tail.copy()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        # called by Simulation.load_state_dict once the whole state (these two arrays too,
        # against this run's state_dict) has been checked
        self.level = state["rank_level"].copy()
        self.prev_tail = state["prev_tail"].copy()
        super()._load_state(state)


def run_scheme(scheme: str | Scheme, run, out: str | Path | None = None, *,
               progress: bool = False, prune_lambda: float = 0.0) -> dict[str, Any]:
    """Run ``scheme`` from the base RunConfig ``run``; return the runtime's summary plus
    ``scheme`` and ``slots_per_round`` (deadline slots one round takes: 1 except for
    full-parameter fine-tuning). The run's rows are in ``summary['rows']``."""
    sch = scheme if isinstance(scheme, Scheme) else get_scheme(scheme)
    cfg, slots = configure(sch, run)
    if sch.rule is not None:
        sim = RankLevelSimulation(cfg, out, rule=sch.rule, prune_lambda=prune_lambda,
                                  progress=progress)
    else:
        sim = Simulation(cfg, out, progress=progress)
    if cfg.power_method == "max":
        # the allocator's grid start and basin escapes set p on a grid whatever power_method
        # says; the max-power baseline keeps p = P_max
        for key in ("escapes", "grid_start"):
            if hasattr(sim.allocator, key):
                setattr(sim.allocator, key, type(getattr(sim.allocator, key))(0))
    summary = dict(sim.run())
    summary["scheme"] = sch.name
    summary["slots_per_round"] = slots
    summary["rows"] = sim.rows
    if sch.rule is not None:
        summary["rank_levels"] = np.bincount(sim.level[sim.level >= 0],
                                             minlength=len(sim.ranks)).tolist()
    return summary
