"""RoundAllocator (Algorithm 2): feasibility, fields against the system model, BCD and the
joint mode against SCIP's global solve of (7), repair, checkpointing and bad inputs."""

import copy
import math

import numpy as np
import pytest

from fedopt import Allocation, RoundAllocator, SystemConfig
from fedopt.channel import success_probability
from fedopt.costs import switching_init, switching_update
from fedopt.energy import pair_energy
from fedopt.errors import ConfigError, InstanceError
from fedopt.online.scenarios import random_round_state


def _state(K=12, seed=0, **cfg_kw):
    cfg = SystemConfig(K=K, **cfg_kw)
    state, pop = random_round_state(cfg, seed)
    return cfg, state, pop


def _check_feasible(cfg, state, a: Allocation, S=None):
    x = a.x.astype(bool)
    assert np.all(a.x.sum(axis=1) <= cfg.M_max)  # (7b)
    assert a.b[x].sum() <= 1 + 1e-12  # (7d)
    al = RoundAllocator(cfg, module_bits=S)
    bmin = al.system(state).b_min
    assert np.all(a.b[x] >= bmin[x] * (1 - 1e-12))
    on = x.any(axis=1)
    assert np.all((a.p[on] >= cfg.P_min - 1e-15) & (a.p[on] <= cfg.P_max + 1e-15))  # (7e)


@pytest.mark.parametrize("policy", ["primal_dual", "lyapunov", "greedy", "one_shot"])
def test_allocation_fields_match_the_system_model(policy):
    cfg, state, pop = _state(K=30, seed=1)
    al = RoundAllocator(cfg, policy=policy)
    a = al.allocate(state)
    _check_feasible(cfg, state, a)
    x = a.x.astype(bool)
    assert x.any()
    # q from channel.success_probability (15), E from energy.pair_energy (4): independent code
    k, m = np.nonzero(x)
    q = success_probability(cfg, pop.d[k], a.p[k], a.b[k, m])
    assert np.allclose(a.q[k, m], q, rtol=1e-12)
    E, e_cmp, e_com = pair_energy(cfg, pop.phi[m], pop.c[k], pop.D[k], pop.f[k], a.p[k], pop.S[m], a.b[k, m])
    assert np.allclose(a.energy_computation[k, m], e_cmp, rtol=1e-12)
    assert np.allclose(a.energy_communication[k, m], e_com, rtol=1e-12)
    # objective = Φ + ρ Σ E of (7), by hand
    Delta = state.loss - state.loss.min(axis=1, keepdims=True)
    Gamma = 0.5 * cfg.lr * state.grad_sq
    omega = pop.n_data / pop.n_data.sum()
    phi = (omega[:, None] * (x * Delta + (1 - x * a.q) * Gamma)).sum()
    assert math.isclose(a.objective, phi + cfg.rho * a.energy.sum(), rel_tol=1e-12)
    # realised costs u of (8) for scheduled pairs
    u = omega[k] * (Delta[k, m] - q * Gamma[k, m]) + cfg.rho * E
    assert np.allclose(a.costs[k, m], u, rtol=1e-10)


def test_unscheduled_pairs_are_priced_at_the_nominal_allocation():
    cfg, state, pop = _state(K=20, seed=2)
    a = RoundAllocator(cfg, policy="lyapunov").allocate(state)
    x = a.x.astype(bool)
    mean_b = a.b[x].mean()
    al = RoundAllocator(cfg)
    bmin = al.system(state).b_min
    k, m = np.nonzero(~x)
    p = np.where(x.any(axis=1), a.p, cfg.P_max)[k]
    b = np.maximum(bmin[k, m], mean_b)
    q = success_probability(cfg, pop.d[k], p, b)
    E, _, _ = pair_energy(cfg, pop.phi[m], pop.c[k], pop.D[k], pop.f[k], p, pop.S[m], b)
    omega = pop.n_data / pop.n_data.sum()
    Delta = state.loss - state.loss.min(axis=1, keepdims=True)
    Gamma = 0.5 * cfg.lr * state.grad_sq
    assert np.allclose(a.costs[k, m], omega[k] * (Delta[k, m] - q * Gamma[k, m]) + cfg.rho * E, rtol=1e-10)


