"""One round of Algorithm 2, written once for every driver: :class:`RoundEngine`.

``fedopt simulate`` (:class:`fedopt.fl.Simulation`) and the Flower strategy
(:class:`fedopt.flower.FedOptStrategy`, in simulation and deployment) are thin drivers of this
engine. A driver does what only it can do (train, probe, send messages) and the engine does
the rest, with explicit state (MODEL.md, "Algorithm 2"):

1. ``channel(context)``: this round's channel (a channel model moves the UEs, e.g. the
   population's random walk); ``probe_mask(available)``: which pairs the driver measures at
   θ^t (every pair in round 0, a share ``probe_fraction`` later);
2. ``plan(observation, params) -> RoundPlan``: the measurements join last round's local-update
   measurements (a pair neither probed nor trained is NaN and the allocator keeps its last
   estimate), the allocator returns (x, p, b, q, E); the plan's ``allocation`` and ``work``
   (the scheduled pairs) are what the driver executes;
3. ``complete(plan, results) -> (params, row)``: the uplink draw (15) over every planned pair,
   the aggregation rule (eq. (1) per module, HetLoRA, FlexLoRA, ...), the bookkeeping
   (ensembles (3), participation, traces) and the round's metrics row.

What plugs in, each a declared Protocol: the aggregation rule (:class:`AggregationRule`), the
uplink (:class:`UplinkModel`), the channel model (``channel_fn``) and observers
(:class:`RoundObserver`: evaluation (3), Theorem 1's tracker, checkpoints).

Reproducibility: one generator (the run's channel stream) draws, in this order each round,
the channel model's moves, the probe mask and the uplink successes; any driver that calls the
engine in this order reproduces ``fedopt simulate`` on the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..allocator import Allocation, RoundAllocator, RoundState
from ..backends.base import PairBatch, Params, weighted_mean_aggregate
from ..errors import ConfigError
from .aggregation import aggregate_round, aggregation_weights
from .mobility import random_walk

__all__ = [
    "AggregationRule",
    "Allocator",
    "Bookkeeping",
    "BernoulliUplink",
    "ChannelState",
    "DeliveredUplink",
    "EngineDriver",
    "FunctionAggregator",
    "ModuleAggregator",
    "ModuleFedAvg",
    "Observation",
    "PopulationChannel",
    "RestrictsPairs",
    "RoundEngine",
    "RoundObserver",
    "RoundPlan",
    "RoundResults",
    "UplinkModel",
    "restrict_policy",
]


# --- what the engine exchanges with a driver -------------------------------------------------

@dataclass
class ChannelState:
    """What a channel source returns for round t: distances (K,) [m], an optional known fade
    h_k (K,) and an optional availability mask (K,)."""

    distance: np.ndarray
    fading: np.ndarray | None = None
    available: np.ndarray | None = None


@dataclass(frozen=True)
class Observation:
    """What the driver observed at the start of round t: the channel, the UEs' properties
    (the :class:`~fedopt.allocator.RoundState` fields) and the probed pairs' measurements
    (loss, ‖∇‖², (K, M), NaN where not probed)."""

    channel: ChannelState
    data_size: np.ndarray
    cpu_freq: np.ndarray
    cycles_per_bit: np.ndarray
    samples: np.ndarray  # D_k^t the allocator plans with
    loss: np.ndarray
    grad_sq: np.ndarray


@dataclass
class RoundPlan:
    """One planned round: the allocation, the work (scheduled pairs, row-major, the order of
    every per-pair array), θ^t and the state the allocator saw."""

    t: int
    state: RoundState
    allocation: Allocation
    work: PairBatch
    params: list[Params]
    local_steps: int
    lr: float

    @property
    def x(self) -> np.ndarray:
        return np.asarray(self.allocation.x) > 0.5


@dataclass
class RoundResults:
    """What came back for a plan's ``work`` (per pair, the work's order): the update θ' − θ
    (None: nothing arrived), the local loss and ‖∇‖² (NaN: not reported) and D_k^t. ``errors``
    and ``missing`` count nodes that replied with an error or not at all."""

    updates: list[Params | None]
    loss: np.ndarray
    grad_sq: np.ndarray
    n_samples: np.ndarray
    errors: int = 0
    missing: int = 0

    @classmethod
    def from_local(cls, res) -> RoundResults:
        """A :class:`~fedopt.backends.LocalResult` of every planned pair (all arrived)."""
        return cls(list(res.updates), np.asarray(res.loss, float), np.asarray(res.grad_sq, float),
                   np.asarray(res.n_samples, float))


# --- what plugs in ---------------------------------------------------------------------------

@runtime_checkable
class AggregationRule(Protocol):
    """θ^{t+1} of every module from θ^t and the round's received uploads."""

    name: str

    def initial_params(self, params: list[Params]) -> list[Params]:
        """θ^0 as the rule holds it (e.g. rank levels: truncations of one global adapter)."""
        ...

    def aggregate(self, params: list[Params], pairs: PairBatch, updates: list[Params | None],
                  n_samples: np.ndarray, received: np.ndarray) -> list[Params]:
        """θ^{t+1}; an update whose ``received`` is False is never read (it may be None)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Plain data that goes into the checkpoint (flat keys next to the engine's)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


class Allocator(Protocol):
    """What the engine asks of an allocator (:class:`~fedopt.allocator.RoundAllocator` is one):
    a config (K, M, I, η, ρ) and one allocation a round, with checkpointable state."""

    config: Any

    def allocate(self, state: RoundState) -> Allocation:
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


@runtime_checkable
class RestrictsPairs(Protocol):
    """A rule that limits which pairs a UE may subscribe to (rank levels: its own level)."""

    def allowed_pairs(self) -> np.ndarray:
        """(K, M) bool, read every round."""
        ...


@runtime_checkable
class UplinkModel(Protocol):
    """Which planned uploads the gNB receives: ``received(rng, q, arrived)``, per pair."""

    def received(self, rng: np.random.Generator, q: np.ndarray, arrived: np.ndarray
                 ) -> np.ndarray:
        ...


@runtime_checkable
class RoundObserver(Protocol):
    """Sees every plan and every completed round (evaluation, Theorem 1, checkpoints)."""

    def on_plan(self, engine: RoundEngine, plan: RoundPlan) -> None:
        ...

    def on_complete(self, engine: RoundEngine, plan: RoundPlan, params: list[Params],
                    row: dict[str, Any]) -> None:
        ...


class BernoulliUplink:
    """(15): upload i is received iff it arrived and u_i < q_i, with u_i ~ U[0, 1) drawn for
    every planned pair (arrived or not, so the stream does not depend on failures)."""

    def received(self, rng: np.random.Generator, q: np.ndarray, arrived: np.ndarray
                 ) -> np.ndarray:
        u = rng.random(len(q))
        return np.asarray(arrived, bool) & (u < q)


class DeliveredUplink:
    """Real delivery (a deployment's own radio): an upload that arrived is received."""

    def received(self, rng: np.random.Generator, q: np.ndarray, arrived: np.ndarray
                 ) -> np.ndarray:
        return np.asarray(arrived, bool).copy()


class ModuleAggregator(Protocol):
    """The weighted sum of one module's updates, eq. (1) (a backend's ``aggregate``)."""

    def aggregate(self, module: int, params: Params, updates: list[Params], weights: np.ndarray
                  ) -> Params:
        ...


class FunctionAggregator:
    """A :class:`ModuleAggregator` from ``fn(theta_m, updates, weights) -> theta_m'``."""

    def __init__(self, fn: Callable[[Params, list[Params], np.ndarray], Params]
                 = weighted_mean_aggregate) -> None:
        self.fn = fn

    def aggregate(self, module: int, params: Params, updates: list[Params], weights) -> Params:
        return self.fn(params, updates, weights)


class ModuleFedAvg:
    """Eq. (1) per module: θ_m + Σ_k s D_k / D_m · Δ_k, D_m over the received (``normalize =
    'received'``) or the subscribed uploads (``'subscribed'``); ``aggregator`` does the
    weighted sum (a backend; default :func:`~fedopt.backends.weighted_mean_aggregate`).
    Full-parameter fine-tuning uses it too: one dense module, the same rule."""

    name = "fedavg"

    def __init__(self, normalize: str = "received", aggregator: ModuleAggregator | None = None
                 ) -> None:
        if normalize not in ("received", "subscribed"):
            raise ConfigError(f"normalize: 'received' or 'subscribed', got {normalize!r}")
        self.normalize = normalize
        self.aggregator = aggregator if aggregator is not None else FunctionAggregator()

    def initial_params(self, params: list[Params]) -> list[Params]:
        return params

    def aggregate(self, params, pairs, updates, n_samples, received) -> list[Params]:
        w = aggregation_weights(pairs.module, n_samples, received, len(params), self.normalize)
        filled = [u if u is not None else {} for u in updates]  # weight 0: never read
        return aggregate_round(self.aggregator, params, pairs.module, filled, w)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class PopulationChannel:
    """A channel model: the run's UE positions moved each round by the reflected random walk
    (``step`` metres, :func:`~fedopt.fl.mobility.random_walk`) with the engine's generator."""

    def __init__(self, positions: np.ndarray, step: float, d_min: float, radius: float) -> None:
        self.positions = np.array(positions, dtype=float)
        self.step, self.d_min, self.radius = float(step), float(d_min), float(radius)

    def __call__(self, t: int, rng: np.random.Generator, context: Any = None) -> ChannelState:
        if self.step > 0:
            self.positions = random_walk(self.positions, self.step, self.d_min, self.radius, rng)
        return ChannelState(distance=np.hypot(self.positions[:, 0], self.positions[:, 1]))


def restrict_policy(policy, mask_fn: Callable[[], np.ndarray]):
    """A :class:`~fedopt.online.SwitchingPolicy` that may only pick pairs in ``mask_fn()`` (K, M)."""
    from ..online import SwitchingPolicy

    def update(costs, feasible, t, state, **kw):
        return policy.update(costs, np.asarray(feasible, bool) & mask_fn(), t, state, **kw)

    return SwitchingPolicy(f"{policy.name}+rank", policy.init, update, dict(policy.params))


# --- the engine ------------------------------------------------------------------------------

@dataclass
class Bookkeeping:
    """The engine's per-run bookkeeping, (K, M) or (K,) arrays; all of it goes into a
    checkpoint. ``ensembles``: each UE's inference ensemble (3), its last subscription."""

    K: int
    M: int
    ensembles: np.ndarray = field(init=False)
    participation: np.ndarray = field(init=False)
    last_loss: np.ndarray = field(init=False)
    last_grad_sq: np.ndarray = field(init=False)
    trained_loss: np.ndarray = field(init=False)
    trained_grad_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        K, M = self.K, self.M
        self.ensembles = np.ones((K, M), dtype=bool)  # before a UE subscribes: all modules
        self.participation = np.zeros(K)
        self.last_loss = np.full((K, M), np.nan)  # the latest estimate of every pair
        self.last_grad_sq = np.full((K, M), np.nan)
        self.trained_loss = np.full((K, M), np.nan)  # last round's local-update measurements
        self.trained_grad_sq = np.full((K, M), np.nan)


BOOK_KEYS = ("ensembles", "participation", "last_loss", "last_grad_sq", "trained_loss",
             "trained_grad_sq")


class RoundEngine:
    """Algorithm 2's round with explicit state; see the module docstring.

    ``allocator``: a :class:`~fedopt.allocator.RoundAllocator` (its config gives K, M, I, η).
    ``rule``: the :class:`AggregationRule` (default eq. (1) per module over received uploads).
    ``seed``: int, SeedSequence or Generator of the round's draws. ``uplink``: default
    :class:`BernoulliUplink`. ``channel_fn(t, rng, context) -> ChannelState``: the channel
    model (None: the driver supplies the channel). ``observers``: :class:`RoundObserver`\\ s.
    """

    def __init__(self, allocator: Allocator, *, rule: AggregationRule | None = None, seed: Any = 0,
                 probe_fraction: float = 1.0, uplink: UplinkModel | None = None,
                 channel_fn: Callable[[int, np.random.Generator, Any], ChannelState] | None = None,
                 observers: Sequence[RoundObserver] = ()) -> None:
        if not 0.0 <= probe_fraction <= 1.0:
            raise ConfigError(f"probe_fraction: must be in [0, 1], got {probe_fraction}")
        self.allocator = allocator
        cfg = allocator.config
        self.K, self.M = int(cfg.K), int(cfg.M)
        self.local_steps, self.lr = int(cfg.local_steps), float(cfg.lr)
        self.rule = rule if rule is not None else ModuleFedAvg()
        if not isinstance(self.rule, AggregationRule):
            raise TypeError(f"rule: {type(self.rule).__name__} is not an AggregationRule")
        if isinstance(self.rule, RestrictsPairs):
            if not isinstance(allocator, RoundAllocator) or allocator.policy is None:
                raise ConfigError(f"rule '{self.rule.name}' restricts the pairs a UE may pick: "
                                  f"it needs a RoundAllocator with a switching policy (not 'joint')")
            allocator.policy = restrict_policy(allocator.policy, self.rule.allowed_pairs)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.probe_fraction = float(probe_fraction)
        self.uplink = uplink if uplink is not None else BernoulliUplink()
        self.channel_fn = channel_fn
        self.observers = list(observers)
        self.t = 0
        self.book = Bookkeeping(self.K, self.M)
        self.rows: list[dict[str, Any]] = []
        self.trace: dict[str, list] = {"x": [], "q": [], "s": []}

    # --- step 1: the channel and the measurements --------------------------------------------

    def channel(self, context: Any = None) -> ChannelState | None:
        """This round's channel from the channel model (draws from the engine's generator);
        None without a channel model."""
        if self.channel_fn is None:
            return None
        return self.channel_fn(self.t, self.rng, context)

    def probe_mask(self, available: np.ndarray | None = None) -> np.ndarray:
        """(K, M) bool: the pairs to probe at θ^t: all in round 0, a random share
        ``probe_fraction`` later; only available UEs."""
        K, M = self.K, self.M
        frac = 1.0 if self.t == 0 else self.probe_fraction
        mask = self.rng.random((K, M)) < frac if frac < 1.0 else np.ones((K, M), bool)
        if available is not None:
            mask &= np.asarray(available, bool)[:, None]
        return mask

    # --- step 2: plan ----------------------------------------------------------------------

    def plan(self, obs: Observation, params: list[Params]) -> RoundPlan:
        """Merge the measurements, allocate, and return the round's plan."""
        book = self.book
        loss, gsq = book.trained_loss.copy(), book.trained_grad_sq.copy()
        probed = ~np.isnan(np.asarray(obs.loss, float))
        loss[probed] = np.asarray(obs.loss, float)[probed]
        gsq[probed] = np.asarray(obs.grad_sq, float)[probed]
        seen = ~np.isnan(loss)
        book.last_loss[seen] = loss[seen]
        book.last_grad_sq[seen] = gsq[seen]
        ch = obs.channel
        state = RoundState(t=self.t, distance=np.asarray(ch.distance, float),
                           data_size=np.asarray(obs.data_size, float), loss=loss, grad_sq=gsq,
                           cpu_freq=np.asarray(obs.cpu_freq, float),
                           cycles_per_bit=np.asarray(obs.cycles_per_bit, float),
                           samples=np.asarray(obs.samples, float), fading=ch.fading,
                           available=ch.available)
        alloc = self.allocator.allocate(state)
        plan = RoundPlan(self.t, state, alloc, PairBatch.from_mask(np.asarray(alloc.x) > 0.5),
                         params, self.local_steps, self.lr)
        for obs_ in self.observers:
            obs_.on_plan(self, plan)
        return plan

    # --- step 3: complete ------------------------------------------------------------------

    def complete(self, plan: RoundPlan, results: RoundResults) -> tuple[list[Params], dict]:
        """The uplink draw (15), aggregation, bookkeeping and the metrics row of ``plan``."""
        if plan.t != self.t:
            raise RuntimeError(f"complete: a plan for round {plan.t}, the engine is at {self.t}")
        pairs, alloc, book = plan.work, plan.allocation, self.book
        x = plan.x
        K, M = self.K, self.M
        if len(results.updates) != len(pairs):
            raise ValueError(f"{len(results.updates)} results for {len(pairs)} planned pairs")
        book.trained_loss = np.full((K, M), np.nan)
        book.trained_grad_sq = np.full((K, M), np.nan)
        book.trained_loss[pairs.ue, pairs.module] = results.loss
        book.trained_grad_sq[pairs.ue, pairs.module] = results.grad_sq
        arrived = np.array([u is not None for u in results.updates], dtype=bool)
        q_pairs = np.asarray(alloc.q, float)[pairs.ue, pairs.module]
        received = self.uplink.received(self.rng, q_pairs, arrived)
        n_samples = np.asarray(results.n_samples, float)
        params = self.rule.aggregate(plan.params, pairs, results.updates, n_samples, received)
        active = x.any(axis=1)
        book.ensembles[active] = x[active]
        book.participation += x.sum(axis=1)
        s_mat = np.zeros((K, M), bool)
        s_mat[pairs.ue, pairs.module] = received
        self.trace["x"].append(x.astype(np.int8))
        self.trace["q"].append(np.where(x, alloc.q, 0.0).astype(np.float32))
        self.trace["s"].append(s_mat)
        row = self._row(plan, received, arrived, n_samples, results)
        self.rows.append(row)
        self.t += 1
        for obs_ in self.observers:
            obs_.on_complete(self, plan, params, row)
        return params, row

    def _row(self, plan: RoundPlan, received, arrived, n_samples, results) -> dict[str, Any]:
        alloc, x, book = plan.allocation, plan.x, self.book
        omega = np.asarray(plan.state.data_size, float)
        omega = omega / omega.sum()
        q = np.asarray(alloc.q, float)
        # Phi^t of (7) at the latest estimates: Delta = l - min_m' l, Gamma = (eta/2)||g||^2
        ll = np.nan_to_num(book.last_loss, nan=np.nanmax(book.last_loss, initial=0.0))
        delta = ll - ll.min(axis=1, keepdims=True)
        gamma = 0.5 * self.lr * np.nan_to_num(book.last_grad_sq)
        phi = float(omega @ (x * delta + (1.0 - x * q) * gamma).sum(axis=1))
        e_cmp = float(np.sum(np.where(x, alloc.energy_computation, 0.0)))
        e_com = float(np.sum(np.where(x, alloc.energy_communication, 0.0)))
        n_sub = int(x.sum())
        nan = float("nan")
        ok = ~np.isnan(results.loss)
        train_loss = (float(np.average(results.loss[ok], weights=n_samples[ok]))
                      if ok.any() and n_samples[ok].sum() > 0 else nan)
        # per module: a module with few subscribers is trained on their data alone
        sub_m = x.sum(axis=0)
        rec_m = np.bincount(np.asarray(plan.work.module)[np.asarray(received, bool)],
                            minlength=self.M)
        return {
            "round": plan.t,
            "accuracy": nan,  # filled by an evaluation observer (3), where there is one
            "global_accuracy": nan,
            "loss": nan,
            "global_loss": nan,
            "energy": e_cmp + e_com,
            "energy_computation": e_cmp,
            "energy_communication": e_com,
            "bandwidth": float(np.sum(np.where(x, alloc.b, 0.0))),
            "subscriptions": n_sub,
            "arrived": int(arrived.sum()),
            "received": int(np.sum(received)),
            "success_rate": float(np.mean(received)) if n_sub else nan,
            "expected_success": float(q[x].mean()) if n_sub else nan,
            "participation": float(x.any(axis=1).mean()),
            "phi": phi,
            "rho_energy": float(self.allocator.config.rho) * (e_cmp + e_com),
            "objective": float(alloc.objective),
            "mean_power": float(np.mean(alloc.p[x.any(axis=1)])) if n_sub else nan,
            "stranded": len(alloc.extras.get("stranded", ())),
            "train_loss": train_loss,
            "error_replies": int(results.errors),
            "missing_replies": int(results.missing),
            **{f"subscriptions_{m}": int(sub_m[m]) for m in range(self.M)},
            **{f"received_{m}": int(rec_m[m]) for m in range(self.M)},
        }

    # --- checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain data (a :mod:`fedopt.safestate` tree), flat keys."""
        state: dict[str, Any] = {"t": self.t, "allocator": self.allocator.state_dict(),
                                 "rng": self.rng.bit_generator.state, "rows": self.rows}
        state.update({k: getattr(self.book, k) for k in BOOK_KEYS})
        state["trace"] = self.trace
        state.update(self.rule.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.allocator.load_state_dict(state["allocator"])
        self.rng.bit_generator.state = state["rng"]
        self.rows = state["rows"]
        self.trace = state["trace"]
        for k in BOOK_KEYS:
            setattr(self.book, k, state[k])
        self.rule.load_state_dict(state)


class EngineDriver:
    """What a driver of a :class:`RoundEngine` (``self.engine``) exposes of the run so far."""

    engine: RoundEngine

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One metrics row per completed round."""
        return self.engine.rows

    @property
    def trace(self) -> dict[str, list]:
        """x, q (as played) and s (received) of every round, (K, M) each."""
        return self.engine.trace

    @property
    def ensembles(self) -> np.ndarray:
        """(K, M) bool: each UE's inference ensemble (3)."""
        return self.engine.book.ensembles

    @property
    def participation(self) -> np.ndarray:
        """(K,) pairs each UE trained, summed over the rounds."""
        return self.engine.book.participation

    @property
    def rng(self) -> np.random.Generator:
        return self.engine.rng
