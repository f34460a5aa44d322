"""``fedopt simulate``: Algorithm 2 round after round, a thin driver of the round engine.

Each round t (MODEL.md, "Algorithm 2"; the round itself is :class:`~fedopt.fl.round.RoundEngine`):

1. the channel model moves the UEs (``mobility_step``); the backend probes the engine's probe
   mask at θ^t (every pair in round 0, a share ``probe_fraction`` later);
2. the engine plans: measurements merged, the :class:`~fedopt.allocator.RoundAllocator`
   returns (x, p, b, q, E);
3. every scheduled pair trains locally (one vectorised backend call);
4. the engine completes the round: uplink draw (15), aggregation (eq. (1) per module, or a
   baseline's rule), bookkeeping and the metrics row; its observers evaluate the ensembles
   (3), track Theorem 1 (``--bound``) and write checkpoints.

Reproducibility: one ``SeedSequence(seed)`` spawns the population, backend, channel/mobility
and allocator streams (:func:`~fedopt.fl.setup.build_run`); every stream's state sits in the
checkpoint, which is written atomically every ``checkpoint_every`` rounds, so a resumed run
ends bit-identical.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import PairBatch, SupportsSaving
from ..errors import ConfigError, FedoptError, StateFileError
from ..runfolder import atomic_write_text, remove_stale_temporaries
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import RunConfig, resume_conflicts
from .metrics import EnsembleEvaluation, plot_run, summarize, write_csv, write_json
from .round import EngineDriver, Observation, RoundResults
from .setup import build_run, make_engine

__all__ = ["Simulation", "simulate"]


def _like(got: Any, fresh: Any, where: str) -> str | None:
    """Why ``got`` (from a checkpoint) does not have the structure of ``fresh`` (the same
    run's state before round 0), or None. Arrays must match in shape and dtype, mappings in
    keys, tuples and non-empty lists in length, scalars in type; an empty list (a trace that
    grows) only has to be a list, and a None (a value set later) may be anything."""
    if fresh is None:
        return None
    if isinstance(fresh, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"{where} is {type(got).__name__}, not an array"
        if got.shape != fresh.shape or got.dtype != fresh.dtype:
            return (f"{where} is a {got.dtype} array of shape {got.shape}, not {fresh.dtype} "
                    f"{fresh.shape}")
        return None
    if isinstance(fresh, dict):
        if not isinstance(got, dict):
            return f"{where} is {type(got).__name__}, not a mapping"
        if set(got) != set(fresh):
            return f"{where} has keys {sorted(got)[:8]}, not {sorted(fresh)[:8]}"
        for k in fresh:
            why = _like(got[k], fresh[k], f"{where}.{k}")
            if why:
                return why
        return None
    if isinstance(fresh, (list, tuple)):
        if type(got) is not type(fresh):
            return f"{where} is {type(got).__name__}, not a {type(fresh).__name__}"
        if isinstance(fresh, tuple) or fresh:
            if len(got) != len(fresh):
                return f"{where} has {len(got)} entries, not {len(fresh)}"
            for i, (g, f) in enumerate(zip(got, fresh)):
                why = _like(g, f, f"{where}[{i}]")
                if why:
                    return why
        return None
    if isinstance(fresh, np.generic):
        if not isinstance(got, np.generic) or got.dtype != fresh.dtype:
            return f"{where} is {type(got).__name__}, not {fresh.dtype}"
        return None
    kinds = (bool,) if isinstance(fresh, bool) else (int,) if isinstance(fresh, int) else \
        (float,) if isinstance(fresh, float) else (type(fresh),)
    if not isinstance(got, kinds) or isinstance(got, bool) != isinstance(fresh, bool):
        return f"{where} is {type(got).__name__}, not {type(fresh).__name__}"
    return None


def _same_run(saved: Any, now: dict[str, Any]) -> bool:
    """Whether a checkpoint's flat config is this run's up to ``rounds`` (the one key a
    resume may change: :func:`~fedopt.fl.config.resume_conflicts`)."""
    return isinstance(saved, dict) and not resume_conflicts(saved, now)


def _state_misfit(state: Any, fresh: dict[str, Any], rounds: int) -> str | None:
    """Why a checkpoint's state (which passed its checksum; the sha256 is not keyed, so an
    edited file can be re-signed) cannot be this run's, or None: the one check before a
    resume uses any of it. Everything the run would index, reshape or do arithmetic with is
    checked against ``fresh`` (this run's state before round 0)."""
    if not isinstance(state, dict):
        return "its state is not a mapping"
    t = state.get("t")
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= rounds:
        return f"t is {str(t)[:40]}; an integer in [0, {rounds}] expected"
    why = _like(state, fresh, "state")
    if why:
        return why
    rows = state["rows"]
    if len(rows) != t:
        return f"{len(rows)} metrics rows for t = {t}"
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, (int, float, str)))
                for k, v in row.items()):
            return f"metrics row {i} is not a mapping of numbers"
    for key, seq in state["trace"].items():  # one array per round
        if len(seq) > t or not all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf"
                                   for a in seq):
            return f"trace.{key} is not a list of at most t = {t} arrays"
    for key, seq in state["bound_trace"].items():  # one list of numbers per round
        if len(seq) > t or not all(isinstance(a, list) and all(
                isinstance(v, (int, float)) for v in a) for a in seq):
            return f"bound_trace.{key} is not a list of at most t = {t} lists of numbers"
    for i, module in enumerate(state["params"]):
        for key, a in (module.items() if isinstance(module, dict) else enumerate(module)):
            if isinstance(a, np.ndarray) and a.dtype.kind in "fc" and not np.isfinite(a).all():
                return f"params[{i}].{key} has NaN or infinite values"
    return None


