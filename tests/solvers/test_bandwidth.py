"""Bandwidth (16)-(20): every method against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedopt.solvers import STATUSES, solve_bandwidth
from fedopt.solvers._bandwidth_core import d2f, df, f
from fedopt.solvers._bandwidth_local import w0_root
from fedopt.solvers.random_instances import random_bandwidth, synthetic_large_bandwidth
from solver_factories import load_with_reference, shared_examples

from fedopt.errors import FedoptError
from fedopt.instances import BandwidthInstance

EXAMPLES = shared_examples("bandwidth")


def test_shared_examples_found():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_auto_matches_reference_with_certificate(path):
    inst, ref = load_with_reference(path)
    sol = solve_bandwidth(inst, "auto")
    assert inst.violation(sol.x) == 0.0
    assert sol.status == "optimal"
    assert sol.gap <= 1e-9
    assert sol.objective <= ref["objective"] + 1e-9 * abs(ref["objective"])
    assert sol.bound <= ref["objective"] + 1e-9 * abs(ref["objective"])
    assert math.isclose(sol.objective, inst.objective(sol.x), rel_tol=0, abs_tol=1e-15)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("method", ["lambertw", "alg1", "ipopt"])
def test_paper_methods_feasible_and_never_below_the_certified_optimum(path, method):
    inst, ref = load_with_reference(path)
    best = solve_bandwidth(inst, "auto")
    sol = solve_bandwidth(inst, method)
    assert sol.status in STATUSES
    assert inst.violation(sol.x) == 0.0
    assert sol.objective >= best.bound - 1e-12 * abs(best.bound)
    if sol.status == "optimal":
        assert sol.gap <= 1e-9
    if "dual_method_objective" in ref and method == "alg1":
        # the paper's dual bisection is worse on these nonconvex examples
        assert sol.objective > best.objective + 1e-6 * abs(best.objective)
        assert sol.status != "optimal"


def _grid_reference(inst: BandwidthInstance, n_grid: int = 4001) -> float:
    """Dense grid for N <= 2: the interior grid and the budget line b1 + b2 = budget."""
    lo, hi, B = inst.b_min, np.minimum(inst.b_max, inst.budget), inst.budget
    if inst.n == 1:
        g = np.linspace(lo[0], hi[0], 200_001)
        return float(np.min(inst.terms(g[:, None]).sum(1) if False else f(inst.w[0], inst.a[0], inst.c[0], g)))
    g0 = np.linspace(lo[0], hi[0], n_grid)
    g1 = np.linspace(lo[1], hi[1], n_grid)
    F0 = f(inst.w[0], inst.a[0], inst.c[0], g0)
    F1 = f(inst.w[1], inst.a[1], inst.c[1], g1)
    tot = F0[:, None] + F1[None, :]
    tot[g0[:, None] + g1[None, :] > B] = np.inf
    best = float(np.min(tot))
    line0 = np.linspace(lo[0], min(hi[0], B - lo[1]), 400_001)
    line1 = B - line0
    ok = (line1 >= lo[1]) & (line1 <= hi[1])
    if ok.any():
        best = min(best, float(np.min(f(inst.w[0], inst.a[0], inst.c[0], line0[ok])
                                      + f(inst.w[1], inst.a[1], inst.c[1], line1[ok]))))
    return best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("n", [1, 2])
def test_auto_vs_dense_grid_small(seed, n):
    inst0 = random_bandwidth(n, "noise-limited", seed)
    budget = [1.0, 0.2, 0.05][seed % 3]
    inst = BandwidthInstance(inst0.w, inst0.a, inst0.c, inst0.b_min, inst0.b_max, budget)
    sol = solve_bandwidth(inst, "auto")
    ref = _grid_reference(inst)
    assert sol.status == "optimal"
    assert inst.violation(sol.x) == 0.0
    assert sol.objective <= ref + 1e-12 * abs(ref)  # never worse than the grid
    assert sol.objective >= ref - 1e-5 * max(abs(ref), 1e-3)  # and the grid is close
    assert sol.bound <= sol.objective


def test_auto_vs_scip_small_nonconvex():
    pytest.importorskip("pyscipopt")
    for seed in (3, 7):
        inst = random_bandwidth(4, "noise-limited", seed)
        inst = BandwidthInstance(inst.w, inst.a, inst.c, inst.b_min, inst.b_max, 0.3)
        auto = solve_bandwidth(inst, "auto")
        scip = solve_bandwidth(inst, "scip", time_limit=20)
        assert auto.status == "optimal"
        if scip.status in ("optimal", "feasible", "time_limit") and math.isfinite(scip.objective):
            assert inst.violation(scip.x) == 0.0
            assert auto.objective <= scip.objective + 1e-9 * abs(scip.objective)
        if scip.bound is not None and scip.status == "optimal":
            # SCIP's bound holds up to its own feasibility tolerance
            assert auto.objective >= scip.bound - 1e-5 * abs(scip.bound)


def test_auto_vs_multistart_bruteforce():
    """Brute force: many local Ipopt runs from random feasible starts never beat auto."""
    from fedopt.solvers._bandwidth_refs import project, solve_ipopt

    rng = np.random.default_rng(11)
    for seed in range(4):
        inst = random_bandwidth(3, "noise-limited", seed + 100)
        inst = BandwidthInstance(inst.w, inst.a, inst.c, inst.b_min, inst.b_max, 0.25)
        auto = solve_bandwidth(inst, "auto")
        best = math.inf
        for _ in range(25):
            x0 = project(inst, inst.b_min + rng.dirichlet(np.ones(3)) * (0.25 - inst.b_min.sum()) * 0.999)
            x, _info = solve_ipopt(inst, 5.0, x0=x0)
            x = project(inst, x)
            best = min(best, inst.objective(x))
        assert auto.objective <= best + 1e-9 * abs(best)


def test_lambert_w_root_is_a_local_minimum():
    rng = np.random.default_rng(0)
    n = 400
    w = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), n))
    a = np.exp(rng.uniform(np.log(0.1), np.log(50.0), n))
    c = np.exp(rng.uniform(np.log(1e-5), np.log(1e-2), n))
    z = -(a / 2) * np.sqrt(c / (w * a))
    real = z >= -1 / math.e
    assert real.sum() > 50
    b = w0_root(w, a, c)[real]
    wr, ar, cr = w[real], a[real], c[real]
    assert np.all(d2f(wr, ar, cr, b) > 0)  # a local minimum
    h = 1e-6 * b
    fd = (f(wr, ar, cr, b + h) - f(wr, ar, cr, b - h)) / (2 * h)
    scale = cr / b**2  # size of each part of f'
    assert np.all(np.abs(fd) <= 1e-6 * scale)
    assert np.all(np.abs(df(wr, ar, cr, b)) <= 1e-10 * scale)


@pytest.mark.parametrize("seed", range(6))
def test_newton_on_nu_matches_bisection(seed):
    """lambertw's Newton on ν (20) and Algorithm 1's bisection agree where the dual is tight."""
    inst = random_bandwidth(30, "defaults", seed)
    newton = solve_bandwidth(inst, "lambertw")
    bisect = solve_bandwidth(inst, "alg1")
    assert newton.extras["nu"] > 0  # the budget binds
    assert math.isclose(newton.extras["nu"], bisect.extras["nu"], rel_tol=1e-6)
    assert math.isclose(newton.objective, bisect.objective, rel_tol=1e-9)
    assert newton.status == "optimal" and newton.gap <= 1e-9


def _convex_instance(seed: int, n: int = 8) -> BandwidthInstance:
    rng = np.random.default_rng(seed)
    a = np.exp(rng.uniform(np.log(0.1), np.log(5.0), n))
    c = np.exp(rng.uniform(np.log(1e-3), np.log(1e-2), n))
    w = 2 * math.e**3 * a * c / 27 * rng.uniform(0.1, 1.0, n)  # 27 w / (2e³ac) <= 1
    return BandwidthInstance(w, a, c, np.full(n, 1e-3), np.ones(n), 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_cvxpy_on_convex_instances(seed):
    inst = _convex_instance(seed)
    auto = solve_bandwidth(inst, "auto")
    cvx = solve_bandwidth(inst, "cvxpy")
    assert inst.violation(cvx.x) == 0.0
    assert cvx.status in ("optimal", "feasible")
    assert abs(cvx.objective - auto.objective) <= 1e-7 * abs(auto.objective)


def test_cvxpy_refuses_nonconvex():
    inst, _ = load_with_reference(shared_examples("bandwidth_nonconvex")[0])
    with pytest.raises(FedoptError, match="every term convex"):
        solve_bandwidth(inst, "cvxpy")


def test_unknown_method_lists_known():
    inst = random_bandwidth(2, "noise-limited", 0)
    with pytest.raises(ValueError, match="known: auto, global"):
        solve_bandwidth(inst, "nope")


def test_time_limit_status_keeps_a_certified_bound():
    inst, _ = load_with_reference(shared_examples("bandwidth_nonconvex")[0])
    sol = solve_bandwidth(inst, "global", time_limit=0.0)
    assert sol.status in ("time_limit", "optimal")
    assert inst.violation(sol.x) == 0.0
    assert sol.bound is not None and sol.bound <= sol.objective


def test_nonbinding_budget_is_per_pair_optimum():
    inst = random_bandwidth(5, "noise-limited", 1)
    inst = BandwidthInstance(inst.w, inst.a, inst.c, inst.b_min, np.full(5, 0.1), 10.0)
    sol = solve_bandwidth(inst, "auto")
    assert sol.extras["nu"] == 0.0
    g = np.linspace(inst.b_min, inst.b_max, 100_001)
    ref = math.fsum(np.min(f(inst.w, inst.a, inst.c, g), axis=0))
    assert sol.objective <= ref + 1e-12 * abs(ref)


def test_large_instance_certified():
    inst = synthetic_large_bandwidth(20_000, seed=1)
    sol = solve_bandwidth(inst, "auto")
    assert sol.status == "optimal" and sol.gap <= 1e-9
    assert inst.violation(sol.x) == 0.0


# 8 seeds in every run, the other 32 with --run-slow
@pytest.mark.parametrize("seed", [s if s < 8 else pytest.param(s, marks=pytest.mark.slow)
                                  for s in range(40)])
def test_auto_vs_scip_many(seed):
    inst = random_bandwidth(3 + seed % 4, "noise-limited", 1000 + seed)
    auto = solve_bandwidth(inst, "auto")
    scip = solve_bandwidth(inst, "scip", time_limit=30)
    assert auto.status == "optimal"
    if math.isfinite(scip.objective):
        assert auto.objective <= scip.objective + 1e-9 * abs(scip.objective)


@pytest.mark.parametrize("w, a, c, lo, hi, budget", [
    ([0.1, 0.2], [5, 10], [1e-3, 2e-3], [0.5, 0.5], [1, 1], 1.0),  # Σ b_min = budget
    ([0.0, 0.2], [5, 10], [1e-3, 2e-3], [0.01, 0.01], [1, 1], 0.3),  # w = 0
    ([0.1, 0.2], [0.0, 10], [1e-3, 2e-3], [0.01, 0.01], [1, 1], 0.3),  # a = 0
    ([0.1, 0.2], [5, 10], [0.0, 2e-3], [0.01, 0.01], [1, 1], 0.3),  # c = 0 (concave term)
    ([0.1, 0.2], [5, 10], [1e-3, 2e-3], [0.1, 0.2], [0.1, 0.5], 0.4),  # a fixed pair
])
def test_edge_cases_vs_grid(w, a, c, lo, hi, budget):
    inst = BandwidthInstance(w, a, c, lo, hi, budget)
    for method in ("auto", "lambertw", "alg1"):
        sol = solve_bandwidth(inst, method)
        assert inst.violation(sol.x) == 0.0
    sol = solve_bandwidth(inst, "auto")
    ref = _grid_reference(inst)
    assert sol.status == "optimal"
    assert sol.objective <= ref + 1e-12 * abs(ref)


def test_alg1_eps_trades_iterations_for_accuracy():
    """solve_bandwidth(method='alg1', eps=ε): tier-2 iterations grow as ε shrinks (bisection on
    ν: about log2(1/ε)), and the objective approaches the certified global optimum."""
    inst = random_bandwidth(12, "defaults", seed=5)
    ref = solve_bandwidth(inst, method="global")
    assert ref.status == "optimal"
    its, gaps = [], []
    for eps in (1e-2, 1e-6, 1e-12):
        s = solve_bandwidth(inst, method="alg1", eps=eps)
        its.append(s.iterations)
        gaps.append(abs(s.objective - ref.objective))
    assert its[0] < its[1] < its[2]
    assert its[2] - its[1] >= 0.8 * 6 * math.log2(10)  # six more decades of ν bisection
    assert gaps[2] <= gaps[0] + 1e-15
    with pytest.raises(ValueError, match="eps"):
        solve_bandwidth(inst, method="alg1", eps=0.0)
