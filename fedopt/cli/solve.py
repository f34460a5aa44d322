"""``fedopt solve bandwidth|power|round FILE.json [--method M] [--json]``.

Reads a canonical instance (``../shared/instances/README.md``), solves it with
``fedopt.solvers`` and prints either a short table or, with ``--json``, exactly one JSON
object with the keys objective, x (and its alias b or p), status, method, iterations,
seconds, bound, gap, gap_abs and tolerance (what the certificate met: "relative", or
"rounding" where the objective's terms cancel below float resolution). A malformed or
infeasible file is one line on stderr and exit 2.
A solver that fails (status ``error``) still prints its result (non-finite numbers as null
in JSON), then one line on stderr, and exits 1, for either problem and either output.
For ``round`` (7) x is the object {"x", "p", "b"} (no alias); the methods are auto (the
default: the certified global method, x free), bcd (needs the file's "x"), joint and scip
(x free); ``--tol`` is auto's and scip's relative gap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from ._types import open_fraction, positive_float

PROBLEMS = ("bandwidth", "power", "round")


def add_parser(p: argparse.ArgumentParser) -> None:
    from fedopt.solvers import BANDWIDTH_METHODS, POWER_METHODS
    from fedopt.solvers.round import ROUND_METHODS

    p.add_argument("problem", choices=PROBLEMS, help="bandwidth (16), power (21) or round (7)")
    p.add_argument("file", metavar="FILE.json", help="canonical instance")
    methods = sorted(set(BANDWIDTH_METHODS) | set(POWER_METHODS) | set(ROUND_METHODS))
    p.add_argument("--method", default=None, choices=methods,
                   help="bandwidth: " + ", ".join(BANDWIDTH_METHODS)
                   + "; power: " + ", ".join(POWER_METHODS) + " (default auto); round: "
                   + ", ".join(ROUND_METHODS) + " (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--time-limit", type=positive_float, default=60.0,
                   help="seconds for global/scip/ipopt (default 60)")
    p.add_argument("--tol", type=open_fraction, default=None,
                   help="relative gap certified as optimal, in (0, 1) (default 1e-9 bandwidth, "
                        "1e-12 power, 1e-6 round's auto and scip)")


def run(args: argparse.Namespace) -> int:
    from fedopt.errors import InstanceError
    from fedopt.instances import load_instance
    from fedopt.solvers import BANDWIDTH_METHODS, POWER_METHODS, solve_bandwidth, solve_power

    if args.problem == "round":
        return _run_round(args)
    if args.method is None:
        args.method = "auto"
    known = BANDWIDTH_METHODS if args.problem == "bandwidth" else POWER_METHODS
    if args.method not in known:
        raise InstanceError(f"method '{args.method}' does not apply to {args.problem}; "
                            f"choose one of {', '.join(known)}")
    inst = load_instance(args.file, problem=args.problem)
    if args.problem == "bandwidth":
        tol = 1e-9 if args.tol is None else args.tol
        sol = solve_bandwidth(inst, args.method, tol=tol, time_limit=args.time_limit)
        alias = "b"
    else:
        tol = 1e-12 if args.tol is None else args.tol
        sol = solve_power(inst, args.method, tol=tol, time_limit=args.time_limit)
        alias = "p"
    return _report(args, sol, alias)


def _run_round(args: argparse.Namespace) -> int:
    """``fedopt solve round``: :func:`fedopt.solvers.round.solve_round` on a round instance."""
    from fedopt.errors import InstanceError
    from fedopt.instances import load_instance
    from fedopt.solvers.round import ROUND_METHODS, solve_round

    method = "auto" if args.method is None else args.method
    if method not in ROUND_METHODS:
        raise InstanceError(f"method '{method}' does not apply to round; "
                            f"choose one of {', '.join(ROUND_METHODS)}")
    inst = load_instance(args.file, problem="round")
    if method == "bcd" and inst.x is None:
        raise InstanceError("method 'bcd' needs the switching 'x' (K×M) in the instance")
    sol = solve_round(inst.system(), inst.M_max, floor=inst.floor, method=method,
                      x=inst.x if method == "bcd" else None, time_limit=args.time_limit,
                      rel_gap=1e-6 if args.tol is None else args.tol)
    return _report(args, sol, None)


def _report(args: argparse.Namespace, sol, alias: str | None) -> int:
    """Print ``sol`` (one JSON object or the table); exit 1 with one stderr line on error."""
    if args.json:
        print(json.dumps(_finite(sol.to_dict(alias=alias)), allow_nan=False))
    else:
        print(_table(sol, alias))
    if sol.status == "error":
        native = sol.extras.get("native_status")
        print(f"fedopt solve: error: method {sol.method} failed on {args.file} (status error"
              f"{f', native {native}' if native else ''})", file=sys.stderr)
        return 1
    return 0


def _finite(v):
    """``v`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.12g}" if math.isfinite(v) else str(v)
    return str(v)


def _values(x) -> str:
    return ", ".join(f"{v:.6g}" for v in x[:8]) + (f", ... ({x.size} values)" if x.size > 8 else "")


def _table(sol, alias: str | None) -> str:
    import numpy as np

    if alias is None:  # a round: x, p, b of the scheduled pairs (k, m)
        on = np.asarray(sol.x.x) > 0
        k, m = np.nonzero(on)
        pairs = " ".join(f"({i},{j})" for i, j in zip(k[:8], m[:8])) + (
            f" ... ({k.size} pairs)" if k.size > 8 else "")
        last = [("pairs (k,m)", pairs or "-"),
                ("p", _values(np.asarray(sol.x.p, dtype=float)[on.any(axis=1)])),
                ("b", _values(np.asarray(sol.x.b, dtype=float)[on]))]
    else:
        last = [(alias, _values(np.atleast_1d(np.asarray(sol.x, dtype=float))))]
    rows = [
        ("method", sol.method), ("status", sol.status), ("objective", _fmt(sol.objective)),
        ("bound", _fmt(sol.bound)), ("gap", _fmt(sol.gap)), ("gap (abs)", _fmt(sol.gap_abs)),
        ("tolerance met", _fmt(sol.tolerance)),
        ("iterations", str(sol.iterations)), ("seconds", f"{sol.seconds:.4g}"),
        *last,
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
