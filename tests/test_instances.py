"""Canonical instances: validation, JSON round trips and the builders from a system state."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedopt import (
    BandwidthInstance,
    InfeasibleError,
    InstanceError,
    PowerInstance,
    SystemConfig,
    draw_population,
    load_instance,
)
from fedopt.channel import success_probability
from fedopt.energy import communication_energy
from fedopt.instances import bandwidth_instance, bandwidth_to_matrix, power_batch

SHARED = Path(__file__).resolve().parents[1] / "experiments" / "instances"

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    arrays(float, n, elements=finite), arrays(float, n, elements=finite),
    arrays(float, n, elements=finite),
    arrays(float, n, elements=st.floats(1e-9, 1.0 / 12)))))
def test_bandwidth_json_round_trip_is_exact(data):
    w, a, c, b_min = data
    inst = BandwidthInstance(w, a, c, b_min, np.ones_like(w), 1.0)
    back = BandwidthInstance.from_json(inst.to_json())
    for name in ("w", "a", "c", "b_min", "b_max"):
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name))
    assert back.budget == inst.budget


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(
    arrays(float, n, elements=finite), arrays(float, n, elements=finite))),
    finite, st.floats(2.01, 8.0), finite, st.floats(1e-6, 1.0), st.floats(0.0, 10.0))
def test_power_json_round_trip_is_exact(WA, kappa, alpha, C, p_min, spread):
    inst = PowerInstance(WA[0], WA[1], kappa, alpha, C, p_min, p_min * (1 + spread))
    back = PowerInstance.from_json(inst.to_json())
    np.testing.assert_array_equal(back.W, inst.W)
    np.testing.assert_array_equal(back.A, inst.A)
    assert (back.kappa, back.alpha, back.C, back.p_min, back.p_max) == (
        inst.kappa, inst.alpha, inst.C, inst.p_min, inst.p_max)


def test_shared_examples_load():
    paths = sorted(SHARED.glob("*.json"))
    assert len(paths) == 8  # bandwidth 4, power 2, round 2
    for path in paths:
        inst = load_instance(path)
        assert inst.to_dict()["problem"] in path.name


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("not json", r"inst.json: not valid JSON"),
        ('{"problem": "bandwidth", "w": [1], "a": [1], "c": [1]}', r"missing key 'b_min'"),
        ('{"problem": "bandwidth", "w": [1, 2], "a": [1], "c": [1, 1], "b_min": [0.1, 0.1]}',
         r"'a' has length 1, expected 2"),
        ('{"problem": "bandwidth", "w": [NaN], "a": [1], "c": [1], "b_min": [0.1]}', r"'NaN' is not allowed"),
        ('{"problem": "bandwidth", "w": [-1], "a": [1], "c": [1], "b_min": [0.1]}', r"'w\[0\]' = -1 is negative"),
        ('{"problem": "bandwidth", "w": [1], "a": [1], "c": [1], "b_min": [0]}', r"'b_min\[0\]' = 0; every b_min must be > 0"),
        ('{"problem": "bandwidth", "w": [1], "a": [1], "c": [1], "b_min": [0.5], "b_max": [0.4]}',
         r"'b_min\[0\]' = 0.5 exceeds 'b_max\[0\]' = 0.4"),
        ('{"problem": "power", "W": [1], "A": [1], "kappa": 1, "alpha": 2, "C": 1, "p_min": 0.1, "p_max": 0.2}',
         r"'alpha' = 2"),
        ('{"problem": "power", "W": [1], "A": [1], "kappa": 1, "alpha": 3, "C": 1, "p_min": 0.3, "p_max": 0.2}',
         r"'p_min' = 0.3 exceeds 'p_max' = 0.2"),
    ],
)
def test_malformed_instances(text, pattern, tmp_path):
    path = tmp_path / "inst.json"
    path.write_text(text)
    with pytest.raises(InstanceError, match=pattern) as exc:
        load_instance(path)
    assert "\n" not in str(exc.value)


def test_infeasible_is_reported_as_such():
    with pytest.raises(InfeasibleError, match=r"^infeasible: sum\(b_min\) = 1.2"):
        BandwidthInstance([1, 1], [1, 1], [1, 1], [0.6, 0.6], [1, 1], 1.0)


def test_builders_reproduce_the_round_objective():
    """The canonical forms + their dropped constants equal (16) and (21) from the system model."""
    cfg = SystemConfig(K=6)
    pop = draw_population(cfg, 3)
    rng = np.random.default_rng(0)
    x = np.zeros((6, 3))
    x[[0, 1, 1, 3, 5], [0, 1, 2, 0, 2]] = 1
    p = rng.uniform(0.01, 0.2, 6)
    Gamma = rng.uniform(0.1, 1.0, (6, 3))
    b = np.where(x > 0, 0.1, 0.0)
    common = dict(omega=pop.omega, Gamma=Gamma, a=pop.a(cfg), kappa=pop.kappa(cfg), S=pop.S,
                  rho=cfg.rho, B=cfg.B, theta=cfg.theta, alpha=cfg.alpha)
    inst = bandwidth_instance(x=x, p=p, b_min=pop.b_min(cfg), **common)
    q = success_probability(cfg, pop.d[:, None], p[:, None], b)
    e_com = communication_energy(cfg, p[:, None], pop.S[None, :], np.where(x > 0, b, 1.0))
    direct = np.sum(x * (pop.omega[:, None] * Gamma * (1 - q) + cfg.rho * e_com))
    const = np.sum(x * pop.omega[:, None] * Gamma)
    bn = b[x > 0]
    assert math.isclose(inst.objective(bn) + const, direct, rel_tol=1e-12)
    np.testing.assert_array_equal(bandwidth_to_matrix(inst, bn), b)
    batch = power_batch(x=x, b=b, p_min=cfg.P_min, p_max=cfg.P_max, **common)
    per_ue = np.sum(x * (pop.omega[:, None] * Gamma * (1 - q) + cfg.rho * e_com), axis=1)
    np.testing.assert_allclose(batch.objective(p), per_ue, rtol=1e-12)
    single = batch.instance(1)
    assert math.isclose(single.objective(p[1]), per_ue[1], rel_tol=1e-12)


def test_duplicate_keys_and_deep_nesting_are_one_line(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text('{"problem": "bandwidth", "w": [1], "a": [1], "c": [1], "b_min": [0.1], '
                   '"budget": 1, "budget": 0.5}')
    with pytest.raises(InstanceError, match="dup.json: duplicate key 'budget'"):
        load_instance(dup)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InstanceError, match="deep.json: JSON nested too deeply"):
        load_instance(deep)
