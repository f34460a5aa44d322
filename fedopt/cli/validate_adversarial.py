"""``fedopt validate bandwidth|power --regime adversarial``: the certified ``auto`` method
against the independent reference (``fedopt.solvers._reference``) on the adversarial families
of ``fedopt.solvers.random_instances`` (issue 14).

Per instance it records the status, the 60-digit objective of the returned point and of the
reference's exactly feasible point, and two kinds of *violation*:

* ``point``: status ``optimal`` but the reference's point beats the returned point by more
  than the solver's own stated gap: ref < exact(x) − gap_abs − allowance, gap_abs =
  objective − bound (or gap·|objective| without a bound), both sides evaluated in mpmath,
  so rounding of the solver's own float objective is *not* forgiven;
* ``bound``: a reported bound above the reference's objective: bound > ref + allowance
  (any status).

The allowance is 4 ulp of the larger magnitude (the float representation of the numbers
compared). ``obj off`` counts returned objectives that differ from the exact value of the
returned point by more than the stated gap (informative, any status); ``ref lb`` counts
instances where the returned point is below the reference's own lower bound (a bug in the
reference). A per-instance wall-clock watchdog (SIGALRM where available) turns a hang into
an exception row.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import time
from collections import Counter
from contextlib import contextmanager

from ..instances import BandwidthInstance, PowerInstance

__all__ = ["audit_bandwidth", "audit_power", "run_adversarial", "FIELDS"]

EPS = 2.220446049250313e-16

FIELDS = ["instance", "problem", "family", "size", "seed", "status", "objective",
          "exact_objective", "bound", "gap", "gap_abs", "reference", "reference_lb",
          "point_violation", "bound_violation", "objective_off", "reference_lb_broken",
          "seconds", "reference_seconds", "exception"]


class _Timeout(Exception):
    pass


@contextmanager
def _watchdog(seconds: float):
    """Raise _Timeout after ``seconds`` of wall time (SIGALRM, main thread; else a no-op)."""
    try:
        old = signal.signal(signal.SIGALRM, _raise_timeout)
    except (ValueError, AttributeError):  # not the main thread / no SIGALRM
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _raise_timeout(signum, frame):
    raise _Timeout("per-instance watchdog expired")


def _judge(row: dict, sol, exact, ref) -> dict:
    """Fill the violation columns of ``row`` from a Solution, the exact objective of its
    point (mpmath) and a Reference."""
    obj, bound = sol.objective, sol.bound
    if bound is not None and math.isfinite(bound) and math.isfinite(obj):
        gap_abs = max(0.0, obj - bound)
    elif sol.gap is not None and math.isfinite(obj):
        gap_abs = sol.gap * max(abs(obj), 1e-300)
    else:
        gap_abs = math.inf
    ex = float(exact) if exact is not None else math.nan
    allow = 4 * EPS * max(abs(ref.objective), abs(ex) if math.isfinite(ex) else 0.0,
                          abs(bound) if bound is not None and math.isfinite(bound) else 0.0)
    point = (sol.status == "optimal"
             and (not math.isfinite(ex) or float(exact - ref.objective_mp) > gap_abs + allow))
    bnd = bound is not None and math.isfinite(bound) and \
        float(bound - ref.objective_mp) > allow
    off = math.isfinite(ex) and math.isfinite(obj) and abs(obj - ex) > gap_abs + allow
    lb_broken = math.isfinite(ex) and ex < ref.lower_bound - allow
    row.update(exact_objective=ex, gap_abs=gap_abs, reference=ref.objective,
               reference_lb=ref.lower_bound, point_violation=bool(point),
               bound_violation=bool(bnd), objective_off=bool(off),
               reference_lb_broken=bool(lb_broken))
    return row


def _run_auto(row: dict, solve, watchdog: float):
    """The certified method under a watchdog; an exception is recorded in ``row``, not
    raised (every exception is a finding)."""
    t0 = time.perf_counter()
    try:
        with _watchdog(watchdog):
            return solve()
    except Exception as exc:  # noqa: BLE001 - every exception is a finding
        row.update(status="exception", seconds=time.perf_counter() - t0,
                   exception=f"{type(exc).__name__}: {exc}"[:200])
        return None


def _conclude(row: dict, sol, ref, feasible: bool, exact_objective) -> dict:
    """The row's verdict: the reference alone when the solver raised; otherwise the solver's
    point against the reference (its exact objective only when the point is feasible; an
    infeasible point labelled optimal is a finding)."""
    if sol is None:
        row.update(reference=ref.objective, reference_lb=ref.lower_bound,
                   point_violation=False, bound_violation=False, objective_off=False,
                   reference_lb_broken=False)
        return row
    exact = exact_objective() if feasible else None
    if not feasible and sol.status == "optimal":
        row["exception"] = "infeasible point labelled optimal"
    row.update(status=sol.status, objective=sol.objective, bound=sol.bound, gap=sol.gap,
               seconds=sol.seconds)
    return _judge(row, sol, exact, ref)


def audit_bandwidth(inst: BandwidthInstance, time_limit: float = 10.0,
                    watchdog: float | None = None, grid: int = 1024) -> dict:
    """Run ``solve_bandwidth(inst, "auto")`` and the reference; one result row (no ids)."""
    from ..solvers import solve_bandwidth
    from ..solvers._reference import bandwidth_reference, exact_bandwidth_objective

    row: dict = {"problem": "bandwidth", "size": inst.n, "exception": ""}
    sol = _run_auto(row, lambda: solve_bandwidth(inst, "auto", time_limit=time_limit),
                    watchdog or 3 * time_limit + 30)
    t1 = time.perf_counter()
    x0 = None if sol is None else sol.x
    ref = bandwidth_reference(inst, x0, grid=grid)
    row["reference_seconds"] = time.perf_counter() - t1
    feasible = sol is not None and inst.violation(sol.x) == 0.0
    return _conclude(row, sol, ref, feasible, lambda: exact_bandwidth_objective(inst, sol.x))


#: the power reference's log grid in ``fedopt validate`` (each cell that could hold the
#: minimum is then split 64 × 64 times; ``power_reference`` itself defaults to 1e6)
POWER_POINTS = 200_000


def audit_power(inst: PowerInstance, time_limit: float = 10.0, watchdog: float | None = None,
                points: int = POWER_POINTS) -> dict:
    """Run ``solve_power(inst, "auto")`` and the reference; one result row (no ids)."""
    from ..solvers import solve_power
    from ..solvers._reference import exact_power_objective, power_reference

    row: dict = {"problem": "power", "size": int(inst.W.size), "exception": ""}
    sol = _run_auto(row, lambda: solve_power(inst, "auto", time_limit=time_limit),
                    watchdog or 3 * time_limit + 30)
    t1 = time.perf_counter()
    p0 = None if sol is None else float(sol.x)
    # the grid's work M·points is capped at 4e6 (at least 1e5 points)
    m = max(int(inst.W.size), 1)
    ref = power_reference(inst, p0, points=min(points, max(100_000, 4_000_000 // m)))
    row["reference_seconds"] = time.perf_counter() - t1
    feasible = sol is not None and math.isfinite(p0) and inst.violation(p0) == 0.0
    return _conclude(row, sol, ref, feasible, lambda: exact_power_objective(inst, p0))


def _median(xs: list) -> float:
    """Median of the finite values (NaN when there are none)."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def table(rows: list[dict], families: tuple[str, ...]) -> str:
    """One line per family (and a total): count, optimal, violations, exceptions, times."""
    head = (f"{'family':<16} {'count':>6} {'optimal':>8} {'viol.point':>10} {'viol.bound':>10} "
            f"{'obj off':>8} {'ref lb':>7} {'exceptions':>10} {'t max':>8} {'t median':>9}"
            "  statuses")
    lines = [head, "-" * len(head)]
    for fam in (*families, "total"):
        rs = rows if fam == "total" else [r for r in rows if r["family"] == fam]
        if not rs:
            continue
        secs = [r["seconds"] for r in rs if r.get("seconds") is not None]
        st = Counter(r["status"] for r in rs)
        lines.append(
            f"{fam:<16} {len(rs):>6} {st.get('optimal', 0):>8} "
            f"{sum(bool(r['point_violation']) for r in rs):>10} "
            f"{sum(bool(r['bound_violation']) for r in rs):>10} "
            f"{sum(bool(r['objective_off']) for r in rs):>8} "
            f"{sum(bool(r['reference_lb_broken']) for r in rs):>7} "
            f"{sum(bool(r['exception']) for r in rs):>10} "
            f"{max(secs, default=math.nan):>8.3g} {_median(secs):>9.3g}  "
            + ", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    return "\n".join(lines)


def run_adversarial(args: argparse.Namespace, problem: str, progress, write_csv) -> int:
    """The ``--regime adversarial`` branch of ``fedopt validate bandwidth|power``."""
    from ..solvers.random_instances import (
        BANDWIDTH_FAMILIES,
        POWER_FAMILIES,
        adversarial_bandwidth,
        adversarial_power,
    )

    families = BANDWIDTH_FAMILIES if problem == "bandwidth" else POWER_FAMILIES
    rows: list[dict] = []
    bar = progress(args.instances, args.no_progress, f"validate {problem} (adversarial)")
    for i in range(args.instances):
        fam = families[i % len(families)]
        seed = args.seed + i
        if problem == "bandwidth":
            row = audit_bandwidth(adversarial_bandwidth(fam, seed), args.time_limit)
        else:
            row = audit_power(adversarial_power(fam, seed), args.time_limit)
        row.update(instance=i, family=fam, seed=seed)
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    print(f"fedopt validate {problem}: {args.instances} adversarial instances, auto (time "
          f"limit {args.time_limit:g} s) against the independent reference "
          "(fedopt.solvers._reference); a violation is an optimal point beaten by more than "
          "its stated gap (viol.point) or a bound above the reference (viol.bound)")
    print(table(rows, families))
    bad = [r for r in rows if r["point_violation"] or r["bound_violation"] or r["exception"]]
    for r in bad[:10]:
        print(f"  instance {r['instance']} ({r['family']}, N={r['size']}, seed {r['seed']}): "
              f"{r['status']} obj {r.get('exact_objective', math.nan):.17g} "
              f"bound {r.get('bound')} gap_abs {r.get('gap_abs')} reference "
              f"{r.get('reference', math.nan):.17g} {r['exception']}")
    write_csv(args.csv, rows, FIELDS)
    return 0
