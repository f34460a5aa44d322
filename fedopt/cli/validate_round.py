"""``fedopt validate round``: the per-round problem (7) against its certified optimum.

The reference is ``solve_round(method="auto")``, the certified global method (its objective
is within its certified gap, at most 1e-6 relative, of the optimum). On random rounds
(system model + calibrated statistics, :func:`fedopt.solvers.random_instances.random_round_system`)
for each K:

- *given x*: Algorithm 2's step 2, BCD over (p, b) (``method="bcd"``), at a random switching x
  (dropped to the band (7d) where its b^min exceed it), against ``auto`` with the same x:
  gap = (BCD − auto)/|auto|, the true gap of Algorithm 2's power and bandwidth decision up to
  auto's certified gap. SCIP on the same continuous problem for K <= ``--scip-max-K``.
- *x free*: against ``auto`` on (7) with the floor Σ x >= ⌈βK⌉: Algorithm 2 in one round
  (the greedy policy's switching at nominal prices, :func:`greedy_x`, then BCD), the
  allocator's per-round mode (``joint``: x by local search, BCD inside; for K <=
  ``--joint-max-K``: it takes about a minute at K = 30), and SCIP's MINLP for K <=
  ``--scip-max-K``.

Prints both tables (median / 90% / max gap, times, how often auto certified 1e-6, how often
SCIP proved optimality within ``--time-limit``) and writes a CSV. At K = 300 the default
β = 0.3 makes the floor's expected Σ b^min exceed the band and the config is refused: run it
with ``--set beta=0.2``. Target module for ``fedopt validate``: ``add_parser(p)``, ``run(args)``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from ._types import output_dir, positive_float, positive_int, positive_int_list, seed


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML system config (default: MODEL.md's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key")
    p.add_argument("--K", type=positive_int_list, default=[10, 30, 100],
                   help="UE counts (default 10,30,100; K = 300 needs --set beta=0.2)")
    p.add_argument("--instances", type=positive_int, default=20,
                   help="random instances per K (default 20)")
    p.add_argument("--time-limit", type=positive_float, default=10.0,
                   help="SCIP time limit per solve [s]")
    p.add_argument("--auto-time-limit", type=positive_float, default=120.0,
                   help="time limit of the certified reference per solve [s] (default 120)")
    p.add_argument("--scip-max-K", type=positive_int, default=12,
                   help="run SCIP for K up to this (default 12)")
    p.add_argument("--joint-max-K", type=positive_int, default=30,
                   help="run the joint per-round mode for K up to this (default 30)")
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

    from ..config import SystemConfig, load_yaml, parse_overrides
    from ..solvers.random_instances import random_round_system
    from ..solvers.round import repair_switching, solve_round

    data = {**(load_yaml(args.config) if args.config else {}), **parse_overrides(args.set)}
    # every K's config is checked before the progress bar starts: an error is its own line
    cfgs = {K: SystemConfig.from_dict({**data, "K": K}) for K in args.K}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    nan = float("nan")
    bar = tqdm(total=len(args.K) * args.instances, desc="validate round", unit="instance")
    for K in args.K:
        cfg = cfgs[K]
        floor = max(1, math.ceil(cfg.beta * K))
        scip = K <= args.scip_max_K
        for i in range(args.instances):
            rng = np.random.default_rng([args.seed, K, i])
            sys_ = random_round_system(cfg, rng)
            feas = np.isfinite(sys_.b_min)
            x = random_x(rng, feas, cfg.M_max)
            x, _ = repair_switching(x, sys_.b_min, np.where(feas, sys_.b_min, np.inf))
            # given x: BCD vs the certified optimum for that x (and SCIP's)
            sb = solve_round(sys_, cfg.M_max, method="bcd", x=x)
            sa = solve_round(sys_, cfg.M_max, method="auto", x=x, time_limit=args.auto_time_limit)
            sg = (solve_round(sys_, cfg.M_max, method="scip", x=x, time_limit=args.time_limit)
                  if scip else None)
            # x free: the joint per-round mode vs the certified optimum of (7) (and SCIP's)
            sA = solve_round(sys_, cfg.M_max, floor=floor, method="auto",
                             time_limit=args.auto_time_limit)
            sj = (solve_round(sys_, cfg.M_max, floor=floor, method="joint")
                  if K <= args.joint_max_K else None)
            # Algorithm 2 in one round: the greedy switching at nominal prices, then BCD
            xg = greedy_x(sys_, cfg.M_max, floor)
            sG = solve_round(sys_, cfg.M_max, method="bcd", x=xg)
            sJ = (solve_round(sys_, cfg.M_max, floor=floor, method="scip",
                              time_limit=args.time_limit) if scip else None)
            rows.append(dict(
                K=K, instance=i, pairs=int(x.sum()),
                bcd_objective=sb.objective, bcd_iterations=sb.iterations, bcd_seconds=sb.seconds,
                auto_given_objective=sa.objective, auto_given_bound=_bound(sa),
                auto_given_status=sa.status, auto_given_gap=_cert(sa),
                auto_given_seconds=sa.seconds, gap_bcd=_gap(sb.objective, sa.objective),
                scip_given_objective=sg.objective if sg else nan,
                scip_given_status=sg.status if sg else "", scip_given_seconds=sg.seconds if sg else nan,
                gap_scip_given=_gap(sg.objective, sa.objective) if sg else nan,
                auto_objective=sA.objective, auto_bound=_bound(sA), auto_status=sA.status,
                auto_gap=_cert(sA), auto_seconds=sA.seconds, auto_nodes=sA.iterations,
                auto_pairs=int(np.sum(sA.x.x)),
                alg2_objective=sG.objective, alg2_pairs=int(xg.sum()), alg2_seconds=sG.seconds,
                gap_alg2=_gap(sG.objective, sA.objective),
                joint_objective=sj.objective if sj else nan,
                joint_seconds=sj.seconds if sj else nan,
                gap_joint=_gap(sj.objective, sA.objective) if sj else nan,
                scip_minlp_objective=sJ.objective if sJ else nan,
                scip_minlp_status=sJ.status if sJ else "",
                scip_minlp_seconds=sJ.seconds if sJ else nan,
                gap_scip_minlp=_gap(sJ.objective, sA.objective) if sJ else nan,
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


def greedy_x(sys_, M_max: int, floor: int) -> np.ndarray:
    """The greedy policy's switching for one round (MODEL.md (8), ``greedy``): every pair with
    a negative cost u at the nominal allocation (P_max, b = max(b^min, 1/floor)), at most
    M_max per UE, then the cheapest others up to the floor, then pairs dropped until the
    b^min fit the band (7d) (:func:`fedopt.solvers.round.repair_switching`)."""
    from ..costs import best_vertex
    from ..solvers.round import repair_switching

    K, M = sys_.K, sys_.M
    feas = np.isfinite(sys_.b_min)
    u, _, _ = sys_.costs(np.full(K, sys_.P_max),
                         np.maximum(np.where(feas, sys_.b_min, 1.0), 1.0 / max(floor, 1)))
    u = np.where(feas, u, np.inf)
    x = best_vertex(u, feas, M_max).astype(bool)
    for idx in np.argsort(np.where(~x, u, np.inf), axis=None):
        if x.sum() >= floor:
            break
        k, m = divmod(int(idx), M)
        if feas[k, m] and not x[k, m] and x[k].sum() < M_max:
            x[k, m] = True
    return repair_switching(x, sys_.b_min, u)[0]


def _cert(sol) -> float:
    """The certified relative gap of the reference (inf without one)."""
    return math.inf if sol.gap is None else float(sol.gap)


def _bound(sol) -> float:
    """SCIP's dual bound as a float (-inf without one), as the CSV always had it."""
    return -math.inf if sol.bound is None else float(sol.bound)


