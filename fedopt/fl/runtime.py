"""The switching-based federated fine-tuning runtime: Algorithm 2 round after round.

Each round t (MODEL.md, "Algorithm 2"):

1. mobility moves the UEs (``mobility_step``) and the state is observed: positions, and the
   backend's measurements of loss and ‖∇‖² per (UE, module) pair;
2. the :class:`~fedopt.allocator.RoundAllocator` returns (x, p, b, q, E);
3. every subscribed pair trains locally (one vectorised backend call);
4. each upload succeeds with s ~ Bernoulli(q);
5. the gNB aggregates every module by (1), normalised over received or subscribed uploads;
6. the round's metrics are logged: accuracy (ω-weighted per-UE ensembles (3) and global),
   loss, energy (computation / communication), bandwidth, success rate, participation, Φ^t.

Measurements for the state (ours; MODEL.md says only "the backend's measured ℓ and ‖∇‖²"):
a share ``probe_fraction`` of all pairs (every pair in round 0) is probed at the current θ_m^t
with ``backend.probe``; pairs that trained last round and were not probed report the loss and
‖∇‖² of their local update; every other pair is NaN and the allocator keeps its last estimate.

Reproducibility: one ``SeedSequence(seed)`` spawns the population, backend, channel/mobility
and allocator streams; every stream's state sits in the checkpoint, which is written
atomically every ``checkpoint_every`` rounds, so a resumed run ends bit-identical.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..allocator import RoundAllocator, RoundState
from ..backends import ModuleSpec, PairBatch, make_backend
from ..errors import ConfigError, FedoptError, StateFileError
from ..population import draw_population
from ..runfolder import atomic_write_text, remove_stale_temporaries
from .aggregation import aggregate_round, aggregation_weights
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .config import RunConfig
from .metrics import plot_run, summarize, write_csv, write_json
from .mobility import random_walk

__all__ = ["Simulation", "simulate"]


def _make_allocator(run: RunConfig, system, population, seed_seq: np.random.SeedSequence
                    ) -> RoundAllocator:
    """The run's allocator; its ``state_dict()`` (plain data, a
    :class:`fedopt.safestate.Stateful`) goes into the checkpoint."""
    kwargs: dict[str, Any] = {"policy": run.policy}
    if run.power_method is not None:
        kwargs["power_method"] = run.power_method
    if run.bandwidth_method is not None:
        kwargs["bandwidth_method"] = run.bandwidth_method
    kwargs["seed"] = int(seed_seq.generate_state(1)[0])
    kwargs["module_bits"] = np.asarray(population.S, float)
    kwargs["phi"] = np.asarray(population.phi, float)
    kwargs["on_infeasible"] = "flag"  # UEs that miss the deadline are reported per round
    try:
        return RoundAllocator(system, **kwargs)
    except ValueError as exc:  # unknown method names etc.
        raise ConfigError(str(exc)) from None


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


class Simulation:
    """One run of the runtime; :meth:`run` executes (or resumes) it and writes ``out``."""

    def __init__(self, run: RunConfig, out: str | Path | None = None, *, progress: bool = True,
                 track_bound: bool = False) -> None:
        self.run_cfg = run
        self.out = Path(out) if out is not None else None
        self.progress = progress
        self.track_bound = track_bound
        self._setup()

    # --- construction ---------------------------------------------------------------------

    def _setup(self) -> None:
        run = self.run_cfg
        pop_ss, backend_ss, channel_ss, alloc_ss = np.random.SeedSequence(run.seed).spawn(4)
        nominal = run.system.replace(module_size="nominal")
        pop = draw_population(nominal, np.random.default_rng(pop_ss))
        backend = make_backend(run.backend, run.system, pop, backend_ss, **run.backend_kwargs())
        self.specs = [ModuleSpec(m, r) for m, r in enumerate(run.system.ranks)]
        if run.system.module_size == "backend":
            counts = np.array([backend.num_params(s) for s in self.specs], dtype=float)
            pop = draw_population(run.system, np.random.default_rng(pop_ss), module_params=counts)
        system = run.system
        if self.track_bound and not getattr(backend, "dense", False):
            raise ConfigError("--bound needs the dense synthetic backend (backend=synthetic, dense=true)")
        if run.step_size == "inverse_L":
            if not hasattr(backend, "smoothness"):
                raise ConfigError("step_size: 'inverse_L' needs a backend with a known L (dense synthetic)")
            self.mu, self.L = backend.smoothness()
            system = system.replace(lr=1.0 / self.L)  # eta = 1/L, also in Gamma = (eta/2)||g||^2
        self.system = system
        self.pop = pop
        self.backend = backend
        self.rng = np.random.default_rng(channel_ss)
        self.params = backend.init_modules(self.specs)
        self.allocator = _make_allocator(run, system, pop, alloc_ss)
        K, M = pop.K, pop.M
        self.t = 0
        self.rows: list[dict[str, Any]] = []
        self.ensembles = np.ones((K, M), dtype=bool)  # before a UE subscribes: all modules
        self.participation = np.zeros(K)
        self.last_loss = np.full((K, M), np.nan)  # the latest estimate of every pair
        self.last_grad_sq = np.full((K, M), np.nan)
        self.trained_loss = np.full((K, M), np.nan)  # last round's local-update measurements
        self.trained_grad_sq = np.full((K, M), np.nan)
        self.trace: dict[str, list] = {"x": [], "q": [], "s": []}
        self.bound_trace: dict[str, list] = {"gap": [], "gk_max": [], "g_sq": []}
        if self.track_bound:
            self.F_star, self.theta_star = backend.optimum()
            if run.step_size != "inverse_L":
                self.mu, self.L = backend.smoothness()

    # --- checkpoint state -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (a :mod:`fedopt.safestate` tree): the checkpoint never pickles."""
        return {
            "t": self.t,
            "config": self.run_cfg.to_flat_dict(),
            "params": self.params,
            "allocator": self.allocator.state_dict(),
            "backend": self.backend.state_dict(),
            "rng": self.rng.bit_generator.state,
            "positions": np.array(self.pop.positions),
            "rows": self.rows,
            "ensembles": self.ensembles,
            "participation": self.participation,
            "last_loss": self.last_loss,
            "last_grad_sq": self.last_grad_sq,
            "trained_loss": self.trained_loss,
            "trained_grad_sq": self.trained_grad_sq,
            "trace": self.trace,
            "bound_trace": self.bound_trace,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            if not isinstance(state, dict) or state.get("config") != self.run_cfg.to_flat_dict():
                raise ConfigError("--resume: the checkpoint was written with a different config")
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
        if state["config"] != self.run_cfg.to_flat_dict():
            raise ConfigError("--resume: the checkpoint was written with a different config")
        self.t = int(state["t"])
        self.params = state["params"]
        self.allocator.load_state_dict(state["allocator"])
        self.backend.load_state_dict(state["backend"])
        self.rng.bit_generator.state = state["rng"]
        self.pop = self.pop.with_positions(state["positions"])
        for key in ("rows", "ensembles", "participation", "last_loss", "last_grad_sq",
                    "trained_loss", "trained_grad_sq", "trace", "bound_trace"):
            setattr(self, key, state[key])

    # --- one round ------------------------------------------------------------------------

    def _measure(self) -> tuple[np.ndarray, np.ndarray]:
        """This round's measured (loss, ‖∇‖²), (K, M), NaN where not measured."""
        K, M = self.pop.K, self.pop.M
        loss, gsq = self.trained_loss.copy(), self.trained_grad_sq.copy()
        frac = 1.0 if self.t == 0 else self.run_cfg.probe_fraction
        probe = self.rng.random((K, M)) < frac if frac < 1.0 else np.ones((K, M), bool)
        if probe.any():
            pairs = PairBatch.from_mask(probe)
            pl, pg = self.backend.probe(pairs, self.params)
            loss[pairs.ue, pairs.module] = pl
            gsq[pairs.ue, pairs.module] = pg
        return loss, gsq

    def _samples(self) -> np.ndarray:
        if getattr(self.backend, "full_batch", False):
            return self.backend.data_sizes()
        return np.asarray(self.pop.D, dtype=float)

    def step(self) -> dict[str, Any]:
        run, cfg, pop, backend = self.run_cfg, self.system, self.pop, self.backend
        t = self.t
        K, M = pop.K, pop.M
        # 1. mobility and the observed state
        if run.mobility_step > 0:
            self.pop = pop = pop.with_positions(
                random_walk(pop.positions, run.mobility_step, cfg.d_min, cfg.radius, self.rng))
        loss, gsq = self._measure()
        seen = ~np.isnan(loss)
        self.last_loss[seen] = loss[seen]
        self.last_grad_sq[seen] = gsq[seen]
        if self.track_bound:
            self._record_gap()
        state = RoundState(t=t, distance=pop.d, data_size=np.asarray(pop.n_data, float),
                           loss=loss, grad_sq=gsq, cpu_freq=pop.f, cycles_per_bit=pop.c,
                           samples=self._samples())
        # 2. allocate (x, p, b)
        alloc = self.allocator.allocate(state)
        x = np.asarray(alloc.x) > 0.5
        q = np.asarray(alloc.q, dtype=float)
        # 3. local training of every subscribed pair, in one call
        pairs = PairBatch.from_mask(x)
        res = backend.local_update(pairs, self.params, cfg.local_steps, cfg.lr)
        self.trained_loss = np.full((K, M), np.nan)
        self.trained_grad_sq = np.full((K, M), np.nan)
        self.trained_loss[pairs.ue, pairs.module] = res.loss
        self.trained_grad_sq[pairs.ue, pairs.module] = res.grad_sq
        # 4. uploads succeed with probability q (15)
        received = self.rng.random(len(pairs)) < q[pairs.ue, pairs.module]
        # 5. aggregation (1)
        self.params = self.aggregate(pairs, res, received)
        # 6. metrics
        active = x.any(axis=1)
        self.ensembles[active] = x[active]
        self.participation += x.sum(axis=1)
        s_mat = np.zeros((K, M), bool)
        s_mat[pairs.ue, pairs.module] = received
        self.trace["x"].append(x.astype(np.int8))
        self.trace["q"].append(np.where(x, q, 0.0).astype(np.float32))
        self.trace["s"].append(s_mat)
        row = self._row(t, x, q, received, alloc)
        self.rows.append(row)
        self.t += 1
        return row

    def aggregate(self, pairs: PairBatch, res, received: np.ndarray) -> list:
        """θ^{t+1} of every module from the round's received uploads, eq. (1). A baseline
        scheme (:mod:`fedopt.baselines`: HetLoRA, FlexLoRA) overrides this hook."""
        w = aggregation_weights(pairs.module, res.n_samples, received, self.pop.M,
                                self.run_cfg.normalize)
        return aggregate_round(self.backend, self.params, pairs.module, res.updates, w)

    def _row(self, t: int, x, q, received, alloc) -> dict[str, Any]:
        run, cfg, pop = self.run_cfg, self.system, self.pop
        evaluate = (t + 1) % run.eval_every == 0 or t + 1 == run.rounds
        ev = self.backend.evaluate(self.params, self.ensembles) if evaluate else None
        omega = np.asarray(pop.omega)
        # Phi^t of (7) at the latest estimates: Delta = l - min_m' l, Gamma = (eta/2)||g||^2
        ll = np.nan_to_num(self.last_loss, nan=np.nanmax(self.last_loss, initial=0.0))
        delta = ll - ll.min(axis=1, keepdims=True)
        gamma = 0.5 * cfg.lr * np.nan_to_num(self.last_grad_sq)
        phi = float(omega @ (x * delta + (1.0 - x * q) * gamma).sum(axis=1))
        e_cmp = float(np.sum(np.where(x, alloc.energy_computation, 0.0)))
        e_com = float(np.sum(np.where(x, alloc.energy_communication, 0.0)))
        n_sub = int(x.sum())
        nan = float("nan")
        return {
            "round": t,
            "accuracy": ev.accuracy if ev else nan,
            "global_accuracy": ev.global_accuracy if ev else nan,
            "loss": ev.loss if ev else nan,
            "global_loss": ev.global_loss if ev else nan,
            "energy": e_cmp + e_com,
            "energy_computation": e_cmp,
            "energy_communication": e_com,
            "bandwidth": float(np.sum(np.where(x, alloc.b, 0.0))),
            "subscriptions": n_sub,
            "received": int(np.sum(received)),
            "success_rate": float(np.mean(received)) if n_sub else nan,
            "expected_success": float(q[x].mean()) if n_sub else nan,
            "participation": float(x.any(axis=1).mean()),
            "phi": phi,
            "rho_energy": cfg.rho * (e_cmp + e_com),
            "objective": float(alloc.objective),
            "mean_power": float(np.mean(alloc.p[x.any(axis=1)])) if n_sub else nan,
            "stranded": len(alloc.extras.get("stranded", ())),
        }

    def _record_gap(self) -> None:
        """Dense backend: F(θ_m^t) − F*, max_k ‖∇F_k‖² and ‖∇F‖² at every module's θ_m^t."""
        gaps, gk, g = [], [], []
        for p in self.params:
            Fk, grads = self.backend.local_objectives(p["W"])
            omega = self.backend.n / self.backend.n.sum()
            grad_F = np.tensordot(omega, grads, axes=1)
            gaps.append(float(omega @ Fk) - self.F_star)
            gk.append(float((grads**2).sum(axis=(1, 2)).max()))
            g.append(float((grad_F**2).sum()))
        self.bound_trace["gap"].append(gaps)
        self.bound_trace["gk_max"].append(gk)
        self.bound_trace["g_sq"].append(g)

    # --- the whole run --------------------------------------------------------------------

    def run(self, resume: bool = False) -> dict[str, Any]:
        run = self.run_cfg
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume:
                state = load_checkpoint(self.out)  # also removes a killed write's temporaries
                if state is not None:
                    try:
                        self.load_state_dict(state)
                    except StateFileError as exc:
                        raise StateFileError(f"checkpoint {self.out / CHECKPOINT}: {exc}") from None
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
                    acc = row["accuracy"]
                    bar.set_postfix_str(f"round {self.t}/{run.rounds} acc "
                                        f"{'-' if math.isnan(acc) else f'{acc:.3f}'} "
                                        f"energy {energy:.3g} J", refresh=False)
                    bar.update(1)
                if (self.out is not None and run.checkpoint_every
                        and self.t % run.checkpoint_every == 0 and self.t < run.rounds):
                    save_checkpoint(self.state_dict(), self.out)
        finally:
            if bar is not None:
                bar.close()
        return self.finish(time.perf_counter() - start)

    def finish(self, seconds: float = float("nan")) -> dict[str, Any]:
        run = self.run_cfg
        extra: dict[str, Any] = {"seed": run.seed, "policy": run.policy, "M": self.pop.M,
                                 "K": self.pop.K, "normalize": run.normalize}
        bound = None
        if self.track_bound:
            from ..bound import run_bound

            bound = run_bound(self)
            extra["bound"] = {k: v for k, v in bound.items() if k not in ("gap", "bound", "A", "B")}
            for t, row in enumerate(self.rows):
                for m in range(self.pop.M):
                    row[f"gap_{m}"] = bound["gap"][t + 1, m]
                    row[f"bound_{m}"] = bound["bound"][t + 1, m]
        participation = self.participation / max(self.t, 1)
        summary = summarize(self.rows, participation, run.target_accuracy, extra)
        if self.out is not None:
            write_csv(self.rows, self.out / "metrics.csv")
            write_json(summary, self.out / "summary.json")
            write_json({"seconds_this_process": seconds}, self.out / "timing.json")
            plot_run(self.rows, self.out, title=f"({run.policy}, M={self.pop.M})", bound=bound)
            if hasattr(self.backend, "save_run"):  # e.g. the LoRA backend: peft modules + ensembles
                self.backend.save_run(self.out, self.params, self.ensembles)
            save_checkpoint(self.state_dict(), self.out)
        self.summary = summary
        return summary


def simulate(run: RunConfig, out: str | Path | None = None, *, resume: bool = False,
             progress: bool = True, track_bound: bool = False) -> dict[str, Any]:
    """Run (or resume, from ``out``'s checkpoint) a simulation; return its summary."""
    return Simulation(run, out, progress=progress, track_bound=track_bound).run(resume=resume)
