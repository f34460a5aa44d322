"""Stress suite (issue 14): the certified ``auto`` methods for (16) and (21) against the
independent reference (``fedopt.solvers._reference``) on the adversarial families, and the
reference itself against brute force and closed forms."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import mpmath
import numpy as np
import pytest
from fedopt.solvers import solve_bandwidth
from fedopt.solvers._reference import (
    bandwidth_brute_force,
    bandwidth_reference,
    exact_bandwidth_objective,
    exact_power_objective,
    power_reference,
)
from fedopt.solvers.random_instances import (
    BANDWIDTH_FAMILIES,
    POWER_FAMILIES,
    adversarial_bandwidth,
    adversarial_power,
    random_bandwidth,
)

from fedopt.cli.validate_adversarial import audit_bandwidth, audit_power
from fedopt.instances import BandwidthInstance, PowerInstance, load_instance

REGRESSIONS = Path(__file__).resolve().parents[2] / "experiments" / "instances" / "regressions"


def _clean(row: dict) -> str:
    """'' when the row is clean, else a one-line description of what broke."""
    bad = [k for k in ("point_violation", "bound_violation", "reference_lb_broken") if row[k]]
    if row["exception"]:
        bad.append(row["exception"])
    return "" if not bad else (f"{row['family']} seed {row['seed']} N={row['size']}: "
                               f"{', '.join(bad)} ({row['status']}, exact "
                               f"{row.get('exact_objective')!r}, bound {row.get('bound')!r}, "
                               f"gap_abs {row.get('gap_abs')!r}, reference {row['reference']!r})")


# --- the reference itself -------------------------------------------------------------------


def _plain_grid(inst: BandwidthInstance, n: int = 2001) -> float:
    """min of (16) on a plain 2-D (or 1-D) linspace grid of feasible points, in float."""
    g = [np.linspace(lo, min(hi, inst.budget), n) for lo, hi in zip(inst.b_min, inst.b_max)]
    if inst.n == 1:
        return float(np.min(inst.terms(g[0][:, None])))
    b0, b1 = np.meshgrid(g[0], g[1], indexing="ij")
    ok = b0 + b1 <= inst.budget
    tot = (-inst.w[0] * np.exp(-inst.a[0] * b0) + inst.c[0] / b0
           - inst.w[1] * np.exp(-inst.a[1] * b1) + inst.c[1] / b1)
    return float(np.min(tot[ok]))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [1, 2])
def test_reference_matches_brute_force_small(n, seed):
    inst = random_bandwidth(n, "noise-limited", seed)
    inst = BandwidthInstance(inst.w, inst.a, inst.c, inst.b_min, inst.b_max,
                             [1.0, 0.2, 0.05, 0.01][seed % 4])
    brute = bandwidth_brute_force(inst, 40_000)
    ref = bandwidth_reference(inst)
    plain = _plain_grid(inst)
    for r in (brute, ref):
        assert inst.violation(r.x) == 0.0
        assert math.fsum(r.x.tolist()) <= inst.budget
        assert r.lower_bound <= r.objective
    scale = max(abs(brute.objective), 1e-3)
    assert brute.objective <= plain + 1e-12 * scale  # the enumeration beats a plain grid
    assert brute.lower_bound <= plain
    assert abs(ref.objective - brute.objective) <= 1e-9 * scale
    assert ref.lower_bound <= brute.objective and brute.lower_bound <= ref.objective
    assert brute.objective - brute.lower_bound <= 1e-3 * scale  # and the brute bound is close


def test_reference_cancelling_closed_form():
    """One cancelling pair: the optimum is f(b*) = δ (a b* ≈ 1 − δ b*/c), known in mpmath."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        inst = adversarial_bandwidth("cancelling", rng)
        one = BandwidthInstance(inst.w[:1], inst.a[:1], inst.c[:1], inst.b_min[:1],
                                inst.b_max[:1], inst.budget)
        ref = bandwidth_reference(one)
        with mpmath.workdps(60):
            w, a, c = (mpmath.mpf(float(v[0])) for v in (one.w, one.a, one.c))
            bstar = mpmath.findroot(lambda b, w=w, a=a, c=c: w * a * mpmath.exp(-a * b) - c / b**2,
                                    mpmath.mpf(float(1 / one.a[0])))
            fstar = -w * mpmath.exp(-a * bstar) + c / bstar
        assert abs(fstar) < 1e-10  # many orders below its parts (~2e-2)
        # the reference's float point is as good as the exact minimiser allows
        assert ref.objective_mp - fstar <= 1e-30 + 1e-3 * abs(fstar)
        assert ref.lower_bound <= float(fstar)


def test_reference_regressions():
    for path in sorted(REGRESSIONS.glob("bandwidth_*.json")):
        inst = load_instance(path)
        known = json.loads(path.read_text())["reference"]["reference_objective"]
        ref = bandwidth_reference(inst)
        assert inst.violation(ref.x) == 0.0
        assert ref.objective <= known + 1e-12 * abs(known)
        assert ref.lower_bound <= ref.objective


