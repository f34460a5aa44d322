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
from flwr.common.constant import ErrorCode
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
from ..population import Population
from .client import properties_query
from .polling import PollingGrid
from .records import (
    ACTION,
    ACTION_PROBE,
    CONFIG_KEY,
    METRICS_KEY,
    PROBE_KEY,
    module_key,
    pack_modules,
    params_to_record,
    read_reply_metrics,
    read_train_reply,
    train_config,
    unpack_modules,
)

__all__ = ["FedOptStrategy", "NodeTable", "ChannelState"]

# error codes of a node that is not there (written by the SuperLink, or a crashed ClientApp);
# other errors (the ClientApp raised) come from a node that is up
_GONE = {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE,
         ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.CLIENT_APP_CRASHED}

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

    FedAvg's knobs, with FedAvg's meaning:

    fraction_train, min_train_nodes : each round a share ``fraction_train`` of the available
        nodes (at least ``min_train_nodes``, waited for at the start) may be scheduled; the
        allocator then chooses among them. 1.0 (default): all, no draw.
    weighted_by_key : the reply metric holding a node's D_k^t (default ``"num-examples"``).
    arrayrecord_key, configrecord_key : the record keys of Flower's convention. The config of
        every message is under ``configrecord_key``; with M = 1 the module also travels under
        ``arrayrecord_key``, so a Flower-style ClientApp reads ``msg.content["arrays"]`` and
        may reply its new weights there (turned into the change, see
        :func:`~fedopt.flower.records.read_train_reply`).
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : ``(list[RecordDict], weighted_by_key)
        -> MetricRecord`` over the replies' contents (e.g. Flower's
        ``aggregate_metricrecords``); the train one is added to the round's row, the evaluate
        one replaces the ω-weighted (3).
    population : the configured channel model for what a node does not report about itself
        (UE k's distance, |D_k|, f_k, c_k, D_k^t); default: drawn from the allocator's config.
    fold_probes : probe round t+1's pairs in round t's evaluate exchange (both at θ^{t+1}):
        two exchanges a round instead of three, the same draws and measurements.
    """

    def __init__(self, allocator=None, *, engine: RoundEngine | None = None,
                 normalize: str = "received", simulate_uplink: bool = True, seed: Any = 0,
                 probe_fraction: float = 1.0,
                 channel_fn: Callable[[int, np.random.Generator, NodeTable], ChannelState] | None = None,
                 aggregate_fn: Callable[[Params, list[Params], np.ndarray], Params] = weighted_mean_aggregate,
                 rule: AggregationRule | None = None, observers: tuple[RoundObserver, ...] = (),
                 fraction_evaluate: float = 1.0, eval_seed: int = 0,
                 min_available_nodes: int = 1, query_timeout: float = 120.0,
                 round_timeout: float = 300.0, poll_interval: float = 0.1,
                 fraction_train: float = 1.0, min_train_nodes: int = 1,
                 weighted_by_key: str = "num-examples", arrayrecord_key: str = "arrays",
                 configrecord_key: str = CONFIG_KEY,
                 train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
                 evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
                 population: Population | None = None, fold_probes: bool = True) -> None:
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ConfigError(f"fraction_evaluate: must be in [0, 1], got {fraction_evaluate}")
        if not 0.0 < fraction_train <= 1.0:
            raise ConfigError(f"fraction_train: must be in (0, 1], got {fraction_train}")
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
        self.fraction_train = float(fraction_train)
        self.min_train_nodes = int(min_train_nodes)
        self.train_rng = np.random.default_rng([eval_seed, 1])  # never shifts the engine's draws
        self.weighted_by_key = weighted_by_key
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn
        self.population = population
        self.fold_probes = bool(fold_probes)
        self._rounds: int | None = None  # start()'s num_rounds
        self._early: tuple | None = None  # next round's (channel, loss, ‖∇‖², mask), probed early
        self._eval_sent: list[Message] = []
        self.gone: set[int] = set()  # nodes that failed a request and have not answered since
        self._train_contents: list[RecordDict] = []  # this round's good train replies
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
        self._rounds, self._early = num_rounds, None
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
        early, self._early = self._early, None
        clock = time.perf_counter()
        if early is not None:  # drawn and probed in the last evaluate exchange
            channel, loss, gsq, _ = early
            channel = ChannelState(channel.distance, channel.fading,
                                   np.asarray(channel.available, bool) & self.nodes.has_node)
        else:
            channel = self.sample_train(self.channel_state())
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
        metrics = MetricRecord({k: v for k, v in row.items() if isinstance(v, (int, float))})
        if self.train_metrics_aggr_fn is not None and self._train_contents:
            metrics.update(self.train_metrics_aggr_fn(self._train_contents, self.weighted_by_key))
        return pack_modules(params), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0 or self.nodes is None:
            return []
        params = unpack_modules(arrays, self.M)
        ues = sorted(self.nodes.node_of_ue)
        if self.fraction_evaluate < 1.0:  # its own stream: evaluation never shifts the uplink draws
            n = max(1, math.ceil(self.fraction_evaluate * len(ues)))
            ues = sorted(self.eval_rng.choice(ues, n, replace=False).tolist())
        probe = self._early_probe(server_round)
        evaluated = set(ues)
        if probe is not None:  # nodes that only probe get an evaluate message without modules
            ues = sorted(evaluated | set(np.flatnonzero(probe.any(axis=1)).tolist()))
        out = []
        for k in ues:
            modules = np.flatnonzero(self.ensembles[k]).tolist() if k in evaluated else []
            probed = np.flatnonzero(probe[k]).tolist() if probe is not None else []
            content = RecordDict({module_key(m): params_to_record(params[m])
                                  for m in sorted({*modules, *probed})})
            if self.M == 1 and modules:
                content[self.arrayrecord_key] = content[module_key(0)]
            cfg = {**dict(config or {}), "server-round": int(server_round), "modules": modules}
            if probed:
                cfg["probe-modules"] = probed
            content[self.configrecord_key] = ConfigRecord(cfg)
            out.append(Message(content, dst_node_id=self.nodes.node_of_ue[k],
                               message_type=MessageType.EVALUATE))
        self._eval_sent = out
        return out

    def _early_probe(self, server_round: int) -> np.ndarray | None:
        """Fold the next round's probes into this evaluate exchange (both need θ^{t+1}, the
        aggregate just made): draw its channel and probe mask now, from the engine's stream
        in the engine's order (nothing else draws between), and probe those pairs here. None
        at the last round or with ``fold_probes=False``."""
        if not self.fold_probes or self._rounds is None or server_round >= self._rounds:
            return None
        channel = self.sample_train(self.channel_state())
        mask = self.engine.probe_mask(channel.available)
        nan = np.full((self.K, self.M), np.nan)
        self._early = (channel, nan, nan.copy(), mask)
        return mask

    def _collect_early_probes(self, replies: list[Message]) -> None:
        """The probe measurements of the evaluate replies (NaN where not answered); a node
        that did not answer is gone, as after a probe query."""
        _, loss, gsq, mask = self._early
        asked = {self.nodes.node_of_ue[int(k)] for k in np.flatnonzero(mask.any(axis=1))}
        self._read_probes(replies, self._eval_sent, asked, PROBE_KEY, loss, gsq)

    def _read_probes(self, replies: list[Message], sent: list[Message], asked: set[int],
                     key: str, loss: np.ndarray, gsq: np.ndarray) -> None:
        """Probe measurements (record ``key`` of each reply) into (loss, ‖∇‖²), NaN where not
        answered (the allocator keeps its last estimate); a node asked that did not answer is
        gone from this round on."""
        dst = self._destinations(sent)
        self.gone |= asked - {dst.get(m.metadata.reply_to_message_id) for m in replies if self._up(m)}
        for msg in replies:
            k = self.nodes.ue_of_node.get(dst.get(msg.metadata.reply_to_message_id))
            if k is None or msg.has_error() or key not in msg.content:
                continue
            r = read_reply_metrics(msg.content[key])
            loss[k, r["modules"]] = r["loss"]
            gsq[k, r["modules"]] = r["grad_sq"]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """ω-weighted means of the replying UEs' ensemble loss and accuracy (3)."""
        replies = list(replies)
        if self._early is not None:
            self._collect_early_probes(replies)
        replies = [m for m in replies if not m.has_error() and METRICS_KEY in m.content]
        if self.evaluate_metrics_aggr_fn is not None and replies:
            out = self.evaluate_metrics_aggr_fn([m.content for m in replies], self.weighted_by_key)
            self.evaluations[server_round] = dict(out)
            return out
        if any("loss" not in m.content[METRICS_KEY] or "accuracy" not in m.content[METRICS_KEY]
               for m in replies):  # a Flower-style client's own metrics: Flower's weighted mean
            from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

            out = aggregate_metricrecords([m.content for m in replies], self.weighted_by_key)
            self.evaluations[server_round] = dict(out)
            return out
        loss, acc, n = [], [], []
        for msg in replies:
            rec = msg.content[METRICS_KEY]
            loss.append(float(rec["loss"]))
            acc.append(float(rec["accuracy"]))
            n.append(float(rec[self.weighted_by_key]))
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
        and RoundState fields. Waits for ``min_available_nodes`` before round 1; run every round, and
        the node table is rebuilt whenever nodes appear, disappear, fail or come back, so a
        node that left is unavailable until it returns."""
        need = max(self.min_available_nodes, self.min_train_nodes) if self.nodes is None else 0
        while len(ids := [int(n) for n in grid.get_node_ids()]) < need:  # before round 1 only
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).",
                len(ids), need)
            time.sleep(1.0)
        self.connected = set(ids)
        ask = [n for n in ids if n not in self._queried or n in self.gone]
        replies: list[Message] = []
        sent: list[Message] = []
        if ask:
            msgs = [Message(properties_query(), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in ask]
            self._queried.update(ask)
            replies = list(grid.send_and_receive(msgs, timeout=self.query_timeout))
            sent = msgs
            dst = self._destinations(msgs)
            answered = {dst.get(m.metadata.reply_to_message_id) for m in replies if self._up(m)}
            self.gone = (self.gone | set(ask)) - answered
        key = (frozenset(self.connected), frozenset(self.gone))
        if replies or self.nodes is None or key != self._table_key:
            self.nodes = self.node_table(replies, sent)
            self._table_key = key
        return self.nodes

    @staticmethod
    def _destinations(sent: Iterable[Message]) -> dict[str, int]:
        """Message id -> destination node of pushed messages: a reply is matched to its node
        by ``reply_to_message_id``, never by its sender (an error reply the SuperLink writes
        for a node that left carries the SuperLink's id as its sender)."""
        return {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent}

    def sample_train(self, channel: ChannelState) -> ChannelState:
        """FedAvg's ``fraction_train``: a share of the available UEs (at least
        ``min_train_nodes``) may be scheduled this round, drawn from the strategy's own stream
        (the engine's draws stay those of ``fedopt simulate``)."""
        available = np.asarray(channel.available, bool)
        if self.fraction_train >= 1.0:
            return channel
        ues = np.flatnonzero(available)
        n = min(len(ues), max(self.min_train_nodes, math.ceil(self.fraction_train * len(ues))))
        keep = np.zeros_like(available)
        keep[self.train_rng.choice(ues, n, replace=False)] = True
        return ChannelState(channel.distance, channel.fading, keep)

    @staticmethod
    def _up(reply: Message) -> bool:
        """The node answered (an error its ClientApp raised counts: it is up)."""
        return not reply.has_error() or reply.error.code not in _GONE

    def _without_gone(self, channel: ChannelState) -> ChannelState:
        """The channel with the UEs whose node is known to be gone unavailable."""
        gone = np.isin(np.arange(self.K), [k for k, n in self.nodes.node_of_ue.items() if n in self.gone])
        if not gone.any():
            return channel
        return ChannelState(channel.distance, channel.fading, np.asarray(channel.available, bool) & ~gone)

    def node_table(self, replies: Iterable[Message], sent: Iterable[Message] = ()) -> NodeTable:
        """Merge properties replies into the node table (a node that re-registers under a new id
        replaces the old one once that one is gone).

        A node that reports no ``partition-id`` (e.g. a ClientApp from Flower's template, which
        has no query handler) becomes the lowest UE index without a node; what a node does not
        report of distance, |D_k|, f_k, c_k, D_k^t comes from the configured channel model
        (``population``, by default drawn from the allocator's config), with one warning line.
        """
        dst = self._destinations(sent)
        answers = []
        for msg in replies:
            if not self._up(msg):
                continue  # gone (see discover)
            ok = not msg.has_error() and CONFIG_KEY in msg.content.config_records
            answers.append((dst.get(msg.metadata.reply_to_message_id, int(msg.metadata.src_node_id)),
                            msg.content[CONFIG_KEY] if ok else ConfigRecord()))
        answers.sort(key=lambda a: "partition-id" not in a[1])  # free UEs go to the others last
        for node, rec in answers:
            if "partition-id" in rec:
                k = int(rec["partition-id"])
            else:
                k = self._free_ue(node)
                if k is None:
                    log(WARNING, "node %d reported no partition-id and all %d UEs have a node; "
                        "it is left out", node, self.K)
                    continue
            if not 0 <= k < self.K:
                raise ConfigError(f"node {node}: partition-id {k} outside 0..{self.K - 1} (K = {self.K})")
            old = self._node_of_ue.get(k)
            if old is not None and old != node and old in self.connected and old not in self.gone:
                raise ConfigError(f"partition-id {k} reported by two nodes ({old}, {node})")
            self._node_of_ue[k] = node
            row = {key: float(rec[key]) for key in _STATE_FROM_PROPERTY.values() if key in rec}
            need = [key for key in _STATE_FROM_PROPERTY.values() if key not in row
                    and not (key == "distance" and self.engine.channel_fn is not None)]
            if need:
                log(WARNING, "node %d (UE %d) reported no %s: the configured channel model's "
                    "values are used", node, k, ", ".join(need))
                row.update({key: self._modelled(key, k) for key in need})
            self._rows[k] = row
        rows = self._rows
        if not rows:
            raise ConfigError("no node answered the properties query")
        props: dict[str, np.ndarray] = {}
        first = rows[min(rows)]
        for key in _STATE_FROM_PROPERTY.values():
            if any(key not in r for r in rows.values()):
                continue  # distance with a channel_fn: the channel model gives it every round
            props[key] = np.array([rows.get(k, first)[key] for k in range(self.K)], dtype=float)
        node_of_ue = {k: n for k, n in self._node_of_ue.items()
                      if n in self.connected and n not in self.gone}
        return NodeTable(node_of_ue, {n: k for k, n in node_of_ue.items()}, props)

    def _free_ue(self, node: int) -> int | None:
        """The UE index a node without a partition id stands for: its own if it had one, else
        the lowest one without a live node."""
        for k, n in self._node_of_ue.items():
            if n == node:
                return k
        taken = {k for k, n in self._node_of_ue.items() if n in self.connected and n not in self.gone}
        return next((k for k in range(self.K) if k not in taken), None)

    def _modelled(self, key: str, k: int) -> float:
        """UE k's ``key`` in the configured channel model (the population)."""
        if self.population is None:
            from ..population import draw_population

            self.population = draw_population(self.allocator.config, 0)
        pop = self.population
        return float({"distance": pop.d, "data-size": pop.n_data, "cpu-freq": pop.f,
                      "cycles-per-bit": pop.c, "samples": pop.D}[key][k])

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
        asked = {int(m.metadata.dst_node_id) for m in msgs}
        self._read_probes(replies, msgs, asked, METRICS_KEY, loss, gsq)
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
            if self.M == 1:  # Flower's convention too (the same record: sent once)
                content[self.arrayrecord_key] = records[0]
            rec = train_config(server_round, modules, alloc.p[k], alloc.b[k, modules],
                               alloc.q[k, modules], plan.local_steps, plan.lr, energy[k, modules])
            content[self.configrecord_key] = ConfigRecord({**dict(config or {}), **dict(rec)})
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
        answered: set[int] = set()
        self._train_contents = []
        sent = self._destinations(self._sent)
        for msg in replies:
            node = sent.get(msg.metadata.reply_to_message_id)  # not the sender: see _destinations
            k = self.nodes.ue_of_node.get(node) if node is not None else None
            if k is None:
                continue
            answered.add(k)
            if msg.has_error():
                errors += 1
                gone = msg.error.code in _GONE
                if gone:
                    self.gone.add(node)
                log(WARNING, "round %d: node of UE %d replied with an error (%s); its uploads are "
                    "lost%s", plan.t + 1, k, msg.error.reason,
                    " and it is unavailable until it answers again" if gone else "")
                continue
            try:
                got = read_train_reply(msg.content, np.flatnonzero(plan.x[k]), plan.params,
                                       arrayrecord_key=self.arrayrecord_key,
                                       weighted_by_key=self.weighted_by_key)
            except (KeyError, TypeError, ValueError) as exc:
                errors += 1
                log(WARNING, "round %d: malformed reply from UE %d (%s); its uploads are lost",
                    plan.t + 1, k, exc)
                continue
            self._train_contents.append(msg.content)
            for m, r in got.items():
                i = index[(k, m)]
                updates[i] = r["update"]
                if not math.isnan(r["n_samples"]):
                    n_samples[i] = r["n_samples"]
                loss[i], gsq[i] = r["loss"], r["grad_sq"]
        scheduled = set(np.flatnonzero(plan.x.any(axis=1)).tolist())
        missing = len(scheduled - answered)
        self.gone |= {self.nodes.node_of_ue[k] for k in scheduled - answered
                      if k in self.nodes.node_of_ue}  # missed the deadline: gone until it answers
        return RoundResults(updates, loss, gsq, n_samples, errors, missing)
