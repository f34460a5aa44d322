"""``fedopt simulate``'s run, executed by Flower: ServerApp + ClientApp built from a RunConfig.

The same :class:`~fedopt.fl.config.RunConfig` (YAML + ``--set``) drives both engines, and both
drive the same round (:class:`~fedopt.fl.round.RoundEngine`) from the same set-up
(:func:`fedopt.fl.setup.build_run`): on the same seed a Flower run and ``fedopt simulate``
schedule the same pairs, draw the same uplink successes and, with a backend whose local
updates do not depend on call batching (the synthetic backend with ``full_batch``), end with
the same module parameters, for Algorithm 2 and for every baseline (``scheme``). The server
owns the population (its channel model: positions, mobility) and the allocator; every node
builds the backend from the same seed and trains only its own UE k = ``partition-id``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ..errors import ConfigError
from ..fl.config import RunConfig
from ..fl.round import DeliveredUplink, ModuleFedAvg
from ..fl.setup import RunSetup, build_run, make_allocator, make_engine
from .client import FedOptClient, make_client_app
from .records import pack_modules
from .strategy import FedOptStrategy

__all__ = ["RunSetup", "build_run", "make_allocator", "make_strategy", "server_app",
           "client_app", "run_flower_simulation", "BACKEND_CONFIG", "run_config_from_context",
           "client_app_from_context", "run_runtime", "compare_params", "flower_rows"]

# the Ray engine on this project's 2-core machines: 2 CPUs, one per ClientApp
BACKEND_CONFIG: dict[str, Any] = {"init_args": {"num_cpus": 2}, "client_resources": {"num_cpus": 1}}


def make_strategy(setup: RunSetup, *, normalize: str | None = None,
                  simulate_uplink: bool = True, observers=(), **kwargs: Any) -> FedOptStrategy:
    """The strategy of a run: the run's engine (:func:`fedopt.fl.setup.make_engine`: its
    allocator, rule, channel stream and mobility) driven over Flower. ``normalize``
    overrides the run's for eq. (1); ``simulate_uplink=False``: real delivery; ``channel_fn``
    replaces the population's channel model; other ``kwargs`` are the strategy's."""
    engine_kw: dict[str, Any] = {}
    if "channel_fn" in kwargs:
        engine_kw["channel_fn"] = kwargs.pop("channel_fn")
    if normalize is not None and normalize != setup.run.normalize:
        if not isinstance(setup.rule, ModuleFedAvg):
            raise ConfigError(f"normalize: the {setup.rule.name} rule pools received uploads")
        engine_kw["rule"] = ModuleFedAvg(normalize, setup.backend)
    if not simulate_uplink:
        engine_kw["uplink"] = DeliveredUplink()
    return FedOptStrategy(engine=make_engine(setup, observers=observers, **engine_kw), **kwargs)


def run_config_from_context(context: Context, root: str | Path | None = None) -> RunConfig:
    """A RunConfig from a Flower run config (``flwr run``): ``config``, a YAML path (relative to
    ``root``), and ``set``, "key=value;key=value" overrides."""
    rc = dict(context.run_config or {})
    path = str(rc.get("config") or "") or None
    if path is not None and root is not None and not Path(path).is_absolute():
        path = str(Path(root) / path)
    sets = [s.strip() for s in str(rc.get("set", "")).split(";") if s.strip()]
    return RunConfig.load(path, sets)


@functools.lru_cache(maxsize=4)
def _node_setup(flat_yaml: str) -> RunSetup:
    """One backend per worker process and config (every node of the run shares it)."""
    import yaml

    return build_run(RunConfig.from_dict(yaml.safe_load(flat_yaml)))


def client_fn_for(run: RunConfig | None = None, root: str | Path | None = None):
    """``client_fn(context)``: UE ``partition-id`` of the run (``run`` or the context's config)."""

    def client_fn(context: Context) -> FedOptClient:
        cfg = run if run is not None else run_config_from_context(context, root)
        setup = _node_setup(cfg.to_yaml())
        k = int(context.node_config["partition-id"])
        return FedOptClient(setup.backend, k, setup.specs, properties=setup.properties(k),
                            node_state=context.state, initial_state=setup.initial_state,
                            template=setup.params)

    return client_fn


def client_app(run: RunConfig | None = None) -> ClientApp:
    return make_client_app(client_fn_for(run))


def client_app_from_context(root: str | Path | None = None) -> ClientApp:
    """The ClientApp of a Flower App whose run config names the fedopt config (``flwr run``)."""
    return make_client_app(client_fn_for(None, root))


EVALUATE = ("nodes", "server", "off")


def server_evaluate(setup: RunSetup, strategy: FedOptStrategy):
    """``evaluate_fn`` for ``Strategy.start``: the runtime's evaluation, eq. (3), on the
    server's own copy of the backend (one pass over every UE's test split instead of one per
    node); also recorded in ``strategy.evaluations``."""
    from flwr.app import MetricRecord

    from .records import unpack_modules

    M = setup.pop.M

    def evaluate_fn(server_round: int, arrays) -> MetricRecord | None:
        if server_round == 0:
            return None
        ev = setup.backend.evaluate(unpack_modules(arrays, M), strategy.ensembles)
        out = {"loss": float(ev.loss), "accuracy": float(ev.accuracy),
               "global_accuracy": float(ev.global_accuracy), "nodes": int(setup.pop.K)}
        strategy.evaluations[server_round] = out
        return MetricRecord(out)

    return evaluate_fn


def server_app(run: RunConfig | None = None, *, sink: dict | None = None,
               timeout: float = 3600.0, evaluate: str = "nodes", root: str | Path | None = None,
               rule: str = "fedavg", prune_lambda: float = 0.0,
               **strategy_kwargs: Any) -> ServerApp:
    """A ServerApp running ``run`` (or the context's config) with :class:`FedOptStrategy`;
    ``rule`` (and ``prune_lambda``) as :func:`fedopt.fl.setup.build_run`.

    ``evaluate``: ``"nodes"`` (each node scores its ensemble (3), federated), ``"server"``
    (the server's backend scores all ensembles, as the runtime does) or ``"off"``. ``sink`` (a
    dict) receives the strategy, Flower's Result and the wall time."""
    if evaluate not in EVALUATE:
        raise ConfigError(f"evaluate: one of {', '.join(EVALUATE)}, got {evaluate!r}")
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = run if run is not None else run_config_from_context(context, root)
        t0 = time.perf_counter()
        setup = build_run(cfg, rule, prune_lambda=prune_lambda)
        kwargs = dict(strategy_kwargs)
        if evaluate != "nodes":
            kwargs["fraction_evaluate"] = 0.0
        strategy = make_strategy(setup, **kwargs)
        result = strategy.start(grid, pack_modules(setup.params), num_rounds=cfg.rounds,
                                timeout=timeout,
                                evaluate_fn=server_evaluate(setup, strategy) if evaluate == "server" else None)
        if sink is not None:
            now = time.perf_counter()
            sink.update(strategy=strategy, result=result, setup=setup, seconds=now - t0,
                        finished=now)

    return app


def run_flower_simulation(run: RunConfig, *, num_supernodes: int | None = None,
                          backend_config: dict | None = None, verbose: bool = False,
                          evaluate: str = "nodes", scheme: str | None = None,
                          prune_lambda: float = 0.0, **strategy_kwargs: Any) -> dict[str, Any]:
    """Run ``run`` in Flower's Ray simulation engine (one virtual SuperNode per UE); with
    ``scheme``, that baseline (:mod:`fedopt.baselines`: its config and aggregation rule).

    Returns ``{"strategy", "result", "setup", "seconds" (ServerApp main), "finished" (its
    perf_counter at the end), "wall" (whole call, Ray start-up included)}``.
    """
    import warnings

    from flwr.simulation import run_simulation

    rule = "fedavg"
    if scheme is not None:
        from ..baselines.runner import scheme_run

        run, rule, _ = scheme_run(scheme, run)
    K = int(run.system.K)
    if num_supernodes is not None and num_supernodes != K:
        raise ConfigError(f"num_supernodes: {num_supernodes} nodes for K = {K} UEs (one node per UE)")
    sink: dict[str, Any] = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app(run, sink=sink, evaluate=evaluate, rule=rule,
                                             prune_lambda=prune_lambda, **strategy_kwargs),
                       client_app=client_app(run), num_supernodes=K,
                       backend_config=backend_config or BACKEND_CONFIG, verbose_logging=verbose)
    sink["wall"] = time.perf_counter() - t0
    if "strategy" not in sink:
        raise RuntimeError("the Flower simulation ended without finishing the ServerApp (see its log)")
    return sink


