"""``fedopt validate TARGET ...``: compare every method on random instances.

Targets live in :data:`TARGETS`, a dict name -> :class:`Target` (``add_parser``, ``run``,
help). ``bandwidth`` and ``power`` are defined here; other modules add theirs either by
calling :func:`register` or by being a module ``fedopt.cli.validate_<name>`` listed in
:data:`EXTERNAL` with the usual ``add_parser(p)`` / ``run(args)`` pair (imported lazily when
present, e.g. ``round`` and ``online``).

``fedopt validate bandwidth|power --regime defaults|noise-limited --instances N
--sizes 3,5,8 --csv FILE`` draws random instances (``fedopt.solvers.random_instances``), runs
every method on each, and prints per method the objective relative to the best known
(median / max), the certified gap, how often the method is within 1e-9 of the best, and the
time (median / max). It also reports how often the budget binds, how often the Lagrangian
dual had a gap before branching, and SCIP's statuses, and writes one CSV row per
(instance, method).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ._types import int_list, name_list, output_file, positive_float, positive_int, seed, writing

MAX_SIZE = 10**6  # --sizes: instances larger than this do not fit a validation run


@dataclass(frozen=True)
class Target:
    add_parser: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


TARGETS: dict[str, Target] = {}

#: targets defined by other modules, imported when present
EXTERNAL: dict[str, tuple[str, str]] = {
    "round": ("fedopt.cli.validate_round", "the round allocator against exact references"),
    "online": ("fedopt.cli.validate_online", "online switching: regret and violations over T"),
}


def register(name: str, add_parser: Callable, run: Callable, help: str = "") -> None:
    """Add (or replace) a ``fedopt validate`` target."""
    TARGETS[name] = Target(add_parser, run, help)


def _targets() -> dict[str, Target]:
    out = dict(TARGETS)
    for name, (module, help_) in EXTERNAL.items():
        if name in out:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        out[name] = Target(mod.add_parser, mod.run, (mod.__doc__ or help_).splitlines()[0] or help_)
    return out


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    sub.required = True
    for name, t in _targets().items():
        sp = sub.add_parser(name, help=t.help, description=t.help)
        t.add_parser(sp)
        sp.set_defaults(_target_run=t.run)


def run(args: argparse.Namespace) -> int:
    return int(args._target_run(args) or 0)


# --- shared helpers ------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = int_list(str(text), 1)
    if max(sizes) > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"every size must be <= {MAX_SIZE:g}, got {max(sizes)}")
    return sizes


def _common(p: argparse.ArgumentParser, methods: tuple[str, ...], sizes: str) -> None:
    p.add_argument("--regime", default="noise-limited",
                   choices=["defaults", "noise-limited", "adversarial"],
                   help="instance distribution (instances/README.md; default noise-limited); "
                        "adversarial: auto against an independent reference "
                        "(fedopt.cli.validate_adversarial)")
    p.add_argument("--instances", type=positive_int, default=100,
                   help="instances in total (default 100)")
    p.add_argument("--sizes", type=_sizes, default=_sizes(sizes),
                   help=f"comma-separated sizes, cycled over the instances (default {sizes})")
    p.add_argument("--methods", type=name_list, default=",".join(methods),
                   help=f"comma-separated (default {','.join(methods)})")
    p.add_argument("--scip-time-limit", type=positive_float, default=60.0,
                   help="seconds (default 60)")
    p.add_argument("--time-limit", type=positive_float, default=60.0,
                   help="seconds for the other methods (default 60)")
    p.add_argument("--seed", type=seed, default=0, help="first seed (default 0)")
    p.add_argument("--csv", type=output_file, default=None,
                   help="write one row per (instance, method) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _methods(names: list[str], known: tuple[str, ...]) -> list[str]:
    """--methods (parsed by name_list: no empty entries) checked against ``known``."""
    bad = [m for m in names if m not in known]
    if bad:
        raise ConfigError(f"unknown method {bad[0]!r} for --methods; known: {', '.join(known)}")
    return names


def _check(args) -> None:
    """The numbers were checked by their argparse types (fedopt.cli._types); kept as the hook
    for checks that relate several options."""


def _progress(total: int, disable: bool, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, disable=disable, desc=desc, unit="inst", leave=False)


def _median(xs):
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _max(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return max(xs) if xs else math.nan


def _fmt(v, spec: str = ".2e") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def _evaluate(rows: list[dict], key_best: str = "objective") -> None:
    """Fill rel_to_best per instance: (objective − best) / max(|best|, tiny)."""
    by_inst: dict[int, list[dict]] = {}
    for r in rows:
        by_inst.setdefault(r["instance"], []).append(r)
    for group in by_inst.values():
        objs = [r[key_best] for r in group if r["feasible"] and math.isfinite(r[key_best])]
        best = min(objs) if objs else math.nan
        for r in group:
            ok = r["feasible"] and math.isfinite(r[key_best]) and math.isfinite(best)
            r["best_known"] = best
            r["rel_to_best"] = (r[key_best] - best) / max(abs(best), 1e-300) if ok else math.nan


def _table(rows: list[dict], methods: list[str]) -> str:
    head = (f"{'method':<9} {'n':>4} {'rel.obj median':>14} {'rel.obj max':>11} {'<=1e-9':>7} "
            f"{'cert.gap med':>12} {'cert.gap max':>12} {'gap<=1e-9':>9} {'t median':>9} "
            f"{'t max':>9}  statuses")
    lines = [head, "-" * len(head)]
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        rel = [r["rel_to_best"] for r in rs]
        within = sum(1 for x in rel if math.isfinite(x) and x <= 1e-9)
        gaps = [r["gap"] for r in rs]
        cert = sum(1 for g in gaps if g is not None and math.isfinite(g) and g <= 1e-9)
        st = Counter(r["status"] for r in rs)
        lines.append(
            f"{m:<9} {len(rs):>4} {_fmt(_median(rel)):>14} {_fmt(_max(rel)):>11} "
            f"{100 * within / len(rs):>6.1f}% {_fmt(_median(gaps)):>12} {_fmt(_max(gaps)):>12} "
            f"{100 * cert / len(rs):>8.1f}% {_fmt(_median([r['seconds'] for r in rs]), '.3g'):>9} "
            f"{_fmt(_max([r['seconds'] for r in rs]), '.3g'):>9}  "
            + ", ".join(f"{k} {v}" for k, v in sorted(st.items()))
        )
    return "\n".join(lines)


def _write_csv(path: str | None, rows: list[dict], fields: list[str]) -> None:
    if not path:
        return
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out), out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    print(f"wrote {out}")


# --- bandwidth ----------------------------------------------------------------------------

BW_METHODS = ("auto", "lambertw", "alg1", "scip", "ipopt", "cvxpy")
BW_FIELDS = ["instance", "regime", "size", "seed", "method", "status", "objective", "bound",
             "gap", "best_known", "rel_to_best", "seconds", "iterations", "feasible", "nu",
             "binding", "dual_gap_before_branching", "native_status"]


def _bw_add(p: argparse.ArgumentParser) -> None:
    _common(p, BW_METHODS, "3,5,8")


def _bw_run(args: argparse.Namespace) -> int:
    from ..solvers import solve_bandwidth
    from ..solvers._bandwidth_core import convex_mask
    from ..solvers.random_instances import random_bandwidth

    _check(args)
    if args.regime == "adversarial":
        from .validate_adversarial import run_adversarial

        return run_adversarial(args, "bandwidth", _progress, _write_csv)
    methods = _methods(args.methods, BW_METHODS)
    rows: list[dict] = []
    bar = _progress(args.instances, args.no_progress, f"validate bandwidth ({args.regime})")
    skipped_cvxpy = 0
    for i in range(args.instances):
        n = args.sizes[i % len(args.sizes)]
        seed = args.seed + i
        inst = random_bandwidth(n, args.regime, seed)
        for m in methods:
            if m == "cvxpy" and not convex_mask(inst.w, inst.a, inst.c).all():
                skipped_cvxpy += 1
                continue
            tl = args.scip_time_limit if m == "scip" else args.time_limit
            sol = solve_bandwidth(inst, m, time_limit=tl)
            feasible = math.isfinite(sol.objective) and inst.violation(sol.x) == 0.0
            rows.append({
                "instance": i, "regime": args.regime, "size": n, "seed": seed, "method": m,
                "status": sol.status, "objective": sol.objective, "bound": sol.bound,
                "gap": sol.gap, "seconds": sol.seconds, "iterations": sol.iterations,
                "feasible": feasible, "nu": sol.extras.get("nu"),
                "binding": None if sol.extras.get("nu") is None else sol.extras["nu"] > 0,
                "dual_gap_before_branching": sol.extras.get("dual_gap_before_branching"),
                "native_status": sol.extras.get("native_status"),
            })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _evaluate(rows)
    print(f"fedopt validate bandwidth: {args.instances} instances, regime {args.regime}, "
          f"sizes {','.join(map(str, args.sizes))}; objective relative to the best known "
          f"feasible point; certified gap = (objective - bound)/|objective|")
    print(_table(rows, methods))
    _bw_summary(rows, skipped_cvxpy)
    _write_csv(args.csv, rows, BW_FIELDS)
    return 0


def _bw_summary(rows: list[dict], skipped_cvxpy: int) -> None:
    auto = [r for r in rows if r["method"] == "auto"]
    if auto:
        binds = sum(1 for r in auto if r["binding"])
        gapped = sum(1 for r in auto if r["dual_gap_before_branching"])
        print(f"budget binds (nu > 0): {binds}/{len(auto)}; Lagrangian dual had a gap before "
              f"branching: {gapped}/{len(auto)}")
        scip = {r["instance"]: r for r in rows if r["method"] == "scip"}
        if scip:
            worse = [r for r in auto if r["instance"] in scip
                     and math.isfinite(scip[r["instance"]]["objective"])
                     and r["objective"] > scip[r["instance"]]["objective"]
                     + 1e-9 * abs(scip[r["instance"]]["objective"])]
            tl = [r for r in auto if r["instance"] in scip
                  and scip[r["instance"]]["status"] == "time_limit"]
            cert_tl = sum(1 for r in tl if r["gap"] is not None and r["gap"] <= 1e-9)
            print(f"auto worse than SCIP's point by > 1e-9 relative: {len(worse)}/{len(auto)}; "
                  f"auto certified on the {len(tl)} instance(s) where SCIP hit its time limit: "
                  f"{cert_tl}/{len(tl)}")
            print("SCIP statuses: " + ", ".join(
                f"{k} {v}" for k, v in sorted(Counter(
                    f"{r['status']} ({r['native_status']})" for r in scip.values()).items())))
    if skipped_cvxpy:
        print(f"cvxpy skipped on {skipped_cvxpy} instance(s) with a nonconvex term")


# --- power --------------------------------------------------------------------------------

PW_METHODS = ("auto", "ipopt", "bounded", "scip", "max")
PW_FIELDS = ["instance", "regime", "size", "seed", "method", "status", "objective", "bound",
             "gap", "best_known", "rel_to_best", "seconds", "iterations", "feasible", "p",
             "n_stationary", "native_status"]


def _pw_add(p: argparse.ArgumentParser) -> None:
    _common(p, PW_METHODS, "1,2,3")


def _pw_run(args: argparse.Namespace) -> int:
    from ..solvers import solve_power
    from ..solvers.random_instances import random_power_batch

    _check(args)
    if args.regime == "adversarial":
        from .validate_adversarial import run_adversarial

        return run_adversarial(args, "power", _progress, _write_csv)
    methods = _methods(args.methods, PW_METHODS)
    rows: list[dict] = []
    bar = _progress(args.instances, args.no_progress, f"validate power ({args.regime})")
    for i in range(args.instances):
        m_ = args.sizes[i % len(args.sizes)]
        seed = args.seed + i
        inst = random_power_batch(1, args.regime, seed, m=m_).instance(0)
        for m in methods:
            tl = args.scip_time_limit if m == "scip" else args.time_limit
            sol = solve_power(inst, m, time_limit=tl)
            feasible = math.isfinite(sol.objective) and inst.violation(sol.x) == 0.0
            rows.append({
                "instance": i, "regime": args.regime, "size": inst.W.size, "seed": seed,
                "method": m, "status": sol.status, "objective": sol.objective,
                "bound": sol.bound, "gap": sol.gap, "seconds": sol.seconds,
                "iterations": sol.iterations, "feasible": feasible, "p": sol.x,
                "n_stationary": len(sol.extras.get("stationary_points", [])) if m == "auto" else None,
                "native_status": sol.extras.get("native_status"),
            })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _evaluate(rows)
    print(f"fedopt validate power: {args.instances} instances, regime {args.regime}, modules "
          f"{','.join(map(str, args.sizes))}; objective relative to the best known feasible point")
    print(_table(rows, methods))
    auto = [r for r in rows if r["method"] == "auto"]
    multi = sum(1 for r in auto if (r["n_stationary"] or 0) >= 2)
    interior = sum(1 for r in auto if r["n_stationary"])
    print(f"auto: interior stationary points on {interior}/{len(auto)} instances, several on "
          f"{multi}/{len(auto)}")
    scip = [r for r in rows if r["method"] == "scip"]
    if scip:
        print("SCIP statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(
            f"{r['status']} ({r['native_status']})" for r in scip).items())))
    _write_csv(args.csv, rows, PW_FIELDS)
    return 0


register("bandwidth", _bw_add, _bw_run, "compare every bandwidth (16) method on random instances")
register("power", _pw_add, _pw_run, "compare every power (21) method on random instances")
