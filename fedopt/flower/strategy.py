"""``FedOptStrategy``: Algorithm 2 as a Flower Message-API strategy.

Each round t = server_round − 1 (MODEL.md, "Algorithm 2"):

1. **State.** Node properties (partition id = UE index k, distance, |D_k|, f_k, c_k, D_k^t)
   come from one properties query to every node; ``channel_fn`` may replace the distances and
   add a known fade or an availability mask each round (a configured channel model). Loss and
   ‖∇‖² per (k, m) come from last round's train replies, and from probe queries on a share
   ``probe_fraction`` of the pairs (all pairs in round 0), as in the runtime.
2. **Allocate.** ``allocator.allocate(RoundState)`` returns (x, p, b, q, E).
3. **Configure.** Every scheduled UE's node gets its own Message: a fresh ConfigRecord
   (modules, p_k, b_{k,m}, q_{k,m}, I, η) and one ArrayRecord per module it trains.
4. **Uplink.** Upload (k, m) is received iff its reply arrived without error and, with
   ``simulate_uplink``, a seeded Bernoulli(q_{k,m}) draw succeeds (15). An error, a missing or
   a late reply is a lost upload, never an exception.
5. **Aggregate** every module by (1) (:func:`fedopt.fl.aggregation.aggregation_weights`, then
   ``aggregate_fn``, by default :func:`fedopt.backends.weighted_mean_aggregate`) and log the
   round: planned energy (4), participation, success rate, Φ-side objective.

The random draws (channel model, probe mask, uplink successes) share one generator, in the
runtime's order, so ``seed`` = the runtime's channel stream reproduces ``fedopt simulate``.
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

from ..allocator import Allocation, RoundState
from ..backends.base import PairBatch, Params, weighted_mean_aggregate
from ..errors import ConfigError
from ..fl.aggregation import aggregate_round, aggregation_weights
from .client import properties_query
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


@dataclass
class ChannelState:
    """What a channel source returns for round t: distances (K,) [m], an optional known fade
    h_k (K,) and an optional availability mask (K,)."""

    distance: np.ndarray
    fading: np.ndarray | None = None
    available: np.ndarray | None = None


class _Aggregator:
    """Adapts an ``aggregate_fn(theta, updates, weights)`` to the runtime's backend hook."""

    def __init__(self, fn: Callable[[Params, list[Params], np.ndarray], Params]) -> None:
        self.fn = fn

    def aggregate(self, module: int, params: Params, updates: list[Params], weights) -> Params:
        return self.fn(params, updates, weights)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


