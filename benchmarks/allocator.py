"""Round allocator (Algorithm 2) benchmarks for issue 5, in one run; prints times and ratios.

    .venv/bin/python benchmarks/allocator.py [--rounds 30] [--big-rounds 3] [--scip-limit 10]
        [--big-K 10000,100000] [--only-scale] [--baseline COMMIT]

1. ``allocate`` at K = 100, M = 3 (the defaults), ``primal_dual``: median over ``--rounds``
   rounds of a moving, fading population (goal: < 20 ms).
2. ``allocate`` at K = 10 000 and 100 000 (``--big-K``) with B scaled with K
   (B = 20 MHz x K/100, so the deadline floors of ~beta K pairs fit the band), the other
   settings the defaults (policy ``primal_dual``, power and bandwidth method ``auto``):
   median wall and CPU time over ``--big-rounds`` rounds (issue 16's goals: < 100 ms at
   K = 1e4, < 1 s at K = 1e5). ``--only-scale`` runs this part alone. ``--baseline COMMIT``
   also times fedopt as of COMMIT (``git archive`` of fedopt/, solvers/, models/, imported as
   ``fedopt_base``) on the same states, alternating before/after round by round in this
   process, and checks that both return the same Allocations.
   Measured (``--only-scale --baseline 9cfede7``, 3 rounds; identical Allocations in every
   round). This 2-core container at load 7-10 (cpu times; wall was 2-4x cpu): K = 1e4
   0.265 -> 0.150 s, K = 1e5 3.40 -> 1.54 s. An idle 16-core host (the same alternation,
   9cfede7's package copied there; wall = cpu; its speed varied by up to 40% between runs):
   K = 1e4 0.17-0.21 -> 0.11-0.13 s, K = 1e5 2.1-3.0 -> 1.1-1.5 s. Both goals are still
   missed on the 3-round median (the round with the most pairs sets it); at K = 1e5 that
   round's time is, in about equal parts, BCD's escape grid (17 x 17 exponentials per pair,
   once per round), the certified power solves (21) and the bandwidth solves (16).
3. SCIP's MINLP (7) on K = 3, 5, 8, ... until it stops proving optimality on every one of
   ``--scip-instances`` instances within ``--scip-limit`` s; at the largest K it solved, the
   ratio of SCIP's time to the allocator's joint per-round mode and to ``allocate``.

The CPU is shared with other jobs: times are noisy, so ratios are taken within this run.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np


def _states(cfg, rounds: int, seed: int):
    """A population that moves (Gaussian steps, 3 m) and fades (known Exp(1) gains)."""
    from fedopt.online.scenarios import random_round_state

    rng = np.random.default_rng(seed)
    state, pop = random_round_state(cfg, rng)
    pos = np.array(pop.positions)
    out = []
    for t in range(rounds):
        pos = pos + rng.normal(0, 3.0, pos.shape)
        r = np.clip(np.hypot(pos[:, 0], pos[:, 1]), cfg.d_min, cfg.radius)
        s = type(state)(**{**state.__dict__})
        s.t, s.distance, s.fading = t, r, np.maximum(rng.standard_exponential(cfg.K), 1e-3)
        s.loss = state.loss * rng.lognormal(0, 0.05, state.loss.shape)
        out.append(s)
    return out


def _time_allocate(cfg, rounds: int, policy="primal_dual", seed=0):
    from fedopt import RoundAllocator

    al = RoundAllocator(cfg, policy=policy)
    times, cpu, pairs, iters = [], [], [], []
    for s in _states(cfg, rounds, seed):
        t0, c0 = time.perf_counter(), time.process_time()
        a = al.allocate(s)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        pairs.append(int(a.x.sum()))
        iters.append(a.iterations)
    return np.array(times), np.array(cpu), pairs, iters


def _baseline(commit: str):
    """fedopt as of ``commit``, importable as ``fedopt_base`` beside this checkout's fedopt
    (its absolute imports renamed), for before/after timings in one process."""
    import importlib
    import io
    import re
    import subprocess
    import sys
    import tarfile
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="fedopt_base_"))
    tar = subprocess.run(["git", "-C", str(root), "archive", commit, "fedopt", "solvers",
                          "models"], check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp, filter="data")
    pkg = tmp / "fedopt_base"
    (tmp / "fedopt").rename(pkg)
    for sub in ("solvers", "models"):  # shipped as fedopt.solvers, fedopt.models
        (tmp / sub).rename(pkg / sub)
    for f in pkg.rglob("*.py"):
        text = f.read_text()
        new = re.sub(r"\b(from|import) fedopt\b", r"\1 fedopt_base", text)
        if new != text:
            f.write_text(new)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("fedopt_base")


def _time_before_after(cfg_kw: dict, rounds: int, base, seed=0):
    """Median wall and CPU times of ``allocate`` for fedopt as of the baseline (``base``) and
    for this checkout, alternating round by round on the same states; and whether every
    round's Allocation (x, p, b, q, energy, objective, iterations) is the same."""
    from fedopt import RoundAllocator, SystemConfig

    cfg = SystemConfig(**cfg_kw)
    old, new = base.RoundAllocator(base.SystemConfig(**cfg_kw)), RoundAllocator(cfg)
    times = {"before": ([], []), "after": ([], [])}
    same = True
    for i, s in enumerate(_states(cfg, rounds, seed)):
        got = {}
        runs = [("before", old, base.RoundState(**s.__dict__)), ("after", new, s)]
        for name, al, state in runs if i % 2 == 0 else runs[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            got[name] = al.allocate(state)
            times[name][0].append(time.perf_counter() - t0)
            times[name][1].append(time.process_time() - c0)
        a, b = got["before"], got["after"]
        same &= all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
                    ("x", "p", "b", "q", "energy_computation", "energy_communication"))
        same &= a.objective == b.objective and a.iterations == b.iterations
    return {k: (np.median(w), np.median(c), w[0]) for k, (w, c) in times.items()}, same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--big-rounds", type=int, default=3)
    ap.add_argument("--big-K", default="10000,100000",
                    help="comma-separated K values of part 2")
    ap.add_argument("--only-scale", action="store_true", help="run part 2 only")
    ap.add_argument("--scip-limit", type=float, default=10.0)
    ap.add_argument("--scip-instances", type=int, default=3)
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="part 2 also times fedopt as of COMMIT (before/after in one run)")
    args = ap.parse_args(argv)

    from fedopt.solvers._scip_round import solve_round_scip

    from fedopt import RoundAllocator, SystemConfig
    from fedopt.costs import switching_init, switching_update
    from fedopt.online.scenarios import random_round_state

    cfg = SystemConfig()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs: wall times include waiting for "
          f"the CPU; 'cpu' is this process's CPU time (several BLAS threads can make it exceed wall)")
    if not args.only_scale:
        t, c, pairs, iters = _time_allocate(cfg, args.rounds)
        print(f"1. allocate, K = 100, M = 3, primal_dual: median {1e3 * np.median(t):.1f} ms "
              f"wall, {1e3 * np.median(c):.1f} ms cpu (wall p10 {1e3 * np.percentile(t, 10):.1f}, "
              f"max {1e3 * t.max():.1f}) over {len(t)} rounds; {np.median(pairs):.0f} pairs, "
              f"{np.median(iters):.0f} BCD iterations (median); goal < 20 ms")

    goals = {10_000: 0.1, 100_000: 1.0}
    base = None
    for K in (int(k) for k in str(args.big_K).split(",") if k.strip()):
        big_kw = {"K": K, "B": 20e6 * K / 100}
        big = SystemConfig(**big_kw)
        t0 = time.perf_counter()
        tb, cb, pairs_b, iters_b = _time_allocate(big, args.big_rounds)
        goal = f"goal < {goals[K]:g} s" if K in goals else "no goal"
        print(f"2. allocate, K = {K}, M = {big.M}, B = {big.B / 1e6:g} MHz, primal_dual, power "
              f"auto, bandwidth auto: median {np.median(tb):.3f} s wall, {np.median(cb):.3f} s "
              f"cpu (max wall {tb.max():.3f}) over {len(tb)} rounds; "
              f"{np.median(pairs_b):.0f} pairs, {np.median(iters_b):.0f} BCD iterations; "
              f"{goal} (setup + rounds {time.perf_counter() - t0:.1f} s)")
        if args.baseline:
            base = base or _baseline(args.baseline)
            ba, same = _time_before_after(big_kw, args.big_rounds, base)
            (wb, cb_, rb), (wa, ca, ra) = ba["before"], ba["after"]
            print(f"   before ({args.baseline}) -> after, same states, alternating: median "
                  f"{wb:.3f} -> {wa:.3f} s wall ({wb / wa:.2f}x), {cb_:.3f} -> {ca:.3f} s cpu "
                  f"({cb_ / ca:.2f}x), round 0 {rb:.3f} -> {ra:.3f} s; identical Allocations: "
                  f"{'yes' if same else 'NO'}")
    if args.only_scale:
        return 0

    largest, rows = None, []
    for Ks in (3, 5, 8, 12):
        c = SystemConfig(K=Ks)
        ok, ts, tj, ta = True, [], [], []
        for i in range(args.scip_instances):
            state, _ = random_round_state(c, np.random.default_rng([99, Ks, i]))
            al = RoundAllocator(c, policy="joint")
            t0 = time.perf_counter()
            al.allocate(state)
            tj.append(time.perf_counter() - t0)
            al2 = RoundAllocator(c, policy="primal_dual")
            t0 = time.perf_counter()
            al2.allocate(state)
            ta.append(time.perf_counter() - t0)
            al.estimator = switching_update(switching_init(Ks, c.M), state.loss, state.grad_sq, 0)
            r = solve_round_scip(al.system(state), c.M_max, floor=math.ceil(c.beta * Ks),
                                 time_limit=args.scip_limit)
            ts.append(r.seconds)
            ok &= r.status == "optimal"
        rows.append((Ks, ok, np.median(ts), np.median(tj), np.median(ta)))
        print(f"   K = {Ks:2d}: SCIP MINLP {'solved all' if ok else 'hit its limit'}, "
              f"median {np.median(ts):.2f} s; joint mode {np.median(tj):.3f} s; "
              f"allocate {1e3 * np.median(ta):.1f} ms")
        if not ok:
            break
        largest = rows[-1]
    if largest is None:
        print("3. SCIP solved no K within its limit")
    else:
        Ks, _, ts, tj, ta = largest
        print(f"3. at SCIP's largest solvable K = {Ks}: SCIP / joint mode = {ts / tj:.1f}x, "
              f"SCIP / allocate = {ts / ta:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
