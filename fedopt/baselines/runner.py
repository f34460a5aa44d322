"""Run a baseline scheme through the runtime: :func:`run_scheme`.

A scheme is a config change plus an aggregation rule (:mod:`.schemes`); HetLoRA [6] and
FlexLoRA [7] run with rank levels as modules (:class:`~.rules.RankLevels`). The same scheme
runs in Flower: ``fedopt.flower.sim.run_flower_simulation(run, scheme=...)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StateFileError
from ..fl.runtime import Simulation
from .schemes import Scheme, configure, get_scheme

__all__ = ["run_scheme", "scheme_run"]


def scheme_run(scheme: str | Scheme, run) -> tuple[Any, str, int]:
    """(the scheme's RunConfig, its aggregation rule name, deadline slots per round)."""
    sch = scheme if isinstance(scheme, Scheme) else get_scheme(scheme)
    cfg, slots = configure(sch, run)
    return cfg, sch.rule or "fedavg", slots


def run_scheme(scheme: str | Scheme, run, out: str | Path | None = None, *,
               progress: bool = False, prune_lambda: float = 0.0,
               resume: bool = False, outputs: bool = True) -> dict[str, Any]:
    """Run ``scheme`` from the base RunConfig ``run``; return the runtime's summary plus
    ``scheme`` and ``slots_per_round`` (deadline slots one round takes: 1 except for
    full-parameter fine-tuning). The run's rows are in ``summary['rows']``.

    ``out``: the run's folder (checkpoints every ``run.checkpoint_every`` rounds; with
    ``outputs`` False nothing else: :class:`~fedopt.fl.runtime.Simulation`). With
    ``resume`` the run continues from a checkpoint there; one of another config, or damaged,
    is said in one line on stderr and the run starts over (it is a cache, as a figure's
    stored groups are)."""
    sch = scheme if isinstance(scheme, Scheme) else get_scheme(scheme)
    cfg, rule, slots = scheme_run(sch, run)
    sim = Simulation(cfg, out, progress=progress, rule=rule, prune_lambda=prune_lambda,
                     outputs=outputs)
    if resume and out is not None:
        try:
            sim.restore()
        except (ConfigError, StateFileError) as exc:
            why = str(exc).removeprefix("--resume: ")  # worded for `fedopt simulate --resume`
            print(f"fedopt: warning: {sch.name} in {out}: {why}; the run starts over",
                  file=sys.stderr)
            sim = Simulation(cfg, out, progress=progress, rule=rule,
                             prune_lambda=prune_lambda, outputs=outputs)
    summary = dict(sim.run())
    summary["scheme"] = sch.name
    summary["slots_per_round"] = slots
    summary["rows"] = sim.rows
    if sch.rule is not None:
        level = sim.rule.level
        summary["rank_levels"] = np.bincount(level[level >= 0], minlength=len(sim.rule.ranks)).tolist()
    return summary