def test_estimator_keeps_last_measurement():
    s = switching_init(2, 3)
    s = switching_update(s, np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), np.ones((2, 3)), 0)
    s = switching_update(s, np.array([[np.nan, 0.5, np.nan], [np.nan] * 3]),
                         np.array([[np.nan, 4.0, np.nan], [np.nan] * 3]), 1)
    assert np.array_equal(s["loss"], [[1.0, 0.5, 3.0], [1.0, 1.0, 1.0]])
    assert np.array_equal(s["grad_sq"], [[1.0, 4.0, 1.0], [1.0, 1.0, 1.0]])
    assert np.array_equal(s["measured_at"], [[0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcd_matches_scip_given_x(seed):
    """Given x, BCD is within 1e-5 of SCIP's global optimum of the continuous problem (7)
    (SCIP's point re-evaluated exactly feasible) and above SCIP's dual bound."""
    from fedopt.solvers._scip_round import solve_round_scip

    from fedopt.cli.validate_round import random_x

    cfg = SystemConfig(K=3)
    rng = np.random.default_rng([7, seed])
    state, _ = random_round_state(cfg, rng)
    al = RoundAllocator(cfg)
    al.estimator = switching_update(switching_init(3, 3), state.loss, state.grad_sq, 0)
    sys_ = al.system(state)
    x = random_x(rng, np.isfinite(sys_.b_min), cfg.M_max)
    p, b, obj, _, _ = al.bcd(sys_, x)
    ref = solve_round_scip(sys_, cfg.M_max, x_fixed=x, time_limit=30)
    assert ref.status == "optimal"
    assert obj <= ref.objective * (1 + 1e-5)
    assert obj >= ref.bound * (1 - 1e-6)


def test_joint_mode_matches_scip_minlp():
    from fedopt.solvers._scip_round import solve_round_scip

    cfg, state, _ = _state(K=3, seed=4)
    al = RoundAllocator(cfg, policy="joint")
    a = al.allocate(state)
    ref = solve_round_scip(al.system(state), cfg.M_max, floor=math.ceil(cfg.beta * 3), time_limit=30)
    assert ref.status == "optimal"
    assert a.objective <= ref.objective * 1.01
    assert a.x.sum() >= math.ceil(cfg.beta * 3)


def test_repair_drops_pairs_until_the_floors_fit():
    # one_shot schedules every UE; with a narrow band the deadline floors cannot all fit
    cfg, state, _ = _state(K=100, seed=3, B=2e6, beta=0.05)
    al = RoundAllocator(cfg, policy="one_shot")
    bmin = al.system(state).b_min
    a = al.allocate(state)
    assert a.status == "repaired" and a.extras["dropped"]
    _check_feasible(cfg, state, a)
    x = a.x.astype(bool)
    # nothing dropped would still have fitted in the slack (greedy maximality)
    slack = 1 - bmin[x].sum()
    assert all(bmin[k, m] > slack for k, m in a.extras["dropped"])


def test_available_and_module_sizes_are_honoured():
    cfg, state, pop = _state(K=20, seed=5)
    state.available = np.arange(20) % 2 == 0
    S = np.array([1e5, 2e5, 4e5])
    al = RoundAllocator(cfg, policy="greedy", module_bits=S, phi=np.array([1.0, 1.1, 1.3]))
    a = al.allocate(state)
    assert not a.x[1::2].any()
    t_cmp = cfg.local_steps * np.array([1.0, 1.1, 1.3])[None] * pop.c[:, None] * pop.D[:, None] * cfg.s_bits / pop.f[:, None]
    bmin = S[None] / (cfg.B * math.log2(1 + cfg.theta) * (cfg.T_max - t_cmp))
    assert np.allclose(al.system(state).b_min, bmin, rtol=1e-12)
    _check_feasible(cfg, state, a, S=S)


def test_checkpoint_resume_gives_the_same_rounds():
    cfg, state, _ = _state(K=15, seed=6)
    al = RoundAllocator(cfg, policy="primal_dual", seed=3)
    for t in range(3):
        state.t = t
        al.allocate(state)
    saved = copy.deepcopy(al.state_dict())
    ref = []
    for t in range(3, 6):
        state.t = t
        ref.append(al.allocate(state).x)
    al2 = RoundAllocator(cfg, policy="primal_dual", seed=3)
    al2.load_state_dict(saved)
    for t, x in zip(range(3, 6), ref):
        state.t = t
        assert np.array_equal(al2.allocate(state).x, x)


def test_bad_inputs_are_one_line_errors():
    cfg, state, _ = _state(K=6, seed=0)
    al = RoundAllocator(cfg)
    bad = copy.copy(state)
    bad.loss = np.ones((6, 2))
    with pytest.raises(InstanceError, match="state.loss: has 2 modules, expected M = 3"):
        al.allocate(bad)
    bad = copy.copy(state)
    bad.distance = np.ones(5)
    with pytest.raises(InstanceError, match=r"state.data_size: shape \(6,\), expected \(5,\)"):
        al.allocate(bad)
    bad = copy.copy(state)
    bad.distance = np.where(np.arange(6) == 2, np.nan, state.distance)
    with pytest.raises(InstanceError, match=r"state.distance\[2\] is nan"):
        al.allocate(bad)
    with pytest.raises(ConfigError, match="beta: 2.5 exceeds M_max = 2"):
        SystemConfig(beta=2.5)
    # a UE whose every module misses the deadline, while beta > 0: reported, not violated
    bad = copy.copy(state)
    bad.cpu_freq = np.where(np.arange(6) == 4, 1e6, state.cpu_freq)
    with pytest.raises(InstanceError, match="UE 4 has no feasible module") as e:
        RoundAllocator(cfg).allocate(bad)
    assert "\n" not in str(e.value)
    a = RoundAllocator(cfg, on_infeasible="flag").allocate(bad)
    assert a.status == "stranded_ues" and a.extras["stranded"] == [4] and not a.x[4].any()
    with pytest.raises(InstanceError, match="module_bits: expected 3 positive"):
        RoundAllocator(cfg, module_bits=[1.0, 2.0])


def test_plug_in_example_runs():
    """The README's ten-line example ("Plugging fedopt into your own FL system"; the choices
    behind it: MODEL-NOTES.md, "Online layer and round allocator")."""
    import numpy as np

    from fedopt import RoundAllocator, RoundState, SystemConfig

    cfg = SystemConfig(K=4)
    alloc = RoundAllocator(cfg, policy="primal_dual")
    rng = np.random.default_rng(0)
    for t in range(3):
        state = RoundState(t=t, distance=rng.uniform(20, 150, 4), data_size=np.full(4, 500.0),
                           loss=rng.uniform(0.3, 1.0, (4, 3)), grad_sq=rng.uniform(1, 10, (4, 3)),
                           cpu_freq=np.full(4, 1.5e9), cycles_per_bit=np.full(4, 1000.0),
                           samples=np.full(4, 40.0))
        a = alloc.allocate(state)
        assert a.x.shape == (4, 3) and math.isfinite(a.objective)
