"""Schemes through the runtime: rank levels, the pooled aggregation hook, full-parameter
scheduling, against closed forms and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedopt.backends import PairBatch
from fedopt.backends.base import LocalResult
from fedopt.baselines import (
    SCHEMES,
    assign_rank_levels,
    full_parameter,
    get_scheme,
    pad_rank,
    truncate_rank,
)
from fedopt.energy import compute_time, min_bandwidth
from fedopt.errors import ConfigError
from fedopt.fl.config import RunConfig
from fedopt.fl.runtime import Simulation


def small_run(**kw):
    base = {"K": 8, "rounds": 3, "checkpoint_every": 0, "seed": 1, "rho": 1e-4}
    base.update(kw)
    return RunConfig.from_dict(base)


def test_full_parameter_slots_match_closed_form():
    run = small_run(K=100)
    cfg_full, n = full_parameter(run)
    sysc = run.system
    S = 22_713_216 * sysc.bits_per_param
    # β K S / (B log2(1+θ) (n T_max − t_cmp)) <= 0.8 with t_cmp = I φ c D s / f, φ = 2, at
    # the mean 1/f and mean c: n ≈ (βK S / (0.8 B log2(1+θ)) + t_cmp) / T_max
    t_cmp = sysc.local_steps * 2.0 * 1000 * sysc.samples_per_round * sysc.s_bits * np.mean(
        1 / np.linspace(sysc.f_min, sysc.f_max, 10001))
    n_closed = (sysc.beta * sysc.K * S / (0.8 * sysc.B * math.log2(1 + sysc.theta)) + t_cmp) / sysc.T_max
    assert abs(n - math.ceil(n_closed)) <= 1
    assert cfg_full.system.T_max == n * sysc.T_max
    assert cfg_full.system.nominal_module_bits()[0] == S
    assert cfg_full.backend_options.get("dense") is True
    # one full upload over the whole band exceeds the deadline: no single-slot schedule exists
    assert S / (sysc.B * math.log2(1 + sysc.theta)) > sysc.T_max


def test_rank_levels_brute_force():
    run = small_run(K=40)
    sim = Simulation(run, None, progress=False)
    cfg, pop = sim.system, sim.pop
    lv = assign_rank_levels(cfg, pop)
    share = 1.0 / math.ceil(cfg.beta * pop.K)
    for k in range(pop.K):  # brute force, one UE and one rank at a time
        q = math.exp(-float(pop.a(cfg)[k]) * share / cfg.P_max
                     - float(pop.kappa(cfg)[k]) * cfg.P_max ** (-2 / cfg.alpha))
        best = -1
        for j, _ in enumerate(cfg.ranks):
            t = compute_time(cfg, pop.phi[j], pop.c[k], pop.D[k], pop.f[k])
            bm = float(min_bandwidth(cfg, pop.S[j], t))
            if bm <= q * share:
                best = j
        if best < 0:
            feas = [j for j in range(len(cfg.ranks))
                    if np.isfinite(min_bandwidth(cfg, pop.S[j], compute_time(
                        cfg, pop.phi[j], pop.c[k], pop.D[k], pop.f[k])))]
            best = feas[0] if feas else -1
        assert lv[k] == best


@pytest.mark.parametrize("rule", ["hetlora", "flexlora"])
def test_rank_level_run_keeps_truncations(rule):
    sim = Simulation(small_run(), None, rule=rule, progress=False)
    for _ in range(3):
        sim.step()
    top = sim.params[-1]
    for r, p in zip(sim.rule.ranks, sim.params):
        t = truncate_rank(top, r)
        for key in p:
            np.testing.assert_allclose(p[key], t[key], atol=1e-12)
    # UEs subscribe only to their own level
    x = np.sum(sim.trace["x"], axis=0)
    for k in range(sim.pop.K):
        off = [m for m in range(len(sim.rule.ranks)) if m != sim.rule.level[k]]
        assert x[k, off].sum() == 0


def test_hetlora_hook_by_hand():
    sim = Simulation(small_run(), None, rule="hetlora", progress=False)
    rng = np.random.default_rng(0)
    ranks = sim.rule.ranks
    # two uploads: UE 0 at the lowest level, UE 1 at the top; UE 2's upload is lost
    pairs = PairBatch(np.array([0, 1, 2]), np.array([0, len(ranks) - 1, 0]))
    ups = [{k: rng.normal(size=v.shape) for k, v in sim.params[m].items()}
           for m in pairs.module]
    res = LocalResult(ups, np.zeros(3), np.zeros(3), np.array([40.0, 120.0, 40.0]))
    new = sim.rule.aggregate(sim.params, pairs, res.updates, res.n_samples,
                             np.array([True, True, False]))
    loc0 = {k: sim.params[0][k] + ups[0][k] for k in ups[0]}
    loc1 = {k: sim.params[-1][k] + ups[1][k] for k in ups[1]}
    p0 = pad_rank(loc0, ranks[-1])
    for key in ("A", "B"):
        np.testing.assert_allclose(new[-1][key], 0.25 * p0[key] + 0.75 * loc1[key])
    np.testing.assert_allclose(new[0]["A"], new[-1]["A"][: ranks[0]])


def test_registry_and_errors():
    assert {"proposed", "fedlora", "full", "hetlora", "flexlora", "greedy", "one_shot",
            "energy", "max_power"} <= set(SCHEMES)
    with pytest.raises(ConfigError, match="known"):
        get_scheme("fedsgd")
    with pytest.raises(ConfigError):
        Simulation(small_run(), None, rule="cat", progress=False)
    from fedopt.baselines import configure

    with pytest.raises(ConfigError, match="energy_budget"):
        configure(get_scheme("energy"), small_run())
    cfg, slots = configure(get_scheme("energy"), small_run(energy_budget=0.5))
    assert cfg.system.energy_budget == 0.5 and slots == 1


def test_hetlora_self_pruning():
    # a huge λ: the prox zeroes every upload's tail, so each UE above the lowest level that
    # uploads drops exactly one level; λ = 0 never changes a level
    sim = Simulation(small_run(K=10), None, rule="hetlora", prune_lambda=1e9,
                              progress=False)
    pruned = 0
    for _ in range(3):
        before = sim.rule.level.copy()
        sim.step()
        x = sim.trace["x"][-1].astype(bool)
        uploaded = (x & sim.trace["s"][-1]).any(axis=1)
        expect = np.where(uploaded & (before > 0), before - 1, before)
        np.testing.assert_array_equal(sim.rule.level, expect)
        pruned += int((expect < before).sum())
    assert pruned > 0  # the rule was exercised
    plain = Simulation(small_run(K=10), None, rule="hetlora", progress=False)
    lv = plain.rule.level.copy()
    for _ in range(2):
        plain.step()
    np.testing.assert_array_equal(plain.rule.level, lv)