def test_power_reference_closed_forms():
    base = dict(W=[0.5, 0.2], A=[1e-3, 4e-3], kappa=0.01, alpha=3.5, p_min=1e-3, p_max=0.2)
    # C = 0: (21) is decreasing in p, the optimum is p_max; huge C: p_min; p_min = p_max
    ref = power_reference(PowerInstance(**base, C=0.0), points=100_000)
    assert ref.x == 0.2
    ref = power_reference(PowerInstance(**base, C=1e9), points=100_000)
    assert ref.x == 1e-3
    fixed = PowerInstance(**dict(base, p_max=1e-3), C=1.0)
    assert power_reference(fixed).x == 1e-3
    # one module, κ = 0: the stationary point of W(1 − e^{−A/p}) + Cp by mpmath findroot
    inst = PowerInstance([1.0], [0.01], 0.0, 3.5, 5.0, 1e-3, 0.2)
    ref = power_reference(inst, points=200_000)
    with mpmath.workdps(60):
        p = mpmath.findroot(lambda p: 5 - mpmath.mpf(0.01) / p**2 * mpmath.exp(-0.01 / p),
                            (mpmath.mpf(0.02), mpmath.mpf(0.05)), solver="anderson")
        exact = -mpmath.expm1(-mpmath.mpf(0.01) / p) + 5 * p
    endpoint = min(exact_power_objective(inst, 1e-3), exact_power_objective(inst, 0.2))
    best = min(exact, endpoint)
    assert abs(ref.objective_mp - best) <= 1e-15 * abs(best)
    assert ref.lower_bound <= float(best) and float(best) - ref.lower_bound <= 1e-8 * float(best)


def test_power_reference_q_near_one_uses_expm1():
    inst = PowerInstance([1.0, 2.0], [1e-14, 3e-14], 1e-12, 4.0, 1e-9, 1e-3, 0.2)
    ref = power_reference(inst, points=100_000)
    assert ref.lower_bound <= ref.objective
    assert ref.objective - ref.lower_bound <= 1e-8 * ref.objective  # a tight, relative bound


def test_reference_bounds_valid_on_every_family():
    for i, fam in enumerate(BANDWIDTH_FAMILIES):
        inst = adversarial_bandwidth(fam, 100 + i)
        ref = bandwidth_reference(inst, grid=256)
        assert inst.violation(ref.x) == 0.0
        assert ref.lower_bound <= ref.objective
        assert float(exact_bandwidth_objective(inst, ref.x)) == ref.objective
    for i, fam in enumerate(POWER_FAMILIES):
        inst = adversarial_power(fam, 100 + i)
        ref = power_reference(inst, points=100_000)
        assert inst.violation(ref.x) == 0.0
        assert ref.lower_bound <= ref.objective


# --- the certified methods against the reference -------------------------------------------


def test_regression_instances_hold():
    """Both regression instances of issue 14: no violation, objective <= the reference
    + 1e-9 relative, and the identical-UE instance certified in a handful of B&B nodes (it took
    376 before identical pairs were ordered; node counts, not wall time, so load cannot fail it)."""
    for path in sorted(REGRESSIONS.glob("bandwidth_*.json")):
        inst = load_instance(path)
        known = json.loads(path.read_text())["reference"]["reference_objective"]
        row = audit_bandwidth(inst, time_limit=10.0)
        row.update(family=path.stem, seed=0)
        assert not _clean(row), _clean(row)
        assert row["status"] == "optimal"
        assert row["exact_objective"] <= min(known, row["reference"]) + 1e-9 * abs(known)
    inst = load_instance(REGRESSIONS / "bandwidth_identical_ues_k8.json")
    sol = solve_bandwidth(inst, "auto")
    assert sol.status == "optimal" and sol.iterations <= 8


def _bandwidth_sweep(per_family: int, first_seed: int, grid: int) -> list[str]:
    bad = []
    for fam in BANDWIDTH_FAMILIES:
        for s in range(first_seed, first_seed + per_family):
            row = audit_bandwidth(adversarial_bandwidth(fam, s), time_limit=1.0, grid=grid)
            row.update(family=fam, seed=s)
            if _clean(row):
                bad.append(_clean(row))
    return bad


def _power_sweep(per_family: int, first_seed: int, points: int) -> list[str]:
    bad = []
    for fam in POWER_FAMILIES:
        for s in range(first_seed, first_seed + per_family):
            row = audit_power(adversarial_power(fam, s), time_limit=1.0, points=points)
            row.update(family=fam, seed=s)
            if _clean(row):
                bad.append(_clean(row))
    return bad


def test_adversarial_bandwidth_fast():
    """7 families × 8 instances: no violation, no exception."""
    bad = _bandwidth_sweep(8, 10_000, grid=256)
    assert not bad, f"{len(bad)} of {8 * len(BANDWIDTH_FAMILIES)}:\n" + "\n".join(bad)


def test_adversarial_power_fast():
    """7 families × 30 instances: no violation, no exception."""
    bad = _power_sweep(30, 10_000, points=100_000)
    assert not bad, f"{len(bad)} of {30 * len(POWER_FAMILIES)}:\n" + "\n".join(bad)


#: the large sweeps take minutes: run them with FEDOPT_STRESS=1 (and -m slow)
LARGE = pytest.mark.skipif(not os.environ.get("FEDOPT_STRESS"), reason="set FEDOPT_STRESS=1")


@pytest.mark.slow
@LARGE
def test_adversarial_bandwidth_large():
    bad = _bandwidth_sweep(100, 20_000, grid=1024)
    assert not bad, f"{len(bad)} of {100 * len(BANDWIDTH_FAMILIES)}:\n" + "\n".join(bad[:20])


@pytest.mark.slow
@LARGE
def test_adversarial_power_large():
    bad = _power_sweep(150, 20_000, points=1_000_000)
    assert not bad, f"{len(bad)} of {150 * len(POWER_FAMILIES)}:\n" + "\n".join(bad[:20])


def test_cli_adversarial_in_process(tmp_path, capsys):
    import csv

    from fedopt.cli import main

    for problem in ("bandwidth", "power"):
        out = tmp_path / f"{problem}.csv"
        rc = main(["validate", problem, "--regime", "adversarial", "--instances", "7",
                   "--time-limit", "1", "--csv", str(out), "--no-progress"])
        assert rc == 0
        text = capsys.readouterr().out
        assert "viol.point" in text and "total" in text
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 7 and len({r["family"] for r in rows}) == 7
