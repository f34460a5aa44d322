"""``fedopt solve bandwidth|power FILE.json [--method M] [--json]``.

Reads a canonical instance (``../shared/instances/README.md``), solves it with
``fedopt.solvers`` and prints either a short table or, with ``--json``, exactly one JSON
object with the keys objective, x (and its alias b or p), status, method, iterations,
seconds, bound, gap, gap_abs and tolerance (what the certificate met: "relative", or
"rounding" where the objective's terms cancel below float resolution). A malformed or
infeasible file is one line on stderr and exit 2.
A solver that fails (status ``error``) still prints its result (non-finite numbers as null
in JSON), then one line on stderr, and exits 1, for either problem and either output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from ._types import open_fraction, positive_float

PROBLEMS = ("bandwidth", "power")


def add_parser(p: argparse.ArgumentParser) -> None:
    from fedopt.solvers import BANDWIDTH_METHODS, POWER_METHODS

    p.add_argument("problem", choices=PROBLEMS, help="bandwidth (16) or power (21)")
    p.add_argument("file", metavar="FILE.json", help="canonical instance")
    methods = sorted(set(BANDWIDTH_METHODS) | set(POWER_METHODS))
    p.add_argument("--method", default="auto", choices=methods,
                   help="bandwidth: " + ", ".join(BANDWIDTH_METHODS)
                   + "; power: " + ", ".join(POWER_METHODS) + " (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--time-limit", type=positive_float, default=60.0,
                   help="seconds for global/scip/ipopt (default 60)")
    p.add_argument("--tol", type=open_fraction, default=None,
                   help="relative gap certified as optimal, in (0, 1) (default 1e-9 bandwidth, "
                        "1e-12 power)")


def run(args: argparse.Namespace) -> int:
    from fedopt.errors import InstanceError
    from fedopt.instances import load_instance
    from fedopt.solvers import BANDWIDTH_METHODS, POWER_METHODS, solve_bandwidth, solve_power

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


def _table(sol, alias: str) -> str:
    import numpy as np

    x = np.atleast_1d(np.asarray(sol.x, dtype=float))
    xs = ", ".join(f"{v:.6g}" for v in x[:8]) + (f", ... ({x.size} values)" if x.size > 8 else "")
    rows = [
        ("method", sol.method), ("status", sol.status), ("objective", _fmt(sol.objective)),
        ("bound", _fmt(sol.bound)), ("gap", _fmt(sol.gap)), ("gap (abs)", _fmt(sol.gap_abs)),
        ("tolerance met", _fmt(sol.tolerance)),
        ("iterations", str(sol.iterations)), ("seconds", f"{sol.seconds:.4g}"),
        (alias, xs),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
