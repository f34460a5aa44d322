"""The ClientApp side: one node = one UE k, training the modules the strategy asks for.

:class:`FedOptClient` wraps any :class:`~fedopt.backends.base.TrainingBackend` and answers the
strategy's three kinds of message:

- ``query`` with ``fedopt-action = properties``: the node's partition id (its UE index k) and
  what the allocator's :class:`~fedopt.allocator.RoundState` needs from it (distance, |D_k|,
  f_k, c_k, D_k^t);
- ``query`` with ``fedopt-action = probe``: loss and ‖∇‖² of the sent modules on the node's
  data, no training (the measurements behind Δ and Γ of (7));
- ``train``: ``local-steps`` SGD steps on every module sent (one ``local_update`` call over the
  node's pairs), replied as one ArrayRecord per module (the update θ_m' − θ_m, the g of (1))
  plus the measured loss, ‖∇‖² and D_k^t per module;
- ``evaluate``: the node's ensemble (3) of the sent modules on its own test split.

:func:`make_client_app` turns a ``client_fn(context) -> FedOptClient`` into a Flower
``ClientApp``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..backends.base import ModuleSpec, PairBatch, Params, TrainingBackend
from .records import (
    ACTION,
    ACTION_PROBE,
    ACTION_PROPERTIES,
    CONFIG_KEY,
    METRICS_KEY,
    module_key,
    params_to_record,
    properties_record,
    record_to_params,
    reply_metrics,
)

__all__ = ["FedOptClient", "make_client_app"]


class FedOptClient:
    """UE ``ue`` of a :class:`TrainingBackend` behind a Flower node.

    ``specs``: the M modules (their ranks); the backend's ``init_modules`` gives the shapes
    used to fill modules a message does not carry (the backend's batched calls index params
    by module; the filled ones are never trained). ``properties``: what the node reports on a
    properties query besides ``partition-id`` (e.g. ``distance``, ``cpu-freq``); ``data-size``
    defaults to the backend's |D_k|. ``before_call(backend, ue, server_round, action)``: an
    optional hook run before each backend call (the simulation harness reseeds the sampling
    stream there, so a node's minibatches do not depend on which Ray worker serves it).
    """

    def __init__(self, backend: TrainingBackend, ue: int, specs: list[ModuleSpec], *,
                 properties: dict[str, Any] | None = None,
                 before_call: Callable[[TrainingBackend, int, int, str], None] | None = None,
                 template: list[Params] | None = None) -> None:
        self.backend = backend
        self.ue = int(ue)
        if not 0 <= self.ue < int(backend.num_ues):
            raise ValueError(f"partition-id {self.ue} outside the backend's {backend.num_ues} UEs")
        self.specs = list(specs)
        self.template = template if template is not None else backend.init_modules(self.specs)
        self.properties = dict(properties or {})
        self.before_call = before_call

    # --- helpers ----------------------------------------------------------------------------

    def _params(self, content: RecordDict, modules: list[int]) -> list[Params]:
        params = list(self.template)
        for m in modules:
            params[m] = record_to_params(content[module_key(m)])
        return params

    def _hook(self, server_round: int, action: str) -> None:
        if self.before_call is not None:
            self.before_call(self.backend, self.ue, server_round, action)

    # --- the three actions -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        props = {"data-size": float(self.backend.data_sizes()[self.ue]), **self.properties}
        props["partition-id"] = self.ue
        return props

    def train(self, msg: Message) -> Message:
        cfg = msg.content[CONFIG_KEY]
        modules = [int(m) for m in cfg["modules"]]
        params = self._params(msg.content, modules)
        self._hook(int(cfg.get("server-round", 0)), "train")
        pairs = PairBatch(np.full(len(modules), self.ue), np.asarray(modules, dtype=int))
        res = self.backend.local_update(pairs, params, int(cfg["local-steps"]), float(cfg["lr"]))
        content = RecordDict({module_key(m): params_to_record(u) for m, u in zip(modules, res.updates)})
        content[METRICS_KEY] = reply_metrics(modules, res.loss, res.grad_sq, res.n_samples)
        return Message(content, reply_to=msg)

    def probe(self, msg: Message) -> Message:
        cfg = msg.content[CONFIG_KEY]
        modules = [int(m) for m in cfg["modules"]]
        params = self._params(msg.content, modules)
        self._hook(int(cfg.get("server-round", 0)), "probe")
        pairs = PairBatch(np.full(len(modules), self.ue), np.asarray(modules, dtype=int))
        loss, gsq = self.backend.probe(pairs, params)
        content = RecordDict({METRICS_KEY: reply_metrics(modules, loss, gsq, np.zeros(len(modules)))})
        return Message(content, reply_to=msg)

    def query(self, msg: Message) -> Message:
        action = msg.content[CONFIG_KEY].get(ACTION, ACTION_PROPERTIES)
        if action == ACTION_PROBE:
            return self.probe(msg)
        if action != ACTION_PROPERTIES:
            raise ValueError(f"unknown {ACTION} '{action}'")
        return Message(RecordDict({CONFIG_KEY: properties_record(self.describe())}), reply_to=msg)

    def evaluate(self, msg: Message) -> Message:
        """Eq. (3) for this UE: the uniform ensemble of the sent modules on its test split."""
        cfg = msg.content[CONFIG_KEY]
        modules = [int(m) for m in cfg["modules"]]
        params = self._params(msg.content, modules)
        ens = np.zeros((int(self.backend.num_ues), len(self.specs)), dtype=bool)
        ens[self.ue, modules] = True
        ev = self.backend.evaluate(params, ens)
        metrics = MetricRecord({
            "loss": float(ev.ue_loss[self.ue]),
            "accuracy": float(ev.ue_accuracy[self.ue]),
            "num-examples": float(self.backend.data_sizes()[self.ue]),
        })
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)


def make_client_app(client_fn: Callable[[Context], FedOptClient]) -> ClientApp:
    """A Flower ClientApp whose train / evaluate / query handlers call ``client_fn(context)``'s
    :class:`FedOptClient`. Cache inside ``client_fn`` if building a backend is costly."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return client_fn(context).train(msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return client_fn(context).evaluate(msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return client_fn(context).query(msg)

    return app


def properties_query(server_round: int = 0) -> RecordDict:
    """The content of a properties query (used by the strategy)."""
    return RecordDict({CONFIG_KEY: ConfigRecord({ACTION: ACTION_PROPERTIES,
                                                 "server-round": int(server_round)})})
