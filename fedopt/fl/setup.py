"""A run's set-up from its seed, shared by every driver: :func:`build_run` and
:func:`make_engine`.

``SeedSequence(seed).spawn(4)`` → population, backend, channel and allocator streams. The
population's module sizes are nominal or the backend's real counts (``module_size``); with
``step_size = inverse_L`` the step size is 1/L of a backend that knows L. The aggregation
rule comes from the scheme (eq. (1) per module unless HetLoRA / FlexLoRA).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..allocator import RoundAllocator
from ..backends import ModuleSpec, SupportsFullBatch, SupportsSmoothness, make_backend
from ..errors import ConfigError
from ..population import Population, draw_population
from .config import RunConfig
from .round import AggregationRule, ModuleFedAvg, PopulationChannel, RoundEngine, RoundObserver

__all__ = ["RunSetup", "build_run", "make_allocator", "make_engine", "RULES"]

#: aggregation rules by name: eq. (1) per module, or the rank-level baselines
RULES = ("fedavg", "hetlora", "flexlora")


@dataclass
class RunSetup:
    """What a run is made of, built from its seed."""

    run: RunConfig
    system: Any  # SystemConfig (lr replaced by 1/L with step_size = inverse_L)
    pop: Population
    backend: Any
    specs: list[ModuleSpec]
    params: list  # θ_m^0 as the rule holds it
    initial_state: dict  # the backend's state_dict() right after θ^0 (every node starts here)
    channel_seed: np.random.SeedSequence
    allocator_seed: np.random.SeedSequence
    backend_seed: np.random.SeedSequence
    rule: AggregationRule
    smoothness: tuple[float, float] | None = None  # (μ, L) where step_size = inverse_L

    def samples(self) -> np.ndarray:
        """D_k^t the allocator plans with: |D_k| for a full-batch backend, else the
        population's nominal D_k."""
        if isinstance(self.backend, SupportsFullBatch) and self.backend.full_batch:
            return self.backend.data_sizes()
        return np.asarray(self.pop.D, dtype=float)

    def properties(self, k: int) -> dict[str, float]:
        """What UE k's node reports: the RoundState fields of MODEL.md's population."""
        return {"distance": float(self.pop.d[k]), "data-size": float(self.pop.n_data[k]),
                "cpu-freq": float(self.pop.f[k]), "cycles-per-bit": float(self.pop.c[k]),
                "samples": float(self.samples()[k])}


def build_run(run: RunConfig, rule: str = "fedavg", *, prune_lambda: float = 0.0) -> RunSetup:
    """Population, backend, θ^0, the aggregation rule and the seed streams of ``run``.

    ``rule``: one of :data:`RULES` (``fedavg``: eq. (1) per module with the backend's
    ``aggregate`` and ``run.normalize``; ``hetlora`` / ``flexlora``: rank levels as modules,
    :mod:`fedopt.baselines.rules`). ``prune_lambda``: HetLoRA's self-pruning."""
    if rule not in RULES:
        raise ConfigError(f"rule: one of {', '.join(RULES)}, got {rule!r}")
    pop_ss, backend_ss, channel_ss, alloc_ss = np.random.SeedSequence(run.seed).spawn(4)
    pop = draw_population(run.system.replace(module_size="nominal"), np.random.default_rng(pop_ss))
    backend = make_backend(run.backend, run.system, pop, backend_ss, **run.backend_kwargs())
    specs = [ModuleSpec(m, r) for m, r in enumerate(run.system.ranks)]
    if run.system.module_size == "backend":
        counts = np.array([backend.num_params(s) for s in specs], dtype=float)
        pop = draw_population(run.system, np.random.default_rng(pop_ss), module_params=counts)
    system = run.system
    smooth = None
    if run.step_size == "inverse_L":
        if not isinstance(backend, SupportsSmoothness):
            raise ConfigError("step_size: 'inverse_L' needs a backend with a known L (dense synthetic)")
        smooth = backend.smoothness()
        system = system.replace(lr=1.0 / smooth[1])  # eta = 1/L, also in Gamma = (eta/2)||g||^2
    params = backend.init_modules(specs)
    initial = copy.deepcopy(backend.state_dict())
    if rule == "fedavg":
        agg: AggregationRule = ModuleFedAvg(run.normalize, backend)
    else:
        from ..baselines.rules import RankLevels

        agg = RankLevels(rule, specs, system, pop, prune_lambda=prune_lambda)
    params = agg.initial_params(params)
    return RunSetup(run, system, pop, backend, specs, params, initial, channel_ss, alloc_ss,
                    backend_ss, agg, smooth)


def make_allocator(setup: RunSetup) -> RoundAllocator:
    """The run's allocator (policy, methods, the backend's S_m and φ_m, its own seed); its
    ``state_dict()`` goes into the checkpoint."""
    run = setup.run
    kwargs: dict[str, Any] = {"policy": run.policy, "on_infeasible": "flag",
                              "seed": int(setup.allocator_seed.generate_state(1)[0]),
                              "module_bits": np.asarray(setup.pop.S, float),
                              "phi": np.asarray(setup.pop.phi, float)}
    if run.power_method is not None:
        kwargs["power_method"] = run.power_method
    if run.bandwidth_method is not None:
        kwargs["bandwidth_method"] = run.bandwidth_method
    try:
        return RoundAllocator(setup.system, **kwargs)
    except ValueError as exc:  # unknown method names etc.
        raise ConfigError(str(exc)) from None


def make_engine(setup: RunSetup, *, observers: list[RoundObserver] | tuple = (),
                **kwargs: Any) -> RoundEngine:
    """The run's :class:`RoundEngine`: its allocator, rule, channel stream, probe share and the
    population's mobility as the channel model; ``kwargs`` override (``uplink``,
    ``channel_fn``, ``rule``, ...)."""
    run, cfg = setup.run, setup.system
    opts: dict[str, Any] = dict(
        rule=setup.rule, seed=np.random.default_rng(setup.channel_seed),
        probe_fraction=run.probe_fraction,
        channel_fn=PopulationChannel(setup.pop.positions, run.mobility_step, cfg.d_min, cfg.radius))
    opts.update(kwargs)
    return RoundEngine(make_allocator(setup), observers=observers, **opts)
