"""``FedOptStrategy``: Algorithm 2 as a Flower Message-API strategy, a thin driver of the
round engine (:class:`fedopt.fl.round.RoundEngine`, the same round ``fedopt simulate`` runs).

Each round t = server_round − 1 (MODEL.md, "Algorithm 2"); the strategy does the messaging,
the engine everything else:

1. **State.** Node properties (partition id = UE index k, distance, |D_k|, f_k, c_k, D_k^t)
   come from one properties query to every node; the engine's channel model (``channel_fn``)
   may replace the distances and add a known fade or an availability mask each round. Loss
   and ‖∇‖² per (k, m) come from last round's train replies and from probe queries on the
   engine's probe mask (all pairs in round 0, a share ``probe_fraction`` later).
2. **Plan.** ``engine.plan`` runs the allocator: (x, p, b, q, E).
3. **Configure.** Every scheduled UE's node gets its own Message: a fresh ConfigRecord
   (modules, p_k, b_{k,m}, q_{k,m}, I, η) and one ArrayRecord per module it trains.
4. **Complete.** The replies become the engine's :class:`~fedopt.fl.round.RoundResults`
   (an error, a missing or a late reply is a lost upload, never an exception); the engine
   draws the uplink (15) (``simulate_uplink``; otherwise an arrived upload is received),
   aggregates with its rule (eq. (1) per module by default, with ``aggregate_fn``; HetLoRA /
   FlexLoRA as :class:`~fedopt.baselines.rules.RankLevels`) and logs the round.

The random draws (channel model, probe mask, uplink successes) share the engine's generator,
so an engine seeded with the runtime's channel stream reproduces ``fedopt simulate``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from ..allocator import Allocation, RoundAllocator
from ..backends.base import Params, weighted_mean_aggregate
from ..errors import ConfigError
from ..fl.round import (
    AggregationRule,
    BernoulliUplink,
    ChannelState,
    DeliveredUplink,
    EngineDriver,
    FunctionAggregator,
    ModuleFedAvg,
    Observation,
    RoundEngine,
    RoundObserver,
    RoundPlan,
    RoundResults,
)
from .client import properties_query
from .polling import PollingGrid
from .records import (
    ACTION,
    ACTION_PROBE,
    CONFIG_KEY,
    METRICS_KEY,
    module_key,
    pack_modules,
    params_to_record,
    read_reply_metrics,
    record_to_params,
    train_config,
    unpack_modules,
)

__all__ = ["FedOptStrategy", "NodeTable", "ChannelState"]

# RoundState field <- node property
_STATE_FROM_PROPERTY = {"distance": "distance", "data_size": "data-size", "cpu_freq": "cpu-freq",
                        "cycles_per_bit": "cycles-per-bit", "samples": "samples"}


@dataclass
class NodeTable:
    """Node ids <-> UE indices and the nodes' reported properties, (K,) arrays.

    Node ids are random 64-bit integers; they stay Python ints in dicts (numpy would turn them
    into floats). A UE without a node (or whose node did not answer) is unavailable; its
    properties are copied from the first known UE so the state stays finite (ours).
    """

    node_of_ue: dict[int, int]
    ue_of_node: dict[int, int]
    properties: dict[str, np.ndarray]

    @property
    def has_node(self) -> np.ndarray:
        K = next(iter(self.properties.values())).shape[0]
        return np.isin(np.arange(K), list(self.node_of_ue))


class FedOptStrategy(Strategy, EngineDriver):
    """A Flower strategy that runs Algorithm 2's round (:class:`~fedopt.fl.round.RoundEngine`).

    Parameters
    ----------
    allocator : RoundAllocator (anything with ``config`` and ``allocate(RoundState) ->
        Allocation``). Its config gives K, M, I (``local_steps``) and η (``lr``); its settings
        are the policy, ρ, β and the power / bandwidth methods. Or ``engine``:
    engine : a ready :class:`~fedopt.fl.round.RoundEngine` (e.g.
        :func:`fedopt.fl.setup.make_engine` of a run); then the engine settings below
        (normalize ... observers) must be left at their defaults.
    normalize : ``"received"`` or ``"subscribed"``, the denominator D_m^t of (1).
    simulate_uplink : draw each upload's success with probability q (15); False: a reply that
        arrives is a received upload (real delivery).
    seed : int, SeedSequence or Generator for the uplink draws, the probe mask and
        ``channel_fn``.
    probe_fraction : share of (k, m) pairs probed each round (all in round 0); 0: only the
        previous round's train replies feed the Δ/Γ estimator.
    channel_fn : ``channel_fn(t, rng, nodes: NodeTable) -> ChannelState``; None: the
        distances the nodes reported, Rayleigh fading known only in distribution.
    aggregate_fn : ``(theta_m, updates, weights) -> theta_m'``; default
        :func:`fedopt.backends.weighted_mean_aggregate`, eq. (1).
    rule : an :class:`~fedopt.fl.round.AggregationRule` instead of eq. (1) per module (e.g.
        :class:`fedopt.baselines.rules.RankLevels` for HetLoRA / FlexLoRA).
    observers : :class:`~fedopt.fl.round.RoundObserver`\\ s of the engine.
    fraction_evaluate : share of available nodes asked to evaluate their ensemble (3) each
        round (0: no federated evaluation); ``eval_seed`` seeds that sample.
    min_available_nodes : wait until this many nodes are connected before round 1.
    query_timeout : seconds to wait for properties / probe replies.
    round_timeout : the round's deadline, seconds to wait for train (and evaluate) replies
        (``start``'s ``timeout`` when that is not given; Flower's default is 3600 s). A node
        that misses it, or replies with an error, is unavailable until it answers again.
    poll_interval : seconds between pulls for replies (Flower's deployment Grid waits 3 s).
    """

    def __init__(self, allocator=None, *, engine: RoundEngine | None = None,
                 normalize: str = "received", simulate_uplink: bool = True, seed: Any = 0,
                 probe_fraction: float = 1.0,
                 channel_fn: Callable[[int, np.random.Generator, NodeTable], ChannelState] | None = None,
                 aggregate_fn: Callable[[Params, list[Params], np.ndarray], Params] = weighted_mean_aggregate,
                 rule: AggregationRule | None = None, observers: tuple[RoundObserver, ...] = (),
                 fraction_evaluate: float = 1.0, eval_seed: int = 0,
                 min_available_nodes: int = 1, query_timeout: float = 120.0,
                 round_timeout: float = 300.0, poll_interval: float = 0.1) -> None:
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ConfigError(f"fraction_evaluate: must be in [0, 1], got {fraction_evaluate}")
        if (allocator is None) == (engine is None):
            raise ConfigError("FedOptStrategy: give an allocator or an engine (not both)")
        if engine is None:
            if rule is None:
                rule = ModuleFedAvg(normalize, FunctionAggregator(aggregate_fn))
            engine = RoundEngine(allocator, rule=rule, seed=seed, probe_fraction=probe_fraction,
                                 uplink=BernoulliUplink() if simulate_uplink else DeliveredUplink(),
                                 channel_fn=channel_fn, observers=observers)
        self.engine = engine
        self.allocator = engine.allocator
        self.K, self.M = engine.K, engine.M
        self.eval_rng = np.random.default_rng(eval_seed)
        self.fraction_evaluate = float(fraction_evaluate)
        self.query_timeout = float(query_timeout)
        self.round_timeout = float(round_timeout)
        self.poll_interval = float(poll_interval)
        self.gone: set[int] = set()  # nodes that failed a request and have not answered since
        self._sent: list[Message] = []  # this round's train messages (ids set once pushed)
        self._table_key: tuple | None = None
        self.min_available_nodes = int(min_available_nodes)
        self.nodes: NodeTable | None = None
        self.connected: set[int] = set()
        self._queried: set[int] = set()
        self._node_of_ue: dict[int, int] = {}
        self._rows: dict[int, dict[str, float]] = {}
        self.allocations: list[Allocation] = []  # what the allocator planned, round by round
        self.round_clock: list[float] = []  # perf_counter at each configure_train
        self.evaluations: dict[int, dict[str, float]] = {}
        self.pending: RoundPlan | None = None  # the plan whose train replies are awaited
        self._timing: dict[str, float] = {}

    # --- the engine's state, as the strategy's -----------------------------------------------

    @property
    def history(self) -> list[dict[str, Any]]:
        """One metrics row per completed round (the engine's rows)."""
        return self.engine.rows

    @classmethod
    def from_settings(cls, system, policy="primal_dual", power_method: str | None = None,
                      bandwidth_method: str | None = None, *, allocator_kwargs: dict | None = None,
                      **kwargs: Any) -> FedOptStrategy:
        """Build the allocator too: ``system`` is a :class:`~fedopt.config.SystemConfig` (ρ, β,
        M_max, ... live there), then the policy and the (21) / (16) methods; ``kwargs`` are
        this class's settings."""
        from ..allocator import RoundAllocator

        try:
            allocator = RoundAllocator(system, policy, power_method, bandwidth_method,
                                       **(allocator_kwargs or {}))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(allocator, **kwargs)

    # --- Strategy API ------------------------------------------------------------------------

    def summary(self) -> None:
        a = self.allocator
        if isinstance(a, RoundAllocator):
            log(INFO, "\t├──> Allocator: RoundAllocator (policy %s, rho %g, beta %g, power %s, "
                "bandwidth %s)", a.policy.name if a.policy is not None else "joint",
                a.config.rho, a.config.beta, a.power_method, a.bandwidth_method)
        else:
            log(INFO, "\t├──> Allocator: %s (rho %g, beta %g)", type(a).__name__,
                a.config.rho, a.config.beta)
        e = self.engine
        log(INFO, "\t├──> K = %d UEs, M = %d modules, I = %d, lr = %g", self.K, self.M,
            e.local_steps, e.lr)
        log(INFO, "\t└──> Uplink: %s, aggregation %s, probe %.2f, evaluate %.2f",
            type(e.uplink).__name__, e.rule.name, e.probe_fraction, self.fraction_evaluate)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float | None = None, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None):
        """Flower's round loop with the round deadline ``round_timeout`` (unless ``timeout``
        is given) and replies pulled every ``poll_interval`` s (:class:`PollingGrid`)."""
        return super().start(PollingGrid(grid, self.poll_interval), initial_arrays, num_rounds,
                             self.round_timeout if timeout is None else timeout, train_config,
                             evaluate_config, evaluate_fn)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if server_round - 1 != self.engine.t:
            raise RuntimeError(f"configure_train: round {server_round}, the engine is at round "
                               f"{self.engine.t + 1}")
        clock = time.perf_counter()
        self.round_clock.append(clock)
        self.nodes = self.discover(grid)
        t_discover = time.perf_counter() - clock
        params = unpack_modules(arrays, self.M)
        channel = self.channel_state()
        clock = time.perf_counter()
        mask = self.engine.probe_mask(channel.available)
        loss, gsq = self.probe(params, mask, grid)
        t_probe = time.perf_counter() - clock
        channel = self._without_gone(channel)  # a node that did not answer its probe
        props = self.nodes.properties
        obs = Observation(channel, props["data-size"], props["cpu-freq"],
                          props["cycles-per-bit"], props["samples"], loss, gsq)
        clock = time.perf_counter()
        plan = self.engine.plan(obs, params)
        self.pending = plan
        self._timing = {"seconds_discover": t_discover, "seconds_probe": t_probe,
                        "seconds_allocate": time.perf_counter() - clock,
                        "sent": time.perf_counter()}
        self._sent = self.build_messages(server_round, plan, config)
        return self._sent

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.pending is None:
            raise RuntimeError("aggregate_train before configure_train")
        plan, self.pending = self.pending, None
        self.allocations.append(plan.allocation)
        results = self.collect(plan, list(replies))
        params, row = self.engine.complete(plan, results)
        timing = dict(self._timing)
        row["seconds_train"] = time.perf_counter() - timing.pop("sent")  # out -> aggregated
        row.update(timing)
        log(INFO, "fedopt round %d: %d/%d uploads received, participation %.2f, energy %.4g J",
            row["round"], row["received"], row["subscriptions"], row["participation"], row["energy"])
        return pack_modules(params), MetricRecord({k: v for k, v in row.items()
                                                   if isinstance(v, (int, float))})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0 or self.nodes is None:
            return []
        params = unpack_modules(arrays, self.M)
        ues = sorted(self.nodes.node_of_ue)
        if self.fraction_evaluate < 1.0:  # its own stream: evaluation never shifts the uplink draws
            n = max(1, math.ceil(self.fraction_evaluate * len(ues)))
            ues = sorted(self.eval_rng.choice(ues, n, replace=False).tolist())
        out = []
        for k in ues:
            modules = np.flatnonzero(self.ensembles[k]).tolist()
            content = RecordDict({module_key(m): params_to_record(params[m]) for m in modules})
            content[CONFIG_KEY] = ConfigRecord({**dict(config or {}), "server-round": int(server_round),
                                                "modules": modules})
            out.append(Message(content, dst_node_id=self.nodes.node_of_ue[k],
                               message_type=MessageType.EVALUATE))
        return out

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """ω-weighted means of the replying UEs' ensemble loss and accuracy (3)."""
        loss, acc, n = [], [], []
        for msg in replies:
            if msg.has_error() or METRICS_KEY not in msg.content:
                continue
            rec = msg.content[METRICS_KEY]
            loss.append(float(rec["loss"]))
            acc.append(float(rec["accuracy"]))
            n.append(float(rec["num-examples"]))
        if not n:
            return None
        w = np.asarray(n) / np.sum(n)
        out = {"loss": float(w @ loss), "accuracy": float(w @ acc), "nodes": len(n)}
        self.evaluations[server_round] = out
        return MetricRecord(out)

    # --- the pieces (public so they can be tested and reused) --------------------------------

    def discover(self, grid: Grid) -> NodeTable:
        """A properties query to every node not asked before, and to every node that failed a
        request and is still connected (it is back once it answers): its partition id (= UE k)
        and RoundState fields. Waits for ``min_available_nodes`` first; run every round, and
        the node table is rebuilt whenever nodes appear, disappear, fail or come back, so a
        node that left is unavailable until it returns."""
        while len(ids := [int(n) for n in grid.get_node_ids()]) < self.min_available_nodes:
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).",
                len(ids), self.min_available_nodes)
            time.sleep(1.0)
        self.connected = set(ids)
        ask = [n for n in ids if n not in self._queried or n in self.gone]
        replies: list[Message] = []
        if ask:
            msgs = [Message(properties_query(), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in ask]
            self._queried.update(ask)
            replies = list(grid.send_and_receive(msgs, timeout=self.query_timeout))
            dst = self._destinations(msgs)
            answered = {dst.get(m.metadata.reply_to_message_id) for m in replies if not m.has_error()}
            self.gone = (self.gone | set(ask)) - answered
        key = (frozenset(self.connected), frozenset(self.gone))
        if replies or self.nodes is None or key != self._table_key:
            self.nodes = self.node_table(replies)
            self._table_key = key
        return self.nodes

    @staticmethod
    def _destinations(sent: Iterable[Message]) -> dict[str, int]:
        """Message id -> destination node of pushed messages: a reply is matched to its node
        by ``reply_to_message_id``, never by its sender (an error reply the SuperLink writes
        for a node that left carries the SuperLink's id as its sender)."""
        return {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent}

    def _without_gone(self, channel: ChannelState) -> ChannelState:
        """The channel with the UEs whose node is known to be gone unavailable."""
        gone = np.isin(np.arange(self.K), [k for k, n in self.nodes.node_of_ue.items() if n in self.gone])
        if not gone.any():
            return channel
        return ChannelState(channel.distance, channel.fading, np.asarray(channel.available, bool) & ~gone)

    def node_table(self, replies: Iterable[Message]) -> NodeTable:
        """Merge properties replies into the node table (a node that re-registers under a new id
        replaces the old one once that one is gone)."""
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error() or CONFIG_KEY not in msg.content:
                log(WARNING, "node %d did not report its properties; it is left out", node)
                continue
            rec = msg.content[CONFIG_KEY]
            k = int(rec["partition-id"])
            if not 0 <= k < self.K:
                raise ConfigError(f"node {node}: partition-id {k} outside 0..{self.K - 1} (K = {self.K})")
            old = self._node_of_ue.get(k)
            if old is not None and old != node and old in self.connected:
                raise ConfigError(f"partition-id {k} reported by two nodes ({old}, {node})")
            self._node_of_ue[k] = node
            self._rows[k] = {key: float(rec[key]) for key in _STATE_FROM_PROPERTY.values() if key in rec}
        rows = self._rows
        if not rows:
            raise ConfigError("no node reported its properties (partition-id)")
        need = set(_STATE_FROM_PROPERTY.values()) - ({"distance"} if self.engine.channel_fn else set())
        props: dict[str, np.ndarray] = {}
        first = rows[min(rows)]
        for key in _STATE_FROM_PROPERTY.values():
            missing = [k for k in rows if key not in rows[k]]
            if missing and key in need:
                raise ConfigError(f"node of partition {missing[0]} did not report '{key}' "
                                  f"(report it from the ClientApp{' or set channel_fn' if key == 'distance' else ''})")
            if missing:
                continue
            props[key] = np.array([rows.get(k, first)[key] for k in range(self.K)], dtype=float)
        node_of_ue = {k: n for k, n in self._node_of_ue.items()
                      if n in self.connected and n not in self.gone}
        return NodeTable(node_of_ue, {n: k for k, n in node_of_ue.items()}, props)

    def channel_state(self) -> ChannelState:
        """This round's channel: the engine's channel model (given the node table), else the
        distances the nodes reported; UEs without a node are unavailable."""
        channel = self.engine.channel(self.nodes)
        if channel is None:
            channel = ChannelState(distance=self.nodes.properties["distance"])
        has = self.nodes.has_node
        available = has if channel.available is None else np.asarray(channel.available, bool) & has
        return ChannelState(np.asarray(channel.distance, float), channel.fading, available)

    def probe(self, params: list[Params], mask: np.ndarray, grid: Grid | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(loss, ‖∇‖²) (K, M) of the pairs in ``mask`` from probe queries at θ^t; NaN where
        not probed or not answered (the allocator then keeps its last estimate)."""
        loss = np.full((self.K, self.M), np.nan)
        gsq = np.full((self.K, self.M), np.nan)
        if not mask.any() or grid is None:
            return loss, gsq
        msgs = []
        for k in np.flatnonzero(mask.any(axis=1)):
            modules = np.flatnonzero(mask[k]).tolist()
            content = RecordDict({module_key(m): params_to_record(params[m]) for m in modules})
            content[CONFIG_KEY] = ConfigRecord({ACTION: ACTION_PROBE,
                                                "server-round": self.engine.t + 1,
                                                "modules": modules})
            msgs.append(Message(content, dst_node_id=self.nodes.node_of_ue[int(k)],
                                message_type=MessageType.QUERY))
        replies = list(grid.send_and_receive(msgs, timeout=self.query_timeout))
        dst = self._destinations(msgs)
        answered = {dst.get(m.metadata.reply_to_message_id) for m in replies if not m.has_error()}
        self.gone |= set(dst.values()) - answered  # unavailable from this round on
        for msg in replies:
            k = self.nodes.ue_of_node.get(dst.get(msg.metadata.reply_to_message_id))
            if k is None or msg.has_error() or METRICS_KEY not in msg.content:
                continue  # not measured: the allocator keeps its last estimate
            r = read_reply_metrics(msg.content[METRICS_KEY])
            loss[k, r["modules"]] = r["loss"]
            gsq[k, r["modules"]] = r["grad_sq"]
        return loss, gsq

    def build_messages(self, server_round: int, plan: RoundPlan,
                       config: ConfigRecord | None = None) -> list[Message]:
        """One Message per scheduled UE with a fresh ConfigRecord: modules, p_k, b_{k,m},
        q_{k,m}, E_{k,m}, I and η (on top of a copy of the user's train ``config``), plus one
        ArrayRecord per module."""
        alloc, x = plan.allocation, plan.x
        records = [params_to_record(p) for p in plan.params]  # shared read-only payloads
        energy = np.asarray(alloc.energy)
        out = []
        for k in np.flatnonzero(x.any(axis=1)):
            modules = np.flatnonzero(x[k])
            node = self.nodes.node_of_ue.get(int(k))
            if node is None:
                continue  # cannot happen: unavailable UEs are never scheduled
            content = RecordDict({module_key(m): records[m] for m in modules})
            rec = train_config(server_round, modules, alloc.p[k], alloc.b[k, modules],
                               alloc.q[k, modules], plan.local_steps, plan.lr, energy[k, modules])
            content[CONFIG_KEY] = ConfigRecord({**dict(config or {}), **dict(rec)})
            out.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
        return out

    def collect(self, plan: RoundPlan, replies: list[Message]) -> RoundResults:
        """The train replies as the engine's results, per planned pair: the update, loss,
        ‖∇‖² and D_k^t (the planned D_k^t where a reply does not say); errors and missing
        replies counted, never raised."""
        pairs = plan.work  # row-major, the runtime's pair order
        index = {(int(k), int(m)): i for i, (k, m) in enumerate(zip(pairs.ue, pairs.module))}
        updates: list[Params | None] = [None] * len(pairs)
        n_samples = np.asarray(plan.state.samples, float)[pairs.ue].copy()
        loss = np.full(len(pairs), np.nan)
        gsq = np.full(len(pairs), np.nan)
        errors = 0
        replied = set()
        sent = self._destinations(self._sent)
        for msg in replies:
            node = sent.get(msg.metadata.reply_to_message_id)  # not the sender: see _destinations
            k = self.nodes.ue_of_node.get(node) if node is not None else None
            if k is None:
                continue
            if msg.has_error():
                errors += 1
                self.gone.add(node)
                log(WARNING, "round %d: node of UE %d replied with an error (%s); its uploads are "
                    "lost and it is unavailable until it answers again", plan.t + 1, k, msg.error.reason)
                continue
            try:
                r = read_reply_metrics(msg.content[METRICS_KEY])
                got = {int(m): record_to_params(msg.content[module_key(m)]) for m in r["modules"]}
            except (KeyError, TypeError, ValueError) as exc:
                errors += 1
                log(WARNING, "round %d: malformed reply from UE %d (%s); its uploads are lost",
                    plan.t + 1, k, exc)
                continue
            replied.add(k)
            for j, m in enumerate(r["modules"]):
                i = index.get((k, int(m)))
                if i is None:
                    continue  # a module it was not asked to train
                updates[i] = got[int(m)]
                if r["n_samples"].size:
                    n_samples[i] = r["n_samples"][j]
                loss[i] = r["loss"][j]
                gsq[i] = r["grad_sq"][j]
        scheduled = set(np.flatnonzero(plan.x.any(axis=1)).tolist())
        missing = max(len(scheduled - replied) - errors, 0)
        late = {self.nodes.node_of_ue[k] for k in scheduled - replied if k in self.nodes.node_of_ue}
        self.gone |= late  # errors and missed deadlines: unavailable until it answers again
        return RoundResults(updates, loss, gsq, n_samples, errors, missing)
