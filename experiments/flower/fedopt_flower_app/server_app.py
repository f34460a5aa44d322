"""The ServerApp: FedOptStrategy (Algorithm 2 each round) over the nodes of the federation.

Run config (``[tool.flwr.app.config]``): ``config`` (the fedopt YAML, relative to the app),
``set`` ("key=value;key=value" overrides), ``out`` (a folder for config.yaml, metrics.csv,
summary.json, params.npz and schedule.json, x per round; empty: print only), ``fold-probes`` and ``poll-interval`` (the
strategy's exchange settings) and ``scheme`` (a baseline of fedopt.baselines instead of the
config's own scheme; empty: the config's).
"""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedopt.flower.records import pack_modules, unpack_modules
from fedopt.flower.results import summarize, write_results
from fedopt.flower.sim import build_run, flower_rows, make_strategy

from .run import run_of

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    t0 = time.perf_counter()
    run, rule = run_of(context)
    setup = build_run(run, rule)  # population (the server's channel model), θ^0, seed streams
    rc = context.run_config
    strategy = make_strategy(setup, min_available_nodes=run.system.K,  # one node per UE
                             fold_probes=bool(rc.get("fold-probes", True)),
                             poll_interval=float(rc.get("poll-interval", 0.1)))
    result = strategy.start(grid, pack_modules(setup.params), num_rounds=run.rounds)
    rows = flower_rows({"strategy": strategy})
    for row in rows:
        print(f"round {row['round']}: energy {row['energy']:.4g} J, participation "
              f"{row['participation']:.2f}, success {row['received']}/{row['subscriptions']}, "
              f"ensemble loss {row['loss']:.4f}")
    if out := str(context.run_config.get("out", "")):
        clock = strategy.round_clock
        steady = (time.perf_counter() - clock[1]) / (len(clock) - 1) if len(clock) >= 2 else None
        summary = summarize(run, rows, seconds_serverapp=time.perf_counter() - t0,
                            seconds_per_round_steady=steady)
        write_results(out, run, rows, summary, unpack_modules(result.arrays, run.system.M))
        schedule = [np.asarray(a.x).astype(int).tolist() for a in strategy.allocations]
        (Path(out) / "schedule.json").write_text(json.dumps(schedule))  # x per round
        print(f"results in {out}")