def run_runtime(run: RunConfig, scheme: str | None = None) -> dict[str, Any]:
    """The same run by ``fedopt simulate``'s runtime (no output folder), with ``scheme`` that
    baseline: its Simulation, the set-up time (population, backend) and the rounds' time."""
    from ..fl.runtime import Simulation

    rule = "fedavg"
    if scheme is not None:
        from ..baselines.runner import scheme_run

        run, rule, _ = scheme_run(scheme, run)
    t0 = time.perf_counter()
    sim = Simulation(run, None, progress=False, rule=rule)
    t1 = time.perf_counter()
    sim.run()
    t2 = time.perf_counter()
    return {"simulation": sim, "setup_seconds": t1 - t0, "rounds_seconds": t2 - t1,
            "seconds": t2 - t0}


def compare_params(a: list, b: list) -> float:
    """max |a − b| over every module's arrays (inf if their keys or shapes differ)."""
    worst = 0.0
    for pa, pb in zip(a, b, strict=True):
        if set(pa) != set(pb):
            return float("inf")
        for key in pa:
            if np.shape(pa[key]) != np.shape(pb[key]):
                return float("inf")
            worst = max(worst, float(np.max(np.abs(np.asarray(pa[key]) - np.asarray(pb[key])), initial=0.0)))
    return worst


def flower_rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The strategy's per-round rows with the federated evaluation (3) of that round."""
    st = out["strategy"]
    rows = []
    for row in st.history:
        ev = st.evaluations.get(row["round"] + 1, {})
        rows.append({**row, "loss": ev.get("loss", float("nan")),
                     "accuracy": ev.get("accuracy", float("nan"))})
    return rows