def _gap(ours: float, ref: float) -> float:
    """(ours − ref)/|ref|: positive when our value is worse; nan without a point."""
    if not (math.isfinite(ours) and math.isfinite(ref)):
        return float("nan")
    return (ours - ref) / max(abs(ref), 1e-300)


def _dist(vals) -> str:
    """median / 90% / max of the finite values (``-`` when there are none)."""
    v = np.array([x for x in vals if math.isfinite(x)], float)
    if not v.size:
        return f"{'-':>9} {'-':>9} {'-':>9}"
    return f"{np.median(v):9.1e} {np.percentile(v, 90):9.1e} {v.max():9.1e}"


def _med(vals) -> str:
    v = [x for x in vals if math.isfinite(x)]
    return f"{np.median(v):8.2f}" if v else f"{'-':>8}"


def _scip_columns(sel: list[dict], mode: str) -> str:
    """SCIP's columns (proved optimal, largest gap to auto, median time) where it ran."""
    if not any(r[f"scip_{mode}_status"] for r in sel):
        return f"{'-':>8} {'-':>13} {'-':>8}"
    g = [r[f"gap_scip_{mode}"] for r in sel if math.isfinite(r[f"gap_scip_{mode}"])]
    return (f"{sum(r[f'scip_{mode}_status'] == 'optimal' for r in sel):8d} "
            f"{max(g) if g else math.nan:13.1e} {_med(r[f'scip_{mode}_seconds'] for r in sel)}")


