"""Solver benchmarks for issue 4, in one run: prints time ratios and writes a CSV.

    .venv/bin/python benchmarks/solvers.py [--csv results/bench_solvers.csv] [--quick]

1. Bandwidth (16) at N = 10, 30, 100 (``synthetic_large_bandwidth``: the magnitudes of
   ``bandwidth_example_*``): ``auto``, ``alg1``, ``lambertw`` against SCIP (60 s limit) and
   Ipopt; ratios of medians.
2. The fast methods alone at N = 1e4, 1e5, 1e6.
3. Power (21) for 1e4 UEs: ``global`` batched (one vectorised call) and per UE, against
   ``bounded``, Ipopt and SCIP per UE (SCIP and Ipopt on a subsample, reported per UE).

Timings are wall-clock on whatever machine runs this; no assertion is made here.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from fedopt.solvers import solve_bandwidth, solve_power, solve_power_batch
from fedopt.solvers.random_instances import random_power_batch, synthetic_large_bandwidth


def _time(fn, reps: int):
    """(result, wall times, CPU times): CPU time is reported too because the machine may be
    shared; it is the better estimate of the unloaded wall time of a single-threaded run."""
    out, times, cpu = None, [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return out, times, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default="results/bench_solvers.csv")
    ap.add_argument("--scip-time-limit", type=float, default=60.0)
    ap.add_argument("--scip-reps", type=int, default=3, help="SCIP instances per N (default 3)")
    ap.add_argument("--reps", type=int, default=5, help="instances per N for the others")
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--parts", default="references,scale,power",
                    help="comma-separated subset of references,scale,power (default all)")
    args = ap.parse_args(argv)
    rows: list[dict] = []

    def rec(part, problem, n, method, seconds, sol, cpu=""):
        rows.append({"part": part, "problem": problem, "n": n, "method": method,
                     "seconds": seconds, "cpu_seconds": cpu, "status": getattr(sol, "status", ""),
                     "objective": getattr(sol, "objective", ""), "gap": getattr(sol, "gap", "")})

    parts = {x.strip() for x in args.parts.split(",")}
    # 1. bandwidth vs SCIP and Ipopt
    sizes = [10, 30] if args.quick else [10, 30, 100]
    if "references" in parts:
        print("== bandwidth (16): median seconds over instances; ratio = reference / method")
    for n in sizes if "references" in parts else []:
        med = {}
        for method in ("auto", "alg1", "lambertw", "ipopt", "scip"):
            reps = args.scip_reps if method == "scip" else args.reps
            ts = []
            for seed in range(reps):
                inst = synthetic_large_bandwidth(n, seed=seed)
                kw = {"time_limit": args.scip_time_limit} if method == "scip" else {}
                t = time.perf_counter()
                sol = solve_bandwidth(inst, method, **kw)
                dt = time.perf_counter() - t
                ts.append(dt)
                rec("vs_references", "bandwidth", n, method, dt, sol)
            med[method] = statistics.median(ts)
        print(f"N={n:>4}: " + "  ".join(f"{m} {med[m]:.3g}s" for m in med))
        for m in ("auto", "alg1", "lambertw"):
            print(f"        {m:>8}: {med['scip'] / med[m]:10.1f}x faster than SCIP, "
                  f"{med['ipopt'] / med[m]:8.1f}x vs Ipopt")
    # 2. fast methods at scale
    if "scale" in parts:
        print("== bandwidth (16) at scale: median of 3 runs (alg1: 1 run)")
    for n in ([10_000] if args.quick else [10_000, 100_000, 1_000_000]) if "scale" in parts else []:
        inst = synthetic_large_bandwidth(n, seed=1)
        line = []
        for method in ("auto", "lambertw", "alg1"):
            reps = 1 if method == "alg1" else 3
            sol, ts, cs = _time(lambda m=method, i=inst: solve_bandwidth(i, m), reps)
            for dt, c in zip(ts, cs):
                rec("scale", "bandwidth", n, method, dt, sol, c)
            line.append(f"{method} {statistics.median(ts) * 1e3:.1f} ms wall / "
                        f"{statistics.median(cs) * 1e3:.1f} ms CPU ({sol.status}, gap {sol.gap:.1e})")
        print(f"N={n:>8}: " + "; ".join(line))
    # 3. power
    K = 1000 if args.quick else 10_000
    if "power" in parts:
        print(f"== power (21) for K = {K} UEs")
        _power(args, K, rec)
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


def _power(args, K: int, rec) -> None:
    batch = random_power_batch(K, "noise-limited", seed=0)
    sol, ts, cs = _time(lambda: solve_power_batch(batch, "auto"), 5)
    for dt, c in zip(ts, cs):
        rec("power", "power_batch", K, "global", dt, sol, c)
    t_batch = statistics.median(ts)
    print(f"global batched: {t_batch * 1e3:.1f} ms wall / {statistics.median(cs) * 1e3:.1f} ms "
          f"CPU for {K} UEs (median of 5; {sol.status})")
    batch_d = random_power_batch(K, "defaults", seed=0)
    sol_d, ts_d, cs_d = _time(lambda: solve_power_batch(batch_d, "auto"), 5)
    for dt, c in zip(ts_d, cs_d):
        rec("power", "power_batch_defaults", batch_d.k, "global", dt, sol_d, c)
    print(f"global batched (defaults regime, {batch_d.k} UEs): {statistics.median(ts_d) * 1e3:.1f} "
          f"ms wall / {statistics.median(cs_d) * 1e3:.1f} ms CPU ({sol_d.status})")
    per_ue = {}
    sub = {"global": K, "bounded": min(K, 2000), "ipopt": min(K, 300), "scip": min(K, 30)}
    for method, k in sub.items():
        t = time.perf_counter()
        for i in range(k):
            s = solve_power(batch.instance(i), method,
                            **({"time_limit": args.scip_time_limit} if method == "scip" else {}))
        dt = (time.perf_counter() - t) / k
        per_ue[method] = dt
        rec("power", "power_single", k, method, dt, s)
        print(f"{method:>8} per UE: {dt * 1e3:.3f} ms (over {k} UEs) -> {dt * K:.2f} s for {K}")
    for m in ("bounded", "ipopt", "scip"):
        print(f"global batched is {per_ue[m] * K / t_batch:.0f}x faster than {m} per UE")


if __name__ == "__main__":
    raise SystemExit(main())
