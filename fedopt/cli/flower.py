"""``fedopt flower``: run fedopt inside Flower (the ``flower`` extra).

    fedopt flower simulate --config experiments/flower/fedopt.yaml --out results/flower
    fedopt flower simulate --config experiments/flower/fedopt.yaml --compare   # vs fedopt simulate
    fedopt flower deploy --nodes 3 --set rounds=2 --out results/deploy --compare

``simulate`` runs the config in Flower's Ray simulation engine, one virtual SuperNode per UE,
with :class:`fedopt.flower.FedOptStrategy` on the server. ``deploy`` runs the Flower App
(``--app``, default experiments/flower) in Flower's Deployment Engine on loopback: a
SuperLink, ``--nodes`` SuperNodes (``partition-id`` = UE k, ``K`` = nodes) and ``flwr run``,
torn down at the end (:mod:`fedopt.flower.deploy`). ``--compare`` also runs the same config
with ``fedopt simulate``'s runtime and prints the largest parameter difference and both wall
times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from ..errors import ConfigError
from ._types import cpu_count, output_dir, positive_float, positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="flower_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    s = sub.add_parser("simulate", help="run a config in Flower's Ray simulation engine",
                       description="run a config in Flower's Ray simulation engine")
    s.add_argument("--config", metavar="FILE", help="YAML config (the fedopt simulate namespace)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (repeatable)")
    s.add_argument("--out", metavar="DIR", type=output_dir,
                   help="write config.yaml, metrics.csv, summary.json here")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out DIR (removed first); without it such "
                        "a folder is refused")
    s.add_argument("--cpus", type=cpu_count, default=min(2, os.cpu_count() or 1),
                   help="CPUs Ray may use, at most os.cpu_count() (default 2)")
    s.add_argument("--evaluate", choices=("nodes", "server", "off"), default="nodes",
                   help="ensemble evaluation (3): on every node (federated, default), on the "
                        "server's backend (one pass, as fedopt simulate does) or off")
    s.add_argument("--scheme", metavar="NAME",
                   help="run a baseline (fedlora, full, hetlora, flexlora, greedy, ...; "
                        "fedopt.baselines) instead of the config's own scheme")
    s.add_argument("--compare", action="store_true",
                   help="also run fedopt simulate on the same config and compare")
    s.add_argument("--verbose", action="store_true", help="Flower's debug log")

    d = sub.add_parser("deploy", help="run the Flower App on a loopback SuperLink + SuperNodes",
                       description="start a SuperLink and N SuperNodes on 127.0.0.1 (insecure), "
                                   "flwr run the app against them, collect the results, tear down")
    d.add_argument("--app", metavar="DIR", default="experiments/flower",
                   help="the Flower App folder (default experiments/flower)")
    d.add_argument("--config", metavar="FILE",
                   help="YAML config (default: the app's own, fedopt.yaml)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (repeatable)")
    d.add_argument("--nodes", type=positive_int, metavar="N",
                   help="SuperNodes to start, one per UE (default: K of the config); sets K = N")
    d.add_argument("--out", metavar="DIR", type=output_dir,
                   help="keep config.yaml, metrics.csv, summary.json, params.npz and the logs here")
    d.add_argument("--overwrite", action="store_true", help="replace the run already in --out DIR")
    d.add_argument("--timeout", type=positive_float, default=900.0, metavar="S",
                   help="seconds the run may take before it is stopped (default 900)")
    d.add_argument("--scheme", metavar="NAME",
                   help="run a baseline (fedlora, full, hetlora, flexlora, greedy, ...; "
                        "fedopt.baselines) instead of the config's own scheme")
    d.add_argument("--compare", action="store_true",
                   help="also run fedopt simulate on the same config and compare")


def _flower_available() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError("Flower is not installed; install the extra: pip install 'fedopt[flower]'") from None


def run(args) -> int:
    _flower_available()
    if args.flower_command == "deploy":
        return deploy(args)
    from ..fl.config import RunConfig
    from ..fl.metrics import write_csv, write_json
    from ..flower.records import unpack_modules
    from ..flower.sim import compare_params, flower_rows, run_flower_simulation, run_runtime
    from ..runfolder import atomic_write_text

    if args.config and not Path(args.config).is_file():
        raise ConfigError(f"--config: file '{args.config}' does not exist")
    cfg = RunConfig.load(args.config, args.overrides)
    if args.out:  # before any work (Ray takes seconds to start): never write over a run
        from ..runfolder import prepare_out

        prepare_out(args.out, overwrite=args.overwrite, resume_hint=None)
    backend_config = {"init_args": {"num_cpus": args.cpus}, "client_resources": {"num_cpus": 1}}
    if args.scheme is not None:  # a bad name is one line before Ray starts
        from ..baselines import get_scheme

        get_scheme(args.scheme)
    out = run_flower_simulation(cfg, backend_config=backend_config, verbose=args.verbose,
                                evaluate=args.evaluate, scheme=args.scheme)
    rows = flower_rows(out)
    T = len(rows)
    energy = sum(r["energy"] for r in rows)
    final = rows[-1] if rows else {}
    summary = {
        "rounds": T, "K": cfg.system.K, "M": cfg.system.M, "seed": cfg.seed,
        "policy": cfg.policy, "energy_total": energy,
        "final_loss": final.get("loss"), "final_accuracy": final.get("accuracy"),
        "mean_participation": sum(r["participation"] for r in rows) / max(T, 1),
        "mean_success_rate": _nanmean([r["success_rate"] for r in rows]),
        "seconds_wall": out["wall"], "seconds_serverapp": out["seconds"],
    }
    lines = [
        f"Flower simulation: {T} rounds, K = {cfg.system.K} nodes, policy {cfg.policy}; "
        f"final ensemble loss {summary['final_loss']:.4f}, accuracy {summary['final_accuracy']:.3f}",
        f"energy {energy:.4g} J, mean participation {summary['mean_participation']:.2f}, "
        f"mean success rate {summary['mean_success_rate']:.2f}",
        f"wall time {out['wall']:.2f} s (ServerApp {out['seconds']:.2f} s, "
        f"{out['seconds'] / max(T, 1):.2f} s per round)",
    ]
    clock = out["strategy"].round_clock
    if len(clock) >= 3:  # steady state: from round 2 on (round 1 waits for the workers)
        steady = (out["finished"] - clock[1]) / (len(clock) - 1)
        summary["seconds_per_round_steady"] = steady
        lines.append(f"steady-state round {steady:.3f} s; start-up (Ray, workers, node discovery) "
                     f"{out['wall'] - steady * T:.2f} s")
    if args.compare:
        rt = run_runtime(cfg, args.scheme)
        sim = rt["simulation"]
        diff = compare_params(unpack_modules(out["result"].arrays, len(sim.params)), sim.params)
        per_round = rt["rounds_seconds"] / max(T, 1)
        summary.update(runtime_seconds=rt["seconds"], runtime_setup_seconds=rt["setup_seconds"],
                       max_param_difference=diff, runtime_seconds_per_round=per_round)
        lines.append(f"fedopt simulate on the same config: {rt['seconds']:.3f} s (set-up "
                     f"{rt['setup_seconds']:.3f} s, {per_round:.3f} s per round); "
                     f"max |θ_flower − θ_simulate| = {diff:.3g}")
        if "seconds_per_round_steady" in summary:
            over = summary["seconds_per_round_steady"] - per_round
            summary["overhead_per_round"] = over
            lines.append(f"Flower overhead {over:.3f} s per round (steady state); whole call "
                         f"{out['wall'] / max(rt['seconds'], 1e-9):.0f}x fedopt simulate")
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "config.yaml", cfg.to_yaml())
        write_csv(rows, folder / "metrics.csv")
        write_json(summary, folder / "summary.json")
        lines.append(f"results in {folder}/ (config.yaml, metrics.csv, summary.json)")
    print("\n".join(lines))
    return 0


def _app_run_config(app: Path) -> dict:
    """The run config an app declares (``[tool.flwr.app.config]`` of its pyproject.toml)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    data = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    return data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})


