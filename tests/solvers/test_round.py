"""solve_round (fedopt.solvers.round): every method returns a point feasible for (7) with its
objective re-evaluated, and at K = 3 the heuristics are checked against SCIP's certified bound
(an independent reference)."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import pytest
from fedopt.solvers import Solution
from fedopt.solvers.round import ROUND_METHODS, RoundPoint, solve_round

from fedopt.allocator import RoundAllocator
from fedopt.cli.validate_round import random_x
from fedopt.config import SystemConfig
from fedopt.costs import switching_init, switching_update
from fedopt.online.scenarios import random_round_state

SEEDS = (0, 1, 2, 3)


@functools.cache
def _case(K: int, seed: int):
    """A random round system (as ``fedopt validate round`` builds it), a random x and the floor."""
    cfg = SystemConfig(K=K)
    rng = np.random.default_rng([16, K, seed])
    state, _ = random_round_state(cfg, rng)
    al = RoundAllocator(cfg)
    al.estimator = switching_update(switching_init(K, cfg.M), state.loss, state.grad_sq, 0)
    sys_ = al.system(state)
    x = random_x(rng, np.isfinite(sys_.b_min), cfg.M_max)
    return cfg, sys_, x, max(1, math.ceil(cfg.beta * K))


@functools.cache
def _solve(K: int, seed: int, method: str, given_x: bool) -> Solution:
    cfg, sys_, x, floor = _case(K, seed)
    if given_x:
        return solve_round(sys_, cfg.M_max, method=method, x=x, time_limit=30)
    return solve_round(sys_, cfg.M_max, floor=floor, method=method, time_limit=30)


def _assert_feasible(sys_, M_max, floor, sol: Solution):
    assert isinstance(sol.x, RoundPoint)
    x, p, b = sol.x.x > 0, sol.x.p, sol.x.b
    assert sol.x.x.shape == b.shape == (sys_.K, sys_.M) and p.shape == (sys_.K,)
    assert (x.sum(axis=1) <= M_max).all()                                    # (7b)
    assert np.isfinite(sys_.b_min[x]).all()                                  # (7c)
    assert sum(Fraction(float(v)) for v in b[x]) <= 1                        # (7d), exactly
    assert (b[x] >= sys_.b_min[x]).all() and (b[x] <= 1).all()
    assert (b[~x] == 0).all()
    assert ((p >= sys_.P_min) & (p <= sys_.P_max)).all()                     # (7e)
    assert x.sum() >= floor
    assert sol.objective == sys_.objective(x, p, b)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ROUND_METHODS)
def test_point_is_feasible_and_objective_reevaluated(method, seed):
    cfg, sys_, x, floor = _case(3, seed)
    given = method == "bcd"
    sol = _solve(3, seed, method, given)
    _assert_feasible(sys_, cfg.M_max, 0 if given else floor, sol)
    assert sol.method == method
    if given:
        assert np.array_equal(sol.x.x > 0, x)
    if method not in ("scip", "auto"):  # a heuristic: no certificate, never "optimal"
        assert sol.status == "feasible" and sol.bound is None and sol.gap is None


@pytest.mark.parametrize("seed", SEEDS)
def test_bcd_against_scip_given_x(seed):
    ours, ref = _solve(3, seed, "bcd", True), _solve(3, seed, "scip", True)
    assert ref.bound is not None
    assert ours.objective >= ref.bound - 1e-6 * abs(ref.bound)      # never below the bound
    assert ref.objective - ours.objective <= ref.gap_abs + 1e-9 * abs(ours.objective)


@pytest.mark.parametrize("seed", SEEDS)
def test_joint_against_scip_minlp(seed):
    ours, ref = _solve(3, seed, "joint", False), _solve(3, seed, "scip", False)
    assert ref.bound is not None
    assert ours.objective >= ref.bound - 1e-6 * abs(ref.bound)
    assert ref.objective - ours.objective <= ref.gap_abs + 1e-9 * abs(ours.objective)
    # BCD on any x meeting the floor is a point of the same MINLP
    bcd = _solve(3, seed, "bcd", True)
    if bcd.x.x.sum() >= _case(3, seed)[3]:
        assert bcd.objective >= ref.bound - 1e-6 * abs(ref.bound)


def test_allocator_bcd_is_solve_round():
    cfg, sys_, x, _ = _case(3, 0)
    p, b, obj, iters, _ = RoundAllocator(cfg).bcd(sys_, x)
    sol = _solve(3, 0, "bcd", True)
    assert np.array_equal(p, sol.x.p) and np.array_equal(b, sol.x.b)
    assert obj == sol.objective and iters == sol.iterations


def test_unknown_method_and_missing_x():
    cfg, sys_, _, _ = _case(3, 0)
    with pytest.raises(ValueError, match="known: auto, bcd, joint, scip"):
        solve_round(sys_, cfg.M_max, method="global")
    with pytest.raises(ValueError, match="needs the switching x"):
        solve_round(sys_, cfg.M_max, method="bcd")
