"""The certified method for the per-round problem (7), ``solve_round(method="auto")`` (issue 16),
against SCIP and at the paper's scale; prints the acceptance numbers and writes CSVs.

    nice .venv/bin/python benchmarks/round.py agree [--K 2,3,4,5] [--instances 30] [--scip-limit 60]
    nice .venv/bin/python benchmarks/round.py scale [--K 100] [--instances 50] [--time-limit 120]
    nice .venv/bin/python benchmarks/round.py timing [--K 100,300] [--instances 5]

``agree``: random rounds (``random_round_system``, MODEL.md's defaults, floor Σ x >= ⌈βK⌉),
  ``auto`` and SCIP's MINLP (7) on each, and the same with a random x given. Reports how
  often SCIP proved optimality, the largest |auto − SCIP| / |SCIP| where it did (goal <= 1e-6),
  the largest (auto − SCIP incumbent) / |SCIP| anywhere (goal <= 1e-9), whether auto's
  bound ever exceeded SCIP's optimum, and the median times with their ratio (SCIP / auto)
  at each K.
``scale``: ``auto`` alone at K = 100 (M = 3, M_max = 2): status, certified gap and time per
  instance (goal: gap <= 1e-6 on every instance, median < 10 s).
``timing``: ``auto`` at K = 100 and 300 (K = 300 with β = 0.2: at β = 0.3 the floor's expected
  Σ b^min exceeds the band and the config is refused), median time and nodes.

Times are wall-clock on a shared CPU: ratios are taken within one run.

Measured (commit 06d6460, 2 cores shared, load 10-15; docs/RESULTS.md, "Per-round
problem (7)"): ``agree`` 240/240 certified, |auto − SCIP| <= 5.6e-7 where SCIP proved
optimality, auto never worse than SCIP by more than 4.5e-10, SCIP/auto median time 1.5× at
K = 2 (the largest K SCIP proves on every instance) to 2.8× at K = 5; ``scale`` K = 100:
50/50 certified <= 1e-6, median 1.25 s, max 6.7 s (load 5-6; 2.8 s and 12.8 s at load 11-15); ``timing`` K = 300 (β = 0.2): 3/5
certified, median 111 s, two at the 120 s limit with gaps 5.1e-5 and 5.6e-6.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _system(K: int, i: int, seed: int = 0, beta: float | None = None):
    from fedopt.solvers.random_instances import random_round_system

    from fedopt.config import SystemConfig

    cfg = SystemConfig(K=K) if beta is None else SystemConfig(K=K, beta=beta)
    rng = np.random.default_rng([seed, K, i])
    sys_ = random_round_system(cfg, rng)
    return cfg, sys_, rng, max(1, math.ceil(cfg.beta * K))


def _write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


def agree(args) -> None:
    from fedopt.solvers.round import solve_round

    from fedopt.cli.validate_round import random_x

    rows = []
    for K in args.K:
        for i in range(args.instances):
            cfg, sys_, rng, floor = _system(K, i, args.seed)
            x = random_x(rng, np.isfinite(sys_.b_min), cfg.M_max)
            for mode, kw in (("minlp", {"floor": floor}), ("given_x", {"x": x})):
                a = solve_round(sys_, cfg.M_max, method="auto", time_limit=args.time_limit, **kw)
                s = solve_round(sys_, cfg.M_max, method="scip", time_limit=args.scip_limit, **kw)
                ref = abs(s.objective) if math.isfinite(s.objective) else math.nan
                rows.append(dict(
                    K=K, instance=i, mode=mode, auto_status=a.status, auto_objective=a.objective,
                    auto_bound=a.bound, auto_gap=a.gap, auto_seconds=a.seconds,
                    auto_nodes=a.iterations, scip_status=s.status, scip_objective=s.objective,
                    scip_bound=s.bound, scip_seconds=s.seconds,
                    diff=(a.objective - s.objective) / ref,
                    bound_over_scip=(a.bound - s.objective) / ref if a.bound is not None else math.nan))
            r = rows[-2]
            print(f"K={K} i={i} auto {r['auto_status']} gap {r['auto_gap']:.1e} "
                  f"{r['auto_seconds']:.2f}s | scip {r['scip_status']} {r['scip_seconds']:.1f}s "
                  f"| diff {r['diff']:.2e}", flush=True)
    _write(rows, Path(args.out) / "agree.csv")
    print(agree_summary(rows))


def agree_summary(rows: list[dict]) -> str:
    lines = [f"{'K':>2} {'mode':>8} {'n':>4} {'auto opt':>8} {'SCIP opt':>8} {'max |diff| (SCIP opt)':>22} "
             f"{'max (auto-SCIP)/|SCIP|':>23} {'bound>SCIP opt':>14} {'t auto':>7} {'t SCIP':>7} {'ratio':>6}"]
    for K in sorted({r["K"] for r in rows}):
        for mode in ("minlp", "given_x"):
            sel = [r for r in rows if r["K"] == K and r["mode"] == mode]
            if not sel:
                continue
            opt = [r for r in sel if r["scip_status"] == "optimal"]
            d_opt = max((abs(r["diff"]) for r in opt), default=math.nan)
            d_any = max((r["diff"] for r in sel if math.isfinite(r["diff"])), default=math.nan)
            over = sum(1 for r in opt if r["bound_over_scip"] > 1e-9)
            ta = statistics.median(r["auto_seconds"] for r in sel)
            ts = statistics.median(r["scip_seconds"] for r in sel)
            lines.append(f"{K:2d} {mode:>8} {len(sel):4d} "
                         f"{sum(r['auto_status'] == 'optimal' for r in sel):8d} {len(opt):8d} "
                         f"{d_opt:22.2e} {d_any:23.2e} {over:14d} {ta:7.2f} {ts:7.2f} {ts / ta:6.1f}")
    return "\n".join(lines)


def scale(args) -> None:
    from fedopt.solvers.round import solve_round

    rows = []
    for K in args.K:
        for i in range(args.instances):
            cfg, sys_, _, floor = _system(K, i, args.seed, args.beta)
            a = solve_round(sys_, cfg.M_max, floor=floor, method="auto",
                            time_limit=args.time_limit)
            rows.append(dict(K=K, instance=i, status=a.status, objective=a.objective,
                             bound=a.bound, gap=a.gap, seconds=a.seconds, nodes=a.iterations,
                             root_bound=a.extras.get("root_bound")))
            print(f"K={K} i={i} {a.status} gap {a.gap:.2e} {a.seconds:.2f}s nodes {a.iterations}",
                  flush=True)
    _write(rows, Path(args.out) / f"scale_{'_'.join(map(str, args.K))}.csv")
    for K in args.K:
        sel = [r for r in rows if r["K"] == K]
        g = np.array([r["gap"] if r["gap"] is not None else math.inf for r in sel])
        t = np.array([r["seconds"] for r in sel])
        print(f"K={K}: {len(sel)} instances, optimal {sum(r['status'] == 'optimal' for r in sel)}, "
              f"gap <= 1e-6 on {int(np.sum(g <= 1e-6))}, max gap {g.max():.2e}, "
              f"time median {np.median(t):.2f} s, 90% {np.percentile(t, 90):.2f} s, "
              f"max {t.max():.2f} s, nodes median {statistics.median(r['nodes'] for r in sel)}")


def main(argv=None) -> int:
    from fedopt.cli._types import positive_int_list

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    for name, K, n in (("agree", [2, 3, 4, 5], 30), ("scale", [100], 50), ("timing", [100, 300], 5)):
        q = sub.add_parser(name)
        q.add_argument("--K", type=positive_int_list, default=K)
        q.add_argument("--instances", type=int, default=n)
        q.add_argument("--time-limit", type=float, default=120.0, help="auto's limit [s]")
        q.add_argument("--scip-limit", type=float, default=60.0)
        q.add_argument("--beta", type=float, default=None, help="β (default: the config's)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--out", default="results/round_bench")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.part == "agree":
        agree(args)
    else:
        if args.part == "timing" and args.beta is None and max(args.K) >= 300:
            args.beta = 0.2  # β = 0.3 at K = 300 is refused (the floor exceeds the band)
        scale(args)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
