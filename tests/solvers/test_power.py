"""Power (21)-(22): the certified global method against fine grids, and every method."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedopt.solvers import STATUSES, solve_power, solve_power_batch
from fedopt.solvers.random_instances import random_power_batch
from solver_factories import load_with_reference, shared_examples

from fedopt.instances import PowerBatch, PowerInstance

EXAMPLES = shared_examples("power")


def grid_min(inst: PowerInstance, n: int = 200_001) -> tuple[float, float]:
    """Fine log grid refined by golden section around the best grid point."""
    s = np.linspace(math.log(inst.p_min), math.log(inst.p_max), n)
    p = np.exp(s)
    q = np.exp(-inst.A[None, :] / p[:, None] - inst.kappa * p[:, None] ** (-2 / inst.alpha))
    F = (inst.W * (1 - q)).sum(1) + inst.C * p
    i = int(np.argmin(F))
    lo, hi = s[max(i - 1, 0)], s[min(i + 1, n - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if inst.objective(math.exp(x1)) < inst.objective(math.exp(x2)):
            hi = x2
        else:
            lo = x1
    best = min(float(F[i]), inst.objective(math.exp(0.5 * (lo + hi))))
    return best, float(p[i])


def multi_peak(seed: int) -> PowerInstance:
    """Two modules whose success probabilities switch on at well separated powers: two
    local minima and a local maximum between them."""
    rng = np.random.default_rng(seed)
    A = np.array([1e-3, 5e-2]) * rng.uniform(0.9, 1.1, 2)
    W = np.array([0.03, 1.0]) * rng.uniform(0.9, 1.1, 2)
    return PowerInstance(W, A, kappa=1e-4, alpha=3.5, C=rng.uniform(1.3, 2.0), p_min=1e-3,
                         p_max=0.2)


def test_shared_examples_found():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_auto_matches_reference(path):
    inst, ref = load_with_reference(path)
    sol = solve_power(inst, "auto")
    assert sol.status == "optimal" and sol.gap <= 1e-12
    assert inst.violation(sol.x) == 0.0
    assert sol.objective <= ref["objective"] + 1e-12 * abs(ref["objective"])


@pytest.mark.parametrize("seed", range(8))
def test_global_vs_fine_grid_several_stationary_points(seed):
    inst = multi_peak(seed)
    sol = solve_power(inst, "auto")
    assert len(sol.extras["stationary_points"]) >= 3  # two minima and a maximum
    ref, _ = grid_min(inst)
    assert sol.objective <= ref + 1e-12 * abs(ref)
    assert sol.objective >= ref - 1e-9 * abs(ref)
    # each reported stationary point has F'(p) = 0 by finite differences
    for p in sol.extras["stationary_points"]:
        h = 1e-7 * p
        fd = (inst.objective(p + h) - inst.objective(p - h)) / (2 * h)
        assert abs(fd) <= 1e-5 * (inst.C + inst.W.sum() / p)


def test_global_batch_vs_grid_random():
    batch = random_power_batch(300, "noise-limited", seed=4)
    sol = solve_power_batch(batch, "auto")
    assert sol.x.shape == (300,)
    assert sol.status == "optimal"
    s = np.linspace(math.log(batch.p_min), math.log(batch.p_max), 20_001)
    p = np.exp(s)
    for k in range(batch.k):
        q = np.exp(-batch.A[k][None, :] / p[:, None] - batch.kappa[k] * p[:, None] ** (-2 / batch.alpha))
        F = (batch.W[k] * (1 - q)).sum(1) + batch.C[k] * p
        assert sol.extras["objectives"][k] <= F.min() + 1e-12 * abs(F.min())


def test_batch_matches_single_and_empty_rows():
    batch = random_power_batch(25, "noise-limited", seed=9)
    W = np.vstack([batch.W, np.zeros((2, batch.W.shape[1]))])
    A = np.vstack([batch.A, np.zeros((2, batch.A.shape[1]))])
    batch = PowerBatch(W, A, np.append(batch.kappa, [0.1, 0.1]), np.append(batch.C, [1.0, 0.0]),
                       batch.alpha, batch.p_min, batch.p_max)
    sol = solve_power_batch(batch, "auto")
    assert sol.x[-2] == batch.p_min and sol.x[-1] == batch.p_min  # minimiser of C p
    for k in range(25):
        single = solve_power(batch.instance(k), "auto")
        assert math.isclose(single.x, sol.x[k], rel_tol=1e-12)


@pytest.mark.parametrize("method", ["ipopt", "bounded", "max", "scip"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_other_methods_feasible_and_not_better_than_global(method, path):
    inst, ref = load_with_reference(path)
    best = solve_power(inst, "auto")
    sol = solve_power(inst, method, time_limit=20)
    assert sol.status in STATUSES
    assert inst.violation(sol.x) == 0.0
    assert sol.objective >= best.objective - 1e-12 * abs(best.objective)
    if method == "max":
        assert sol.x == inst.p_max


def test_local_methods_can_miss_the_global_minimum():
    """On a multi-peak instance the local methods are checked, not trusted."""
    for seed in range(8):
        inst = multi_peak(seed)
        best = solve_power(inst, "auto")
        for m in ("bounded", "ipopt"):
            s = solve_power(inst, m)
            assert inst.violation(s.x) == 0.0
            assert s.objective >= best.objective - 1e-12 * abs(best.objective)


def test_batch_other_methods():
    batch = random_power_batch(6, "defaults", seed=2)
    auto = solve_power_batch(batch, "auto")
    for m in ("bounded", "ipopt", "max"):
        s = solve_power_batch(batch, m)
        assert s.x.shape == (batch.k,)
        assert s.objective >= auto.objective - 1e-12 * abs(auto.objective)


def test_unknown_power_method():
    batch = random_power_batch(2, "noise-limited", seed=0)
    with pytest.raises(ValueError, match="known: auto, global"):
        solve_power_batch(batch, "newton")


@pytest.mark.parametrize("W, A, kappa, C", [
    ([0.3, 0.1], [0.01, 0.002], 0.5, 0.0),  # C = 0: flat where every q underflows
    ([0.3], [0.01], 0.0, 1.0),  # no interference
    ([0.3], [0.0], 0.5, 1.0),  # no noise term
    ([], [], 0.5, 1.0),  # no module
])
def test_edge_cases_vs_grid(W, A, kappa, C):
    inst = PowerInstance(W, A, kappa, 3.5, C, 1e-3, 0.2)
    sol = solve_power(inst, "auto")
    assert sol.status == "optimal"
    ref, _ = grid_min(inst) if len(W) else (inst.objective(inst.p_min), None)
    assert sol.objective <= ref + 1e-12 * max(abs(ref), 1e-300)
