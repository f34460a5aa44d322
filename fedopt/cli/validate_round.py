"""``fedopt validate round``: the per-round problem (7) against SCIP's global MINLP solve.

Two comparisons (:func:`fedopt.solvers.round.solve_round`, methods ``bcd``, ``joint`` and
``scip``) on random instances (system model + calibrated statistics,
:func:`fedopt.online.scenarios.random_round_state`), for each K:

- *given x*: the allocator's BCD over (p, b) (power (21) batched, bandwidth (16)) against SCIP
  on the continuous problem with the same random x. SCIP's point is re-evaluated exactly
  feasible; gap = (BCD − SCIP)/|SCIP|, positive when BCD is worse.
- *joint*: the allocator's per-round mode (x by local search with BCD inside, under the floor
  Σ x ≥ ⌈βK⌉) against SCIP's MINLP with the same floor.

Prints both gap tables with times, the share of instances within 1e-5 (given x) and 1%
(joint), how often SCIP hit its time limit, and the largest K SCIP solves within its limit.
Writes a CSV. Target module for ``fedopt validate``: ``add_parser(p)``, ``run(args)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from ._types import output_dir, positive_float, positive_int, positive_int_list, seed


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML system config (default: MODEL.md's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key")
    p.add_argument("--K", type=positive_int_list, default=[3, 5, 8, 12],
                   help="UE counts (default 3,5,8,12)")
    p.add_argument("--instances", type=positive_int, default=20,
                   help="random instances per K (default 20)")
    p.add_argument("--time-limit", type=positive_float, default=10.0,
                   help="SCIP time limit per solve [s]")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", type=output_dir, default="results/validate_round",
                   help="folder for the CSV")


def random_x(rng: np.random.Generator, feasible: np.ndarray, M_max: int) -> np.ndarray:
    """A random switching: each UE subscribes to 0, 1 or 2 (≤ M_max) random feasible modules
    with probabilities 0.3, 0.5, 0.2; at least one pair overall."""
    K, M = feasible.shape
    x = np.zeros((K, M), bool)
    while not x.any():
        for k in range(K):
            n = min(rng.choice(3, p=[0.3, 0.5, 0.2]), M_max, int(feasible[k].sum()))
            if n:
                x[k, rng.choice(np.flatnonzero(feasible[k]), n, replace=False)] = True
    return x


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..allocator import RoundAllocator
    from ..config import SystemConfig, load_yaml, parse_overrides
    from ..costs import switching_init, switching_update
    from ..online.scenarios import random_round_state
    from ..solvers.round import solve_round

    data = {**(load_yaml(args.config) if args.config else {}), **parse_overrides(args.set)}
    # every K's config is checked before the progress bar starts: an error is its own line
    cfgs = {K: SystemConfig.from_dict({**data, "K": K}) for K in args.K}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(total=len(args.K) * args.instances, desc="validate round", unit="instance")
    for K in args.K:
        cfg = cfgs[K]
        floor = max(1, math.ceil(cfg.beta * K))
        for i in range(args.instances):
            rng = np.random.default_rng([args.seed, K, i])
            state, _ = random_round_state(cfg, rng)
            al = RoundAllocator(cfg)  # only for the round system
            al.estimator = switching_update(switching_init(K, cfg.M), state.loss, state.grad_sq, 0)
            sys_ = al.system(state)
            feas = np.isfinite(sys_.b_min)
            x = random_x(rng, feas, cfg.M_max)
            # given x: BCD vs SCIP's continuous problem
            t0 = time.perf_counter()
            sb = solve_round(sys_, cfg.M_max, method="bcd", x=x)
            obj_bcd, iters = sb.objective, sb.iterations
            t_bcd = time.perf_counter() - t0
            sg = solve_round(sys_, cfg.M_max, method="scip", x=x, time_limit=args.time_limit)
            # joint per-round mode vs SCIP's MINLP
            t0 = time.perf_counter()
            # the start is ordered by u at p = P_max, b = max(b^min, 1/floor) (solve_round's default)
            sol = solve_round(sys_, cfg.M_max, floor=floor, method="joint")
            xj, obj_joint = sol.x.x, sol.objective
            t_joint = time.perf_counter() - t0
            sj = solve_round(sys_, cfg.M_max, floor=floor, method="scip", time_limit=args.time_limit)
            rows.append(dict(
                K=K, instance=i, pairs=int(x.sum()), bcd_objective=obj_bcd, bcd_iterations=iters,
                bcd_seconds=t_bcd, scip_given_objective=sg.objective, scip_given_bound=_bound(sg),
                scip_given_status=sg.status, scip_given_seconds=sg.seconds,
                gap_given=_gap(obj_bcd, sg.objective),
                joint_objective=obj_joint, joint_pairs=int(xj.sum()), joint_seconds=t_joint,
                scip_minlp_objective=sj.objective, scip_minlp_bound=_bound(sj),
                scip_minlp_status=sj.status, scip_minlp_seconds=sj.seconds,
                gap_joint=_gap(obj_joint, sj.objective),
            ))
            bar.update()
    bar.close()
    with open(out / "validate_round.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = summary(rows, args.K, args.time_limit)
    print(text)
    (out / "validate_round.txt").write_text(text + "\n")
    print(f"wrote {out / 'validate_round.csv'}")
    return 0


def _bound(sol) -> float:
    """SCIP's dual bound as a float (-inf without one), as the CSV always had it."""
    return -math.inf if sol.bound is None else float(sol.bound)