FEDOPT_APP_KEYS = ("config", "set", "out")  # the run config of a fedopt-config app


def deploy(args) -> int:
    """``fedopt flower deploy``: the app on a loopback SuperLink and ``--nodes`` SuperNodes.

    An app whose run config has ``config``, ``set`` and ``out`` (experiments/flower) runs the
    fedopt config with K = nodes and writes its results; any other app (e.g.
    experiments/flower/mlp) just runs, with ``--nodes`` SuperNodes."""
    import shutil
    import tempfile
    import time

    from ..fl.config import RunConfig
    from ..flower.deploy import LocalFederation
    from ..flower.results import read_params, read_rows
    from ..runfolder import prepare_out

    app = Path(args.app)
    if not (app / "pyproject.toml").is_file():
        raise ConfigError(f"--app: '{app}' is not a Flower App folder (no pyproject.toml)")
    declared = _app_run_config(app)
    fedopt_app = all(k in declared for k in FEDOPT_APP_KEYS)
    if args.scheme is not None:
        from ..baselines import get_scheme

        get_scheme(args.scheme)  # a bad name is one line
        if "scheme" not in declared:
            raise ConfigError(f"--scheme: '{app}' declares no 'scheme' in its run config")
    if not fedopt_app:
        if args.config or args.overrides or args.compare:
            raise ConfigError(f"--app: '{app}' has no fedopt run config ({', '.join(FEDOPT_APP_KEYS)} "
                              f"in [tool.flwr.app.config]); --config, --set and --compare need one")
        if args.nodes is None:
            raise ConfigError(f"--nodes: needed for '{app}' (it has no fedopt config to read K from)")
    config = Path(args.config) if args.config else (
        app / declared["config"] if fedopt_app and declared["config"] else None)
    if config is not None and not config.is_file():
        raise ConfigError(f"--config: file '{config}' does not exist")
    overrides = list(args.overrides)
    if any(";" in o for o in overrides):
        raise ConfigError("--set: a value may not contain ';' (Flower's run config joins them)")
    cfg = RunConfig.load(str(config) if config else None, overrides)
    nodes = args.nodes or int(cfg.system.K)
    overrides.append(f"K={nodes}")  # one SuperNode per UE
    cfg = RunConfig.load(str(config) if config else None, overrides)
    if args.out:
        prepare_out(args.out, overwrite=args.overwrite, resume_hint=None)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fedopt-deploy-"))
    out.mkdir(parents=True, exist_ok=True)
    run_config = {"config": str(config.resolve()) if config else "", "set": ";".join(overrides),
                  "out": str(out.resolve())} if fedopt_app else {}
    if args.scheme is not None:
        run_config["scheme"] = args.scheme
    t0 = time.perf_counter()
    fed = LocalFederation(nodes, keep=True)  # its FLWR_HOME is removed below, after the logs
    rows: list = []
    try:
        with fed:
            t1 = time.perf_counter()
            fed.run(app, run_config, timeout=args.timeout)
            t2 = time.perf_counter()
        if fedopt_app:
            rows = read_rows(out)
            summary = json.loads((out / "summary.json").read_text())
            params = read_params(out)
    finally:
        if args.out and fed.logs.exists():  # the processes' logs beside the results
            shutil.copytree(fed.logs, out / "logs", dirs_exist_ok=True)
        shutil.rmtree(fed.home, ignore_errors=True)
    wall = time.perf_counter() - t0
    lines = [f"Flower deployment: {nodes} SuperNodes on 127.0.0.1, app {app}"]
    steady = None
    if fedopt_app:
        lines[0] += f", {len(rows)} rounds, policy {cfg.policy}"
        lines += [f"round {int(r['round'])}: energy {r['energy']:.4g} J, participation "
                  f"{r['participation']:.2f}, received {int(r['received'])}/{int(r['subscriptions'])}, "
                  f"ensemble loss {r['loss']:.4f}" for r in rows]
        steady = summary.get("seconds_per_round_steady")
    lines.append(f"wall time {wall:.1f} s (federation start {t1 - t0:.1f} s, flwr run "
                 f"{t2 - t1:.1f} s" + (f", {steady:.2f} s per round from round 2)" if steady else ")"))
    if args.compare:
        from ..flower.sim import compare_params, run_runtime

        rt = run_runtime(cfg, args.scheme)
        diff = compare_params(params, rt["simulation"].params)
        lines.append(f"fedopt simulate on the same config: {rt['seconds']:.3f} s; "
                     f"max |θ_deploy − θ_simulate| = {diff:.3g}")
    if args.out:
        lines.append(f"results in {out}/ (" + ("config.yaml, metrics.csv, summary.json, "
                     "params.npz, schedule.json, " if fedopt_app else "") + "logs/)")
    else:
        shutil.rmtree(out, ignore_errors=True)
    print("\n".join(lines))
    return 0


def _nanmean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


__all__ = ["add_parser", "run"]