class Checkpointer:
    """A round observer: the run's state into ``out`` every ``every`` rounds (not after the
    last one: :meth:`Simulation.finish` writes that)."""

    def __init__(self, sim: Simulation, every: int) -> None:
        self.sim, self.every = sim, int(every)

    def on_plan(self, engine, plan) -> None:
        pass

    def on_complete(self, engine, plan, params, row) -> None:
        t, sim = engine.t, self.sim
        if sim.out is not None and self.every and t % self.every == 0 and t < sim.run_cfg.rounds:
            save_checkpoint(sim.state_dict(params), sim.out)


class Simulation(EngineDriver):
    """One run of the runtime; :meth:`run` executes (or resumes) it and writes ``out``.

    ``rule``: the aggregation rule (``fedavg``: eq. (1) per module; ``hetlora`` /
    ``flexlora``: the rank-level baselines, :mod:`fedopt.baselines.rules`), ``prune_lambda``
    HetLoRA's self-pruning. ``track_bound``: Theorem 1's tracker (dense synthetic backend).
    ``outputs``: False writes only the config and checkpoints to ``out`` (a figure's runs),
    not the metrics, summary, plots and the backend's saved run."""

    def __init__(self, run: RunConfig, out: str | Path | None = None, *, progress: bool = True,
                 track_bound: bool = False, rule: str = "fedavg", prune_lambda: float = 0.0,
                 outputs: bool = True) -> None:
        self.run_cfg = run
        self.out = Path(out) if out is not None else None
        self.outputs = outputs
        self.progress = progress
        self.track_bound = track_bound
        setup = build_run(run, rule, prune_lambda=prune_lambda)
        self.setup = setup
        self.system, self.backend, self.specs = setup.system, setup.backend, setup.specs
        self.params = setup.params
        self.tracker = None
        if track_bound:
            from ..bound import TheoremTracker

            self.tracker = TheoremTracker(self.backend, setup.smoothness)
        observers = [EnsembleEvaluation(self.backend, run.eval_every, run.rounds),
                     Checkpointer(self, run.checkpoint_every)]
        if self.tracker is not None:
            observers.append(self.tracker)
        self.engine = make_engine(setup, observers=observers)
        self.allocator = self.engine.allocator
        self.rule = self.engine.rule

    # --- the engine's state, as the run's ---------------------------------------------------

    @property
    def t(self) -> int:
        return self.engine.t

    @property
    def pop(self):
        """The population at the UEs' current positions."""
        return self.setup.pop.with_positions(self.engine.channel_fn.positions)

    def samples(self) -> np.ndarray:
        """D_k^t the allocator plans with (:meth:`RunSetup.samples`)."""
        return self.setup.samples()

    # --- checkpoint state -----------------------------------------------------------------

    def state_dict(self, params: list | None = None) -> dict[str, Any]:
        """Plain data only (a :mod:`fedopt.safestate` tree): the checkpoint never pickles."""
        engine = self.engine.state_dict()
        state = {  # the order of earlier versions (the arrays' numbering follows it)
            "t": engine.pop("t"),
            "config": self.run_cfg.to_flat_dict(),
            "params": self.params if params is None else params,
            "allocator": engine.pop("allocator"),
            "backend": self.backend.state_dict(),
            "rng": engine.pop("rng"),
            "positions": np.array(self.engine.channel_fn.positions),
            **engine,
            "bound_trace": (self.tracker.trace if self.tracker is not None
                            else {"gap": [], "gk_max": [], "g_sq": []}),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            if not isinstance(state, dict) or not _same_run(state.get("config"),
                                                            self.run_cfg.to_flat_dict()):
                raise ConfigError("--resume: the checkpoint was written with a different config")
            t, written_for = state.get("t"), state["config"].get("rounds")
            if (type(t) is int and type(written_for) is int
                    and self.run_cfg.rounds < t <= written_for):  # a cut run, not a damaged file
                raise ConfigError(f"--resume: the checkpoint has run {t} rounds, more "
                                  f"than rounds = {self.run_cfg.rounds}")
            problem = _state_misfit(state, self.state_dict(), self.run_cfg.rounds)
            if problem:  # checked in full before anything is set: no half-loaded run
                raise StateFileError(f"the checkpoint does not fit this run ({problem})")
            self._load_state(state)
        except FedoptError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # a checkpoint that passed its checksum but does not fit this run's state
            raise StateFileError(f"the checkpoint does not fit this run "
                                 f"({type(exc).__name__}: {exc})") from None

    def _load_state(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)
        self.params = state["params"]
        self.backend.load_state_dict(state["backend"])
        self.engine.channel_fn.positions = np.asarray(state["positions"], float)
        if self.tracker is not None:
            self.tracker.trace = state["bound_trace"]

    # --- one round ------------------------------------------------------------------------

    def observe(self) -> Observation:
        """Step 1: the channel, and the backend's probes of the engine's probe mask at θ^t."""
        engine, pop = self.engine, self.setup.pop
        channel = engine.channel()
        mask = engine.probe_mask()
        loss = np.full(mask.shape, np.nan)
        gsq = np.full(mask.shape, np.nan)
        if mask.any():
            pairs = PairBatch.from_mask(mask)
            loss[pairs.ue, pairs.module], gsq[pairs.ue, pairs.module] = \
                self.backend.probe(pairs, self.params)
        return Observation(channel, pop.n_data, pop.f, pop.c, self.samples(), loss, gsq)

    def step(self) -> dict[str, Any]:
        """One round: observe, plan, train every scheduled pair in one call, complete."""
        plan = self.engine.plan(self.observe(), self.params)
        res = self.backend.local_update(plan.work, self.params, plan.local_steps, plan.lr)
        self.params, row = self.engine.complete(plan, RoundResults.from_local(res))
        return row

    # --- the whole run --------------------------------------------------------------------

    def restore(self) -> bool:
        """Load ``out``'s checkpoint, if it has one (True then). A checkpoint of another
        config is a :class:`ConfigError`, a damaged one a :class:`StateFileError`; either
        way nothing of it is loaded."""
        if self.out is None:
            return False
        state = load_checkpoint(self.out)  # also removes a killed write's temporaries
        if state is None:
            return False
        try:
            self.load_state_dict(state)
        except StateFileError as exc:
            raise StateFileError(f"checkpoint {self.out / CHECKPOINT}: {exc}") from None
        return True

    def run(self, resume: bool = False) -> dict[str, Any]:
        run = self.run_cfg
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume:
                self.restore()
            else:
                remove_stale_temporaries(self.out)
            atomic_write_text(self.out / "config.yaml", self.run_cfg.to_yaml())
        start = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=run.rounds, initial=self.t, desc="fedopt simulate", unit="round",
                       dynamic_ncols=True, leave=True)
        energy = sum(r["energy"] for r in self.rows)
        try:
            while self.t < run.rounds:
                row = self.step()
                energy += row["energy"]
                if bar is not None:
                    acc, glob = row["accuracy"], row["global_accuracy"]
                    shown = "-" if math.isnan(acc) else f"{acc:.3f}" + (
                        "" if math.isnan(glob) else f" (global {glob:.3f})")
                    bar.set_postfix_str(f"round {self.t}/{run.rounds} acc {shown} "
                                        f"energy {energy:.3g} J", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.finish(time.perf_counter() - start)

    def finish(self, seconds: float = float("nan")) -> dict[str, Any]:
        run = self.run_cfg
        M = len(self.specs)
        extra: dict[str, Any] = {"seed": run.seed, "policy": run.policy, "M": M,
                                 "K": self.engine.K, "normalize": run.normalize}
        bound = None
        if self.tracker is not None:
            bound = self.tracker.bound(self.trace["x"], self.trace["q"], self.system.lr,
                                       self.params)
            extra["bound"] = {k: v for k, v in bound.items() if k not in ("gap", "bound", "A", "B")}
            for t, row in enumerate(self.rows):
                for m in range(M):
                    row[f"gap_{m}"] = bound["gap"][t + 1, m]
                    row[f"bound_{m}"] = bound["bound"][t + 1, m]
        participation = self.participation / max(self.t, 1)
        summary = summarize(self.rows, participation, run.target_accuracy, extra)
        if self.out is not None and self.outputs:
            write_csv(self.rows, self.out / "metrics.csv")
            write_json(summary, self.out / "summary.json")
            write_json({"seconds_this_process": seconds}, self.out / "timing.json")
            plot_run(self.rows, self.out, title=f"({run.policy}, M={M})", bound=bound)
            if isinstance(self.backend, SupportsSaving):  # e.g. LoRA: peft modules + ensembles
                self.backend.save_run(self.out, self.params, self.ensembles)
        if self.out is not None:
            save_checkpoint(self.state_dict(), self.out)
        self.summary = summary
        return summary


def simulate(run: RunConfig, out: str | Path | None = None, *, resume: bool = False,
             progress: bool = True, track_bound: bool = False) -> dict[str, Any]:
    """Run (or resume, from ``out``'s checkpoint) a simulation; return its summary."""
    return Simulation(run, out, progress=progress, track_bound=track_bound).run(resume=resume)
