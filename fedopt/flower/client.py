"""The ClientApp side: one node = one UE k, training the modules the strategy asks for.

:class:`FedOptClient` wraps any :class:`~fedopt.backends.base.TrainingBackend` and answers the
strategy's messages:

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
``ClientApp``. :func:`train_app` does the same for a plain torch model and the user's own
``train(model, data)`` function (M = 1: the model is the one module).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .. import safestate
from ..backends.base import ModuleSpec, PairBatch, Params, TrainingBackend
from .records import (
    ACTION,
    ACTION_PROBE,
    ACTION_PROPERTIES,
    CONFIG_KEY,
    METRICS_KEY,
    PROBE_KEY,
    module_key,
    params_to_record,
    properties_record,
    record_to_params,
    reply_metrics,
)

__all__ = ["FedOptClient", "make_client_app", "train_app"]


class FedOptClient:
    """UE ``ue`` of a :class:`TrainingBackend` behind a Flower node.

    ``specs``: the M modules (their ranks); the backend's ``init_modules`` gives the shapes
    used to fill modules a message does not carry (the backend's batched calls index params
    by module; the filled ones are never trained). ``properties``: what the node reports on a
    properties query besides ``partition-id`` (e.g. ``distance``, ``cpu-freq``); ``data-size``
    defaults to the backend's |D_k|.

    ``node_state`` (the node's ``context.state``) and ``initial_state`` (a backend
    ``state_dict()``) make the backend's random state per node: before each backend call the
    node's own last state (or ``initial_state`` on its first call) is loaded, and after it the
    new state is stored back in ``node_state``. A worker process may then share one backend
    among many nodes (Ray does, and serves a node from any worker) while each node's minibatch
    stream stays its own and the run is reproducible.
    """

    STATE_KEY = "fedopt-backend"

    def __init__(self, backend: TrainingBackend, ue: int, specs: list[ModuleSpec], *,
                 properties: dict[str, Any] | None = None, node_state: RecordDict | None = None,
                 initial_state: dict | None = None, template: list[Params] | None = None) -> None:
        self.backend = backend
        self.ue = int(ue)
        if not 0 <= self.ue < int(backend.num_ues):
            raise ValueError(f"partition-id {self.ue} outside the backend's {backend.num_ues} UEs")
        self.specs = list(specs)
        self.template = template if template is not None else backend.init_modules(self.specs)
        self.properties = dict(properties or {})
        self.node_state = node_state
        self.initial_state = initial_state

    # --- helpers ----------------------------------------------------------------------------

    def _params(self, content: RecordDict, modules: list[int]) -> list[Params]:
        params = list(self.template)
        for m in modules:
            params[m] = record_to_params(content[module_key(m)])
        return params

    @contextmanager
    def _own_state(self):
        """The node's backend random state around one call (see the class docstring)."""
        if self.node_state is None:
            yield
            return
        if self.STATE_KEY in self.node_state:
            data = self.node_state[self.STATE_KEY]["state"]
            self.backend.load_state_dict(safestate.loads(data, self.STATE_KEY, what="node state"))
        elif self.initial_state is not None:
            self.backend.load_state_dict(self.initial_state)
        yield
        self.node_state[self.STATE_KEY] = ConfigRecord(
            {"state": safestate.dumps(self.backend.state_dict(), self.STATE_KEY)})  # never pickle

    # --- the actions -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        props = {"data-size": float(self.backend.data_sizes()[self.ue]), **self.properties}
        props["partition-id"] = self.ue
        return props

    def train(self, msg: Message) -> Message:
        cfg = msg.content[CONFIG_KEY]
        modules = [int(m) for m in cfg["modules"]]
        params = self._params(msg.content, modules)
        pairs = PairBatch(np.full(len(modules), self.ue), np.asarray(modules, dtype=int))
        with self._own_state():
            res = self.backend.local_update(pairs, params, int(cfg["local-steps"]), float(cfg["lr"]))
        content = RecordDict({module_key(m): params_to_record(u) for m, u in zip(modules, res.updates)})
        content[METRICS_KEY] = reply_metrics(modules, res.loss, res.grad_sq, res.n_samples)
        return Message(content, reply_to=msg)

    def _probe(self, content: RecordDict, modules: list[int]) -> MetricRecord:
        params = self._params(content, modules)
        pairs = PairBatch(np.full(len(modules), self.ue), np.asarray(modules, dtype=int))
        with self._own_state():
            loss, gsq = self.backend.probe(pairs, params)
        return reply_metrics(modules, loss, gsq, np.zeros(len(modules)))

    def probe(self, msg: Message) -> Message:
        modules = [int(m) for m in msg.content[CONFIG_KEY]["modules"]]
        return Message(RecordDict({METRICS_KEY: self._probe(msg.content, modules)}), reply_to=msg)

    def query(self, msg: Message) -> Message:
        action = msg.content[CONFIG_KEY].get(ACTION, ACTION_PROPERTIES)
        if action == ACTION_PROBE:
            return self.probe(msg)
        if action != ACTION_PROPERTIES:
            raise ValueError(f"unknown {ACTION} '{action}'")
        return Message(RecordDict({CONFIG_KEY: properties_record(self.describe())}), reply_to=msg)

    def evaluate(self, msg: Message) -> Message:
        """Eq. (3) for this UE: the uniform ensemble of the sent modules (``modules``; none:
        no evaluation) on its test split; and the probe of ``probe-modules`` at the same θ,
        the next round's measurements folded into this exchange (under ``probe``)."""
        cfg = msg.content[CONFIG_KEY]
        modules = [int(m) for m in cfg["modules"]]
        content = RecordDict()
        if modules:
            params = self._params(msg.content, modules)
            ens = np.zeros((int(self.backend.num_ues), len(self.specs)), dtype=bool)
            ens[self.ue, modules] = True
            ev = self.backend.evaluate(params, ens)
            content[METRICS_KEY] = MetricRecord({
                "loss": float(ev.ue_loss[self.ue]),
                "accuracy": float(ev.ue_accuracy[self.ue]),
                "num-examples": float(self.backend.data_sizes()[self.ue]),
            })
        if probe := [int(m) for m in cfg.get("probe-modules", [])]:
            content[PROBE_KEY] = self._probe(msg.content, probe)
        return Message(content, reply_to=msg)


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


