"""Delay (13), the deadline floor b_min and energy (4) against hand computation."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedopt import SystemConfig, draw_population
from fedopt.energy import (
    communication_energy,
    computation_energy,
    compute_time,
    min_bandwidth,
    pair_energy,
    tx_delay,
)

CFG = SystemConfig()


def test_point_one_defaults_rank8():
    # f = 1.5 GHz, c = 1000 cycles/bit, D = 40 samples of 2048 bits, I = 5, phi = 1 + 8/64
    S = 9216 * 8 * 16  # 1,179,648 bits
    t = compute_time(CFG, 1.125, 1000.0, 40, 1.5e9)
    assert math.isclose(t, 460_800_000 / 1.5e9, rel_tol=1e-12)  # 0.3072 s
    assert math.isclose(tx_delay(CFG, S, 0.02), 1_179_648 / 400_000, rel_tol=1e-12)  # 2.94912 s
    assert math.isclose(min_bandwidth(CFG, S, t), 1_179_648 / (20e6 * (5 - 0.3072)), rel_tol=1e-12)
    assert math.isclose(computation_energy(CFG, 1.125, 1000.0, 40, 1.5e9), 0.10368, rel_tol=1e-12)
    assert math.isclose(communication_energy(CFG, 0.2, S, 0.02), 0.589824, rel_tol=1e-12)
    total, e_cmp, e_com = pair_energy(CFG, 1.125, 1000.0, 40, 1.5e9, 0.2, S, 0.02)
    assert math.isclose(total, 0.10368 + 0.589824, rel_tol=1e-12)


def test_point_two_other_config():
    cfg = SystemConfig(theta=3.0, B="10 MHz")  # log2(1 + 3) = 2 bit/s/Hz
    S = 9216 * 16 * 16  # 2,359,296 bits, phi = 1.25
    t = compute_time(cfg, 1.25, 500.0, 40, 2e9)
    assert math.isclose(t, 0.128, rel_tol=1e-12)
    assert math.isclose(tx_delay(cfg, S, 0.1), 2_359_296 / 2e6, rel_tol=1e-12)  # 1.179648 s
    assert math.isclose(min_bandwidth(cfg, S, t), 2_359_296 / (10e6 * 2 * 4.872), rel_tol=1e-12)
    assert math.isclose(computation_energy(cfg, 1.25, 500.0, 40, 2e9), 0.1024, rel_tol=1e-12)
    assert math.isclose(communication_energy(cfg, 0.05, S, 0.1), 0.0589824, rel_tol=1e-12)


def test_deadline_floor_is_the_binding_bandwidth():
    # at b = b_min the pair finishes exactly at T_max
    pop = draw_population(CFG, 4)
    t = pop.compute_time(CFG)
    bmin = pop.b_min(CFG)
    np.testing.assert_allclose(t + tx_delay(CFG, pop.S[None, :], bmin), CFG.T_max, rtol=1e-12)


def test_unschedulable_pair_has_infinite_floor():
    assert np.isinf(min_bandwidth(CFG, 1e6, 5.0)) and np.isinf(min_bandwidth(CFG, 1e6, 7.0))


@settings(max_examples=200, deadline=None)
@given(p=st.floats(1e-3, 1.0), b=st.floats(1e-3, 1.0), dp=st.floats(1e-3, 1.0), db=st.floats(1e-3, 1.0))
def test_energy_monotone(p, b, dp, db):
    S = 1e6
    e = pair_energy(CFG, 1.1, 800.0, 40, 1.2e9, p, S, b)[0]
    assert pair_energy(CFG, 1.1, 800.0, 40, 1.2e9, p * (1 + dp), S, b)[0] > e  # increasing in p
    assert pair_energy(CFG, 1.1, 800.0, 40, 1.2e9, p, S, b + db)[0] < e  # decreasing in b