def _gap(ours: float, ref: float) -> float:
    """(ours − ref)/|ref|: positive when our value is worse; nan without a SCIP point."""
    if not (math.isfinite(ours) and math.isfinite(ref)):
        return float("nan")
    return (ours - ref) / max(abs(ref), 1e-300)


def summary(rows: list[dict], Ks: list[int], time_limit: float) -> str:
    def stats(sel, key, tol):
        g = np.array([r[key] for r in sel], float)
        ok = g[np.isfinite(g)]
        share = float(np.mean(ok <= tol)) if ok.size else float("nan")
        return share, float(np.median(ok)) if ok.size else math.nan, float(np.max(ok)) if ok.size else math.nan

    lines = [f"SCIP time limit {time_limit:g} s per solve; gap = (ours − SCIP)/|SCIP|, "
             f"SCIP's point re-evaluated exactly feasible (negative: ours is better)", "",
             "given x: BCD over (p, b) vs SCIP on the continuous problem"]
    head = (f"{'K':>3} {'n':>3} {'<=1e-5':>7} {'median gap':>11} {'worst gap':>10} "
            f"{'SCIP limit':>10} {'t BCD [ms]':>10} {'t SCIP [s]':>10}")
    lines += [head, "-" * len(head)]
    largest = {"given": 0, "joint": 0}
    mostly = {"given": 0, "joint": 0}  # SCIP proved optimality on >= 95% of the instances
    for K in Ks:
        sel = [r for r in rows if r["K"] == K]
        share, med, worst = stats(sel, "gap_given", 1e-5)
        hits = sum(r["scip_given_status"] != "optimal" for r in sel)
        if hits == 0:
            largest["given"] = max(largest["given"], K)
        if hits <= 0.05 * len(sel):
            mostly["given"] = max(mostly["given"], K)
        lines.append(f"{K:3d} {len(sel):3d} {share:7.0%} {med:11.2e} {worst:10.2e} {hits:7d}/{len(sel):<2d} "
                     f"{1e3 * np.median([r['bcd_seconds'] for r in sel]):10.2f} "
                     f"{np.median([r['scip_given_seconds'] for r in sel]):10.2f}")
    lines += ["", "joint: the allocator's per-round mode vs SCIP's MINLP (7), same floor Σx ≥ ⌈βK⌉"]
    head = (f"{'K':>3} {'n':>3} {'<=1%':>7} {'median gap':>11} {'worst gap':>10} "
            f"{'SCIP limit':>10} {'t ours [s]':>10} {'t SCIP [s]':>10}")
    lines += [head, "-" * len(head)]
    for K in Ks:
        sel = [r for r in rows if r["K"] == K]
        share, med, worst = stats(sel, "gap_joint", 1e-2)
        hits = sum(r["scip_minlp_status"] != "optimal" for r in sel)
        if hits == 0:
            largest["joint"] = max(largest["joint"], K)
        if hits <= 0.05 * len(sel):
            mostly["joint"] = max(mostly["joint"], K)
        lines.append(f"{K:3d} {len(sel):3d} {share:7.0%} {med:11.2e} {worst:10.2e} {hits:7d}/{len(sel):<2d} "
                     f"{np.median([r['joint_seconds'] for r in sel]):10.3f} "
                     f"{np.median([r['scip_minlp_seconds'] for r in sel]):10.2f}")
    lines += ["", f"largest K that SCIP solved to optimality within {time_limit:g} s on every "
                  f"instance: given x {largest['given'] or 'none'}, MINLP {largest['joint'] or 'none'}; "
                  f"on >= 95%: given x {mostly['given'] or 'none'}, MINLP {mostly['joint'] or 'none'}"]
    return "\n".join(lines)
