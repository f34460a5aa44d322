"""Switching policies: interface, constraint behaviour against the hindsight LP, bad inputs."""

import numpy as np
import pytest

from fedopt.errors import InstanceError
from fedopt.online import (
    POLICIES,
    make_policy,
    record_outcome,
    solve_hindsight,
    state_from_json,
    state_to_json,
)


def _costs(T, K, M, seed=0):
    """Stationary random costs with a positive mean: cheap rounds come and go."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 2.0, (K, M))
    return base[None] * rng.lognormal(0.0, 0.5, (T, K, M)) - 0.3


def _run(policy, costs, feasible=None):
    T, K, M = costs.shape
    feasible = np.ones((K, M), bool) if feasible is None else feasible
    state = policy.init(K, M)
    xs = []
    for t in range(T):
        x, state = policy.update(costs[t], feasible, t, state)
        xs.append(x)
    return np.array(xs), state


@pytest.mark.parametrize("name", ["primal_dual", "lyapunov"])
def test_long_term_policies_meet_the_floor_near_hindsight(name):
    T, K, M, beta = 600, 6, 3, 0.4
    u = _costs(T, K, M)
    x, _ = _run(make_policy(name, beta, 2), u)
    assert np.all(x.sum(axis=2) <= 2)
    violation = np.max(np.maximum(beta - x.sum(axis=2).mean(axis=0), 0))
    assert violation < 0.03
    hs = solve_hindsight(u, True, beta, 2)
    cost = (u * x).sum()
    assert hs.status == "optimal"
    # within 20% of the offline LP optimum (reference: HiGHS)
    assert cost <= hs.total + 0.20 * abs(hs.total)


def test_greedy_violates_when_costs_are_positive():
    u = np.abs(_costs(100, 4, 3)) + 0.1
    x, _ = _run(make_policy("greedy", 0.3, 2), u)
    assert x.sum() == 0  # nothing is worth scheduling for the slice alone


def test_greedy_is_the_slice_minimiser_by_brute_force():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(1, 7, 4))
    x, _ = _run(make_policy("greedy", 0.3, 2), u)
    import itertools

    for k in range(7):
        best = min(sum(u[0, k, list(c)]) for r in range(3) for c in itertools.combinations(range(4), r))
        assert np.isclose((u[0, k] * x[0, k]).sum(), best)


def test_one_shot_keeps_its_assignment():
    u = _costs(20, 5, 3)
    x, _ = _run(make_policy("one_shot", 0.3, 2), u)
    assert np.all(x == x[0]) and np.all(x[0].sum(axis=1) >= 1)


def test_hindsight_lp_matches_per_ue_dual_threshold():
    """The LP decouples per UE: x_k^t = argmin ⟨u − λ_k 1, x⟩; brute-force λ_k by bisection."""
    T, K, M, beta = 40, 3, 3, 0.7
    u = _costs(T, K, M, seed=5)
    hs = solve_hindsight(u, True, beta, 2)
    from fedopt.online import best_vertex

    total = 0.0
    for k in range(K):
        def part(lam, k=k):
            x = best_vertex(u[:, k] - lam, np.ones((T, M), bool), 2)
            return x, x.sum() / T
        lo, hi = 0.0, 100.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if part(mid)[1] < beta else (lo, mid)
        x_lo, s_lo = part(lo)
        x_hi, s_hi = part(hi)
        # the optimum mixes the two vertices to hit the floor exactly
        w = 1.0 if s_hi == s_lo else (beta - s_lo) / (s_hi - s_lo)
        total += (1 - w) * (u[:, k] * x_lo).sum() + w * (u[:, k] * x_hi).sum()
    assert np.isclose(hs.total, total, rtol=1e-6)


@pytest.mark.parametrize("name", ["primal_dual", "lyapunov", "greedy", "one_shot"])
def test_state_is_plain_data_and_resumes(name):
    u = _costs(30, 4, 3)
    pol = make_policy(name, 0.3, 2, seed=7)
    x_full, _ = _run(pol, u)
    state = pol.init(4, 3)
    for t in range(15):
        _, state = pol.update(u[t], np.ones((4, 3), bool), t, state)
    state = state_from_json(state_to_json(state))
    for t in range(15, 30):
        x, state = pol.update(u[t], np.ones((4, 3), bool), t, state)
        assert np.array_equal(x, x_full[t])


def test_mask_is_honoured():
    u = -np.ones((5, 3))
    feas = np.array([[1, 0, 1]] * 5, bool)
    for name in ("primal_dual", "lyapunov", "greedy", "one_shot"):
        pol = make_policy(name, 0.3, 2)
        x, _ = pol.update(u, feas, 0, pol.init(5, 3))
        assert not np.any(x[:, 1]), name


@pytest.mark.parametrize("name", ["lyapunov", "primal_dual"])
def test_energy_variant_keeps_the_budget(name):
    T, K, M = 400, 4, 3
    rng = np.random.default_rng(2)
    u = -rng.uniform(0.5, 1.0, (T, K, M))  # everything is attractive...
    E = rng.uniform(1.0, 2.0, (T, K, M))  # ...but costs energy
    pol = make_policy(name, 0.3, 2, energy_budget=1.0)
    state = pol.init(K, M)
    spent = np.zeros(K)
    for t in range(T):
        x, state = pol.update(u[t], np.ones((K, M), bool), t, state, energy=E[t])
        spent += (E[t] * x).sum(axis=1)
        state = record_outcome(state, x, E[t])
    assert np.all(spent / T <= 1.0 + 0.05)


def test_bad_inputs_one_line():
    pol = make_policy("primal_dual", 0.3, 2)
    s = pol.init(4, 3)
    with pytest.raises(InstanceError, match=r"shape \(4, 2\) does not match"):
        pol.update(np.zeros((4, 2)), np.ones((4, 2), bool), 0, s)
    u = np.zeros((4, 3))
    u[2, 1] = np.nan
    with pytest.raises(InstanceError, match=r"costs\[2, 1\] is nan"):
        pol.update(u, np.ones((4, 3), bool), 0, s)
    with pytest.raises(InstanceError, match="beta: 2.5 exceeds M_max = 2"):
        make_policy("lyapunov", 2.5, 2).update(np.zeros((4, 3)), np.ones((4, 3), bool), 0, s)
    feas = np.ones((4, 3), bool)
    feas[3] = False
    with pytest.raises(InstanceError, match="UE 3 has no feasible module") as e:
        pol.update(np.zeros((4, 3)), feas, 0, s)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown policy 'nope'; known: primal_dual"):
        make_policy("nope", 0.3, 2)
    assert set(POLICIES) == {"primal_dual", "lyapunov", "greedy", "one_shot", "hindsight"}