class FedOptStrategy(Strategy):
    """A Flower strategy that runs a :class:`~fedopt.allocator.RoundAllocator` each round.

    Parameters
    ----------
    allocator : RoundAllocator (anything with ``config`` and ``allocate(RoundState) ->
        Allocation``). Its config gives K, M, I (``local_steps``) and η (``lr``); its settings
        are the policy, ρ, β and the power / bandwidth methods.
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
    fraction_evaluate : share of available nodes asked to evaluate their ensemble (3) each
        round (0: no federated evaluation); ``eval_seed`` seeds that sample.
    min_available_nodes : wait until this many nodes are connected before round 1.
    query_timeout : seconds to wait for properties / probe replies.
    """

    def __init__(self, allocator, *, normalize: str = "received", simulate_uplink: bool = True,
                 seed: Any = 0, probe_fraction: float = 1.0,
                 channel_fn: Callable[[int, np.random.Generator, NodeTable], ChannelState] | None = None,
                 aggregate_fn: Callable[[Params, list[Params], np.ndarray], Params] = weighted_mean_aggregate,
                 fraction_evaluate: float = 1.0, eval_seed: int = 0,
                 min_available_nodes: int = 1, query_timeout: float = 600.0) -> None:
        if normalize not in ("received", "subscribed"):
            raise ConfigError(f"normalize: 'received' or 'subscribed', got {normalize!r}")
        if not 0.0 <= probe_fraction <= 1.0:
            raise ConfigError(f"probe_fraction: must be in [0, 1], got {probe_fraction}")
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ConfigError(f"fraction_evaluate: must be in [0, 1], got {fraction_evaluate}")
        self.allocator = allocator
        cfg = allocator.config
        self.K, self.M = int(cfg.K), int(cfg.M)
        self.local_steps, self.lr = int(cfg.local_steps), float(cfg.lr)
        self.normalize = normalize
        self.simulate_uplink = bool(simulate_uplink)
        self.rng = _rng(seed)
        self.eval_rng = np.random.default_rng(eval_seed)
        self.probe_fraction = float(probe_fraction)
        self.channel_fn = channel_fn
        self.aggregate_fn = aggregate_fn
        self.fraction_evaluate = float(fraction_evaluate)
        self.query_timeout = float(query_timeout)
        self.min_available_nodes = int(min_available_nodes)
        self.nodes: NodeTable | None = None
        self.connected: set[int] = set()
        self._queried: set[int] = set()
        self._node_of_ue: dict[int, int] = {}
        self._rows: dict[int, dict[str, float]] = {}
        self.trained_loss = np.full((self.K, self.M), np.nan)
        self.trained_grad_sq = np.full((self.K, self.M), np.nan)
        self.ensembles = np.ones((self.K, self.M), dtype=bool)  # before a UE subscribes: all
        self.participation = np.zeros(self.K)
        self.history: list[dict[str, Any]] = []
        self.allocations: list[Allocation] = []  # what the allocator planned, round by round
        self.round_clock: list[float] = []  # perf_counter at each configure_train
        self.evaluations: dict[int, dict[str, float]] = {}
        self._plan: dict[str, Any] | None = None

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
        policy = getattr(a, "policy", None)
        log(INFO, "\t├──> Allocator: %s (policy %s, rho %g, beta %g, power %s, bandwidth %s)",
            type(a).__name__, getattr(policy, "name", type(policy).__name__),
            a.config.rho, a.config.beta, getattr(a, "power_method", None),
            getattr(a, "bandwidth_method", None))
        log(INFO, "\t├──> K = %d UEs, M = %d modules, I = %d, lr = %g", self.K, self.M,
            self.local_steps, self.lr)
        log(INFO, "\t└──> Uplink: %s, aggregation (1) over %s uploads, probe %.2f, evaluate %.2f",
            "Bernoulli(q) simulated" if self.simulate_uplink else "real delivery",
            self.normalize, self.probe_fraction, self.fraction_evaluate)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        t = server_round - 1
        clock = time.perf_counter()
        self.round_clock.append(clock)
        self.nodes = self.discover(grid)
        t_discover = time.perf_counter() - clock
        params = unpack_modules(arrays, self.M)
        channel = self.channel_state(t)
        available = np.asarray(channel.available if channel.available is not None
                               else self.nodes.has_node, dtype=bool) & self.nodes.has_node
        clock = time.perf_counter()
        loss, gsq = self.measure(t, params, available, grid)
        t_probe = time.perf_counter() - clock
        props = self.nodes.properties
        state = RoundState(t=t, distance=np.asarray(channel.distance, float),
                           data_size=props["data-size"], loss=loss, grad_sq=gsq,
                           cpu_freq=props["cpu-freq"], cycles_per_bit=props["cycles-per-bit"],
                           samples=props["samples"], fading=channel.fading, available=available)
        clock = time.perf_counter()
        alloc = self.allocator.allocate(state)
        x = np.asarray(alloc.x) > 0.5
        self._plan = {"t": t, "x": x, "alloc": alloc, "state": state, "params": params,
                      "sent": time.perf_counter(),
                      "seconds": {"seconds_discover": t_discover, "seconds_probe": t_probe,
                                  "seconds_allocate": time.perf_counter() - clock}}
        return self.build_messages(server_round, x, alloc, params, config)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._plan is None:
            raise RuntimeError("aggregate_train before configure_train")
        plan, self._plan = self._plan, None
        self.allocations.append(plan["alloc"])
        params, row = self.aggregate(plan, list(replies))
        self.history.append(row)
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
        """A properties query to every node not asked before: its partition id (= UE k) and
        RoundState fields. Waits for ``min_available_nodes`` first; run every round, so nodes
        that join later are picked up, and nodes no longer connected are unavailable."""
        while len(ids := [int(n) for n in grid.get_node_ids()]) < self.min_available_nodes:
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).",
                len(ids), self.min_available_nodes)
            time.sleep(1.0)
        self.connected = set(ids)
        new = [n for n in ids if n not in self._queried]
        if new or self.nodes is None:
            msgs = [Message(properties_query(), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in new]
            self._queried.update(new)
            replies = list(grid.send_and_receive(msgs, timeout=self.query_timeout)) if msgs else []
            self.nodes = self.node_table(replies)
        return self.nodes

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
        need = set(_STATE_FROM_PROPERTY.values()) - ({"distance"} if self.channel_fn else set())
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
        node_of_ue = {k: n for k, n in self._node_of_ue.items() if n in self.connected}
        return NodeTable(node_of_ue, {n: k for k, n in node_of_ue.items()}, props)

    def channel_state(self, t: int) -> ChannelState:
        if self.channel_fn is None:
            return ChannelState(distance=self.nodes.properties["distance"])
        return self.channel_fn(t, self.rng, self.nodes)

    def measure(self, t: int, params: list[Params], available: np.ndarray, grid: Grid | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """This round's (loss, ‖∇‖²) (K, M): last round's train replies, overwritten by probe
        replies on the probed pairs; NaN where nothing was measured (the runtime's rule)."""
        loss, gsq = self.trained_loss.copy(), self.trained_grad_sq.copy()
        frac = 1.0 if t == 0 else self.probe_fraction
        probe = (self.rng.random((self.K, self.M)) < frac if frac < 1.0
                 else np.ones((self.K, self.M), bool))
        probe &= available[:, None]
        if not probe.any() or grid is None:
            return loss, gsq
        msgs = []
        for k in np.flatnonzero(probe.any(axis=1)):
            modules = np.flatnonzero(probe[k]).tolist()
            content = RecordDict({module_key(m): params_to_record(params[m]) for m in modules})
            content[CONFIG_KEY] = ConfigRecord({ACTION: ACTION_PROBE, "server-round": t + 1,
                                                "modules": modules})
            msgs.append(Message(content, dst_node_id=self.nodes.node_of_ue[int(k)],
                                message_type=MessageType.QUERY))
        for msg in grid.send_and_receive(msgs, timeout=self.query_timeout):
            k = self.nodes.ue_of_node.get(int(msg.metadata.src_node_id))
            if k is None or msg.has_error() or METRICS_KEY not in msg.content:
                continue  # not measured: the allocator keeps its last estimate
            r = read_reply_metrics(msg.content[METRICS_KEY])
            loss[k, r["modules"]] = r["loss"]
            gsq[k, r["modules"]] = r["grad_sq"]
        return loss, gsq

    def build_messages(self, server_round: int, x: np.ndarray, alloc: Allocation,
                       params: list[Params], config: ConfigRecord | None = None) -> list[Message]:
        """One Message per scheduled UE with a fresh ConfigRecord: modules, p_k, b_{k,m},
        q_{k,m}, E_{k,m}, I and η (on top of a copy of the user's train ``config``), plus one
        ArrayRecord per module."""
        records = [params_to_record(p) for p in params]  # shared read-only payloads
        energy = np.asarray(alloc.energy)
        out = []
        for k in np.flatnonzero(x.any(axis=1)):
            modules = np.flatnonzero(x[k])
            node = self.nodes.node_of_ue.get(int(k))
            if node is None:
                continue  # cannot happen: unavailable UEs are never scheduled
            content = RecordDict({module_key(m): records[m] for m in modules})
            rec = train_config(server_round, modules, alloc.p[k], alloc.b[k, modules],
                               alloc.q[k, modules], self.local_steps, self.lr, energy[k, modules])
            content[CONFIG_KEY] = ConfigRecord({**dict(config or {}), **dict(rec)})
            out.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
        return out

    def aggregate(self, plan: dict[str, Any], replies: list[Message]) -> tuple[list[Params], dict]:
        """Uplink draws, eq. (1) per module and the round's metrics row."""
        t, x, alloc, state, params = plan["t"], plan["x"], plan["alloc"], plan["state"], plan["params"]
        K, M = self.K, self.M
        pairs = PairBatch.from_mask(x)  # row-major, the runtime's pair order
        u = self.rng.random(len(pairs))  # drawn for every planned pair, arrived or not
        index = {(int(k), int(m)): i for i, (k, m) in enumerate(zip(pairs.ue, pairs.module))}
        updates: list[Params | None] = [None] * len(pairs)
        n_samples = np.asarray(state.samples, float)[pairs.ue].copy()  # planned D_k^t
        trained_loss = np.full((K, M), np.nan)
        trained_gsq = np.full((K, M), np.nan)
        errors = late = 0
        replied = set()
        for msg in replies:
            k = self.nodes.ue_of_node.get(int(msg.metadata.src_node_id))
            if k is None:
                continue
            if msg.has_error():
                errors += 1
                log(WARNING, "round %d: node of UE %d replied with an error (%s); its uploads are lost",
                    t + 1, k, msg.error.reason)
                continue
            try:
                r = read_reply_metrics(msg.content[METRICS_KEY])
                got = {int(m): record_to_params(msg.content[module_key(m)]) for m in r["modules"]}
            except (KeyError, TypeError, ValueError) as exc:
                errors += 1
                log(WARNING, "round %d: malformed reply from UE %d (%s); its uploads are lost", t + 1, k, exc)
                continue
            replied.add(k)
            for j, m in enumerate(r["modules"]):
                i = index.get((k, int(m)))
                if i is None:
                    continue  # a module it was not asked to train
                updates[i] = got[int(m)]
                if r["n_samples"].size:
                    n_samples[i] = r["n_samples"][j]
                trained_loss[k, m] = r["loss"][j]
                trained_gsq[k, m] = r["grad_sq"][j]
        scheduled = set(np.flatnonzero(x.any(axis=1)).tolist())
        late = len(scheduled - replied) - errors
        arrived = np.array([upd is not None for upd in updates], dtype=bool)
        q = np.asarray(alloc.q, float)[pairs.ue, pairs.module]
        received = arrived & (u < q) if self.simulate_uplink else arrived
        w = aggregation_weights(pairs.module, n_samples, received, M, self.normalize)
        filled = [upd if upd is not None else {} for upd in updates]  # weight 0: never read
        new_params = aggregate_round(_Aggregator(self.aggregate_fn), params, pairs.module, filled, w)
        # measurements for next round's state (the runtime's rule: every trained pair reports)
        self.trained_loss, self.trained_grad_sq = trained_loss, trained_gsq
        active = x.any(axis=1)
        self.ensembles[active] = x[active]
        self.participation += x.sum(axis=1)
        row = self._row(t, x, alloc, received, arrived, n_samples, trained_loss, errors,
                        max(late, 0), time.perf_counter() - plan["sent"])
        row.update(plan.get("seconds", {}))
        return new_params, row

    def _row(self, t, x, alloc, received, arrived, n_samples, trained_loss, errors, late,
             seconds) -> dict[str, Any]:
        n_sub = int(x.sum())
        e_cmp = float(np.sum(np.where(x, alloc.energy_computation, 0.0)))
        e_com = float(np.sum(np.where(x, alloc.energy_communication, 0.0)))
        q = np.asarray(alloc.q, float)
        nan = float("nan")
        k, m = np.nonzero(x)
        ok = ~np.isnan(trained_loss[k, m])
        train_loss = (float(np.average(trained_loss[k, m][ok], weights=n_samples[ok]))
                      if ok.any() else nan)
        return {
            "round": t,
            "energy": e_cmp + e_com,
            "energy_computation": e_cmp,
            "energy_communication": e_com,
            "bandwidth": float(np.sum(np.where(x, alloc.b, 0.0))),
            "subscriptions": n_sub,
            "arrived": int(arrived.sum()),
            "received": int(received.sum()),
            "success_rate": float(received.mean()) if n_sub else nan,
            "expected_success": float(q[x].mean()) if n_sub else nan,
            "participation": float(x.any(axis=1).mean()),
            "objective": float(alloc.objective),
            "mean_power": float(np.mean(alloc.p[x.any(axis=1)])) if n_sub else nan,
            "train_loss": train_loss,
            "error_replies": int(errors),
            "missing_replies": int(late),
            "seconds_train": float(seconds),  # messages out -> replies aggregated
        }
