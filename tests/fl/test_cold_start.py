"""The allocator used alone (as inside a user's FedAvg): round 0 with no measurements at all
schedules at least the participation floor, and an empty schedule always says why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedopt.allocator import RoundAllocator, RoundState
from fedopt.config import SystemConfig
from fedopt.population import draw_population


def _state(pop, t=0, available=None, loss=None, gsq=None):
    K, M = pop.K, pop.M
    nan = np.full((K, M), np.nan)
    return RoundState(t=t, distance=pop.d, data_size=np.asarray(pop.n_data, float),
                      loss=nan if loss is None else loss, grad_sq=nan if gsq is None else gsq,
                      cpu_freq=pop.f, cycles_per_bit=pop.c, samples=np.asarray(pop.D, float),
                      available=available)


@pytest.mark.parametrize("policy", ["primal_dual", "greedy", "lyapunov"])
@pytest.mark.parametrize("K", [10, 40])
def test_round_zero_without_measurements_schedules_the_floor(policy, K):
    cfg = SystemConfig(K=K)
    pop = draw_population(cfg, np.random.default_rng(K))
    alloc = RoundAllocator(cfg, policy)
    a = alloc.allocate(_state(pop))
    floor = math.ceil(cfg.beta * K)
    # counted independently of the allocator: UEs with a scheduled pair, and the band (7d)
    x = np.asarray(a.x) > 0
    assert x.any(axis=1).sum() >= floor
    assert np.sum(a.b) <= 1.0 + 1e-9
    assert a.status != "empty_schedule" and a.extras["message"] is None


def test_a_measurement_replaces_the_optimistic_price():
    cfg = SystemConfig(K=10)
    pop = draw_population(cfg, np.random.default_rng(0))
    alloc = RoundAllocator(cfg)
    loss = np.full((cfg.K, cfg.M), 1.0)
    gsq = np.zeros((cfg.K, cfg.M))
    a = alloc.allocate(_state(pop, loss=loss, gsq=gsq))
    u = a.extras["estimated_costs"]
    # every pair measured with Δ = Γ = 0: (8) leaves the energy, u = ρE > 0; the optimistic
    # price (negative) is gone
    assert np.all(u > 0)


def test_an_empty_schedule_explains_itself():
    cfg = SystemConfig(K=10)
    pop = draw_population(cfg, np.random.default_rng(0))
    a = RoundAllocator(cfg).allocate(_state(pop, available=np.zeros(cfg.K, bool)))
    assert not np.asarray(a.x).any()
    assert a.status == "empty_schedule" and "available" in a.extras["message"]
    # energy far outweighs a measured, tiny risk reduction: greedy schedules nobody, and says so
    alloc = RoundAllocator(cfg.replace(rho=1e6), "greedy")
    small = np.full((cfg.K, cfg.M), 1e-9)
    a = alloc.allocate(_state(pop, loss=small, gsq=small))
    assert not np.asarray(a.x).any()
    assert a.status == "empty_schedule" and "positive" in a.extras["message"]
