"""Certificate benchmarks for issue 14, in one run: the regression instances and the
identical-pair families, with times, node counts and certified gaps.

    .venv/bin/python benchmarks/certificates.py [--reps 5]

1. ``experiments/instances/regressions/*.json``: ``auto`` against the stored reference.
2. k identical nonconvex pairs (the k = 8 regression's pair, the budget in the linear part
   of its convex envelope) at k = 20, 50, 1000, and the same with every parameter jittered
   by 1e-12 relative (the common-minorant path).

Median wall time over ``--reps`` solves; no assertion is made here (the targets are < 0.1 s
for the k = 8 regression and < 1 s for each family).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from fedopt.solvers import solve_bandwidth

from fedopt.instances import BandwidthInstance, load_instance

REG = Path(__file__).resolve().parents[1] / "experiments" / "instances" / "regressions"


def _median_solve(inst, reps: int):
    times, sol = [], None
    for _ in range(reps):
        t = time.perf_counter()
        sol = solve_bandwidth(inst)
        times.append(time.perf_counter() - t)
    return sol, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'instance':<36} {'status':<9} {'nodes':>5} {'gap':>9} {'vs ref':>10} {'median s':>9}")
    for path in sorted(REG.glob("*.json")):
        inst = load_instance(path)
        ref = json.loads(path.read_text())["reference"]["reference_objective"]
        sol, t = _median_solve(inst, args.reps)
        rel = (sol.objective - ref) / abs(ref)
        print(f"{path.stem:<36} {sol.status:<9} {sol.iterations:>5} {sol.gap:>9.1e} {rel:>10.1e} "
              f"{t:>9.4f}")
    pair = load_instance(REG / "bandwidth_identical_ues_k8.json")
    per = pair.budget / pair.n
    rng = np.random.default_rng(0)
    for jitter in (0.0, 1e-12):
        for k in (20, 50, 1000):
            def col(v):
                return np.full(k, v) * (1 + jitter * rng.standard_normal(k))  # noqa: B023

            inst = BandwidthInstance(col(pair.w[0]), col(pair.a[0]), col(pair.c[0]),
                                     np.full(k, pair.b_min[0]), np.full(k, pair.b_max[0]), per * k)
            sol, t = _median_solve(inst, args.reps)
            name = f"identical k={k}" + (f" (jitter {jitter:g})" if jitter else "")
            print(f"{name:<36} {sol.status:<9} {sol.iterations:>5} {sol.gap:>9.1e} {'':>10} "
                  f"{t:>9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