def summary(rows: list[dict], Ks: list[int], time_limit: float) -> str:
    lines = ["reference: solve_round(method='auto'), certified within its gap (<= 1e-6); "
             "gap = (method − auto)/|auto|, positive when the method is worse; "
             f"SCIP time limit {time_limit:g} s", "",
             "given x: Algorithm 2's BCD over (p, b) vs the certified optimum for that x"]
    head = (f"{'K':>4} {'n':>3} {'auto opt':>8} {'BCD gap: median':>15} {'90%':>9} {'max':>9} "
            f"{'t BCD':>8} {'t auto':>8} | {'SCIP opt':>8} {'SCIP gap: max':>13} {'t SCIP':>8}")
    lines += [head, "-" * len(head)]
    for K in Ks:
        sel = [r for r in rows if r["K"] == K]
        lines.append(
            f"{K:4d} {len(sel):3d} {sum(r['auto_given_status'] == 'optimal' for r in sel):8d} "
            f"{_dist(r['gap_bcd'] for r in sel):>35} "
            f"{_med(r['bcd_seconds'] for r in sel)} {_med(r['auto_given_seconds'] for r in sel)} | "
            + _scip_columns(sel, "given"))
    lines += ["", "x free: Algorithm 2 in one round (greedy x at nominal prices, then BCD) and the "
                  "joint per-round mode vs the certified optimum of (7), floor Σx >= ⌈βK⌉"]
    head = (f"{'K':>4} {'n':>3} {'auto opt':>8} {'auto gap max':>12} {'t auto':>8} "
            f"{'Alg.2 gap: median':>17} {'90%':>9} {'max':>9} "
            f"{'joint gap: median':>17} {'90%':>9} {'max':>9} {'t joint':>8} | "
            f"{'SCIP opt':>8} {'SCIP gap: max':>13} {'t SCIP':>8}")
    lines += [head, "-" * len(head)]
    for K in Ks:
        sel = [r for r in rows if r["K"] == K]
        lines.append(
            f"{K:4d} {len(sel):3d} {sum(r['auto_status'] == 'optimal' for r in sel):8d} "
            f"{max(r['auto_gap'] for r in sel):12.1e} {_med(r['auto_seconds'] for r in sel)} "
            f"{_dist(r['gap_alg2'] for r in sel):>37} "
            f"{_dist(r['gap_joint'] for r in sel):>37} {_med(r['joint_seconds'] for r in sel)} | "
            + _scip_columns(sel, "minlp"))
    return "\n".join(lines)