def train_app(model_fn: Callable[[], Any], data_fn: Callable[[Context], tuple[Any, Any]],
              train: Callable[[Any, Any], float | None],
              evaluate: Callable[[Any, Any], tuple[float, float]] | None = None, *,
              properties: Callable[[Context], dict[str, float]] | None = None) -> ClientApp:
    """A ClientApp for a plain torch model trained by the user's own functions (M = 1).

    ``model_fn()`` builds the model (a ``torch.nn.Module``); ``data_fn(context)`` returns this
    node's ``(train_data, test_data)`` (``context.node_config["partition-id"]`` says which
    part; ``len(train_data)`` is |D_k|); ``train(model, train_data)`` trains the model in
    place and may return its mean loss; ``evaluate(model, test_data) -> (loss, accuracy)``;
    ``properties(context)``: what the node knows of itself for the allocator (``distance``,
    ``cpu-freq``, ``cycles-per-bit``; the strategy's channel model fills what is missing).

    The protocol is fedopt's (:class:`FedOptClient`): the reply is the change θ' − θ under
    ``module-0`` with the loss and ‖∇‖² measurements. ‖∇‖² is estimated from the change as
    ‖θ' − θ‖² / (η I)², the squared mean gradient of I steps of size η (the strategy's
    ``lr`` and ``local-steps``, exact for full-batch gradient descent with those); a probe
    query has no training to measure and is answered as unsupported.
    """
    import torch

    app = ClientApp()

    def load(msg: Message) -> tuple[Any, Params]:
        model = model_fn()
        theta = record_to_params(msg.content[module_key(0)])
        model.load_state_dict({k: torch.as_tensor(v) for k, v in theta.items()})
        return model, theta

    def part(context: Context) -> int:
        return int(context.node_config.get("partition-id", -1))

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        cfg = msg.content[CONFIG_KEY]
        model, theta = load(msg)
        data, _ = data_fn(context)
        loss = train(model, data)
        new = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        change = {k: new[k] - theta[k] for k in theta}
        step = float(cfg["lr"]) * int(cfg["local-steps"])
        gsq = sum(float(np.sum(np.square(d, dtype=float))) for d in change.values()) / step ** 2
        content = RecordDict({module_key(0): params_to_record(change)})
        content[METRICS_KEY] = reply_metrics([0], [float("nan") if loss is None else loss],
                                             [gsq], [len(data)])
        return Message(content, reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        if evaluate is None:
            raise ValueError("train_app: no evaluate function given")
        model, _ = load(msg)
        _, test = data_fn(context)
        loss, acc = evaluate(model, test)
        metrics = MetricRecord({"loss": float(loss), "accuracy": float(acc),
                                "num-examples": float(len(test))})
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        if msg.content[CONFIG_KEY].get(ACTION, ACTION_PROPERTIES) != ACTION_PROPERTIES:
            raise ValueError("train_app: no probe (its measurements come with training)")
        data, _ = data_fn(context)
        props = {"data-size": float(len(data)), "samples": float(len(data)),
                 **(properties(context) if properties is not None else {})}
        if part(context) >= 0:
            props["partition-id"] = part(context)
        return Message(RecordDict({CONFIG_KEY: properties_record(props)}), reply_to=msg)

    return app


def properties_query(server_round: int = 0) -> RecordDict:
    """The content of a properties query (used by the strategy)."""
    return RecordDict({CONFIG_KEY: ConfigRecord({ACTION: ACTION_PROPERTIES,
                                                 "server-round": int(server_round)})})
