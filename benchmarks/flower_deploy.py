"""Flower deployment on loopback: per-round time before / after, and Flower's own floor.

    nice .venv/bin/python benchmarks/flower_deploy.py [--nodes 3] [--rounds 4] [--out FILE.json]

Each setting starts its own loopback federation (``fedopt.flower.deploy.LocalFederation``:
a SuperLink and ``--nodes`` SuperNodes) and runs, in it:

- the example app (experiments/flower, synthetic backend, K = nodes): its steady-state round
  (rounds 2..T, from the ServerApp's clock);
- Flower's floor (benchmarks/flower_floor_app): one QUERY to every node, answered at once,
  per exchange; the floor of a round is (exchanges a round) × that.

``before``: Flower's defaults as the strategy had them: the SuperNodes' SuperExec polls every
1 s, replies are pulled every 3 s (Flower's Grid), three exchanges a round (probe, train,
evaluate). ``after``: SuperExec 0.1 s, replies pulled every 0.1 s (PollingGrid), two
exchanges (probes folded into evaluate). Times are wall clock on a shared CPU: compare within
one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "experiments" / "flower"
FLOOR = ROOT / "benchmarks" / "flower_floor_app"
SETTINGS = {  # name: (SuperExec poll, reply poll, fold probes, exchanges a round)
    "before": ("1.0", 3.0, False, 3),
    "after": ("0.1", 0.1, True, 2),
}


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from fedopt.flower.deploy import LocalFederation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--exchanges", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="fedopt-bench-") as tmp:
        for name, (superexec, poll, fold, per_round) in SETTINGS.items():
            out, floor = Path(tmp) / f"{name}-run", Path(tmp) / f"{name}-floor.json"
            t0 = time.perf_counter()
            with LocalFederation(args.nodes, env={"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": superexec}) as fed:
                t1 = time.perf_counter()
                fed.run(APP, {"set": f"K={args.nodes};rounds={args.rounds}", "out": str(out),
                              "fold-probes": fold, "poll-interval": poll}, timeout=1800)
                fed.run(FLOOR, {"nodes": args.nodes, "exchanges": args.exchanges,
                                "poll-interval": 0.0 if poll >= 3.0 else poll, "out": str(floor)},
                        timeout=900)
            summary = json.loads((out / "summary.json").read_text())
            ex = json.loads(floor.read_text())["exchange_seconds"]
            results[name] = {
                "round_seconds": summary["seconds_per_round_steady"],
                "floor_exchange_seconds": statistics.median(ex),
                "floor_round_seconds": per_round * statistics.median(ex),
                "exchanges_per_round": per_round,
                "federation_start_seconds": t1 - t0,
            }
    b, a = results["before"], results["after"]
    lines = [f"loopback deployment, {args.nodes} SuperNodes, synthetic backend, rounds 2..{args.rounds}",
             f"{'setting':8} {'round [s]':>10} {'floor round [s]':>16} {'floor exchange [s]':>19}"]
    for name, r in results.items():
        lines.append(f"{name:8} {r['round_seconds']:10.2f} {r['floor_round_seconds']:16.2f} "
                     f"{r['floor_exchange_seconds']:19.2f}")
    lines.append(f"after / before: round {a['round_seconds'] / b['round_seconds']:.2f}; "
                 f"after round / after floor {a['round_seconds'] / a['floor_round_seconds']:.2f}")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"nodes": args.nodes, "rounds": args.rounds, **results},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
