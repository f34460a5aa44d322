"""Aggregation (1), three ways: all uploads received = data-size-weighted FedAvg; all lost =
unchanged; 'subscribed' = the form whose expectation over s ~ Bernoulli(q) is linear in q
(checked by Monte Carlo)."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.backends import ModuleSpec, PairBatch
from fedopt.backends.synthetic import SyntheticBackend
from fedopt.config import SystemConfig
from fedopt.fl.aggregation import aggregate_round, aggregation_weights
from fedopt.population import draw_population

SMALL = {"classes": 3, "features": 5, "input_dim": 4, "test_per_ue": 10, "global_test": 50}


@pytest.fixture(scope="module")
def round_():
    """One round of local updates with full-batch steps, so D_k^t = |D_k| (the data sizes)."""
    cfg = SystemConfig(K=8, M=2, ranks=(2, 3), M_max=2, beta=0.3, data_min=20, data_max=90)
    pop = draw_population(cfg, 1)
    be = SyntheticBackend(cfg, pop, 1, full_batch=True, **SMALL)
    params = be.init_modules([ModuleSpec(0, 2), ModuleSpec(1, 3)])
    rng = np.random.default_rng(0)
    params = [{k: rng.normal(0, 0.3, v.shape) for k, v in p.items()} for p in params]
    x = np.zeros((8, 2), bool)
    x[[0, 1, 2, 4, 6], 0] = True
    x[[1, 3, 5, 6, 7], 1] = True
    pairs = PairBatch.from_mask(x)
    res = be.local_update(pairs, params, steps=2, lr=0.2)
    return be, params, pairs, res


def fedavg(params, pairs, res, m):
    """Plain FedAvg of module m's updates weighted by |D_k| (written out independently)."""
    sel = [i for i in range(len(pairs)) if pairs.module[i] == m]
    n = np.array([res.n_samples[i] for i in sel], float)
    return {key: params[m][key] + sum(n[j] * res.updates[i][key] for j, i in enumerate(sel)) / n.sum()
            for key in params[m]}


@pytest.mark.parametrize("normalize", ["received", "subscribed"])
def test_all_received_is_data_size_weighted_fedavg(round_, normalize):
    be, params, pairs, res = round_
    np.testing.assert_array_equal(res.n_samples, be.n[pairs.ue])  # D_k^t = |D_k| here
    w = aggregation_weights(pairs.module, res.n_samples, np.ones(len(pairs), bool), 2, normalize)
    new = aggregate_round(be, params, pairs.module, res.updates, w)
    for m in range(2):
        ref = fedavg(params, pairs, res, m)
        for key in ref:
            np.testing.assert_allclose(new[m][key], ref[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("normalize", ["received", "subscribed"])
def test_all_lost_leaves_modules_unchanged(round_, normalize):
    be, params, pairs, res = round_
    w = aggregation_weights(pairs.module, res.n_samples, np.zeros(len(pairs), bool), 2, normalize)
    assert np.all(w == 0)
    new = aggregate_round(be, params, pairs.module, res.updates, w)
    for m in range(2):
        for key in params[m]:
            np.testing.assert_array_equal(new[m][key], params[m][key])


def test_received_normalisation_renormalises_over_arrivals(round_):
    be, params, pairs, res = round_
    s = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0], bool)[: len(pairs)]
    w = aggregation_weights(pairs.module, res.n_samples, s, 2, "received")
    for m in range(2):
        sel = (pairs.module == m) & s
        assert w[sel].sum() == pytest.approx(1.0)
        np.testing.assert_allclose(w[sel], res.n_samples[sel] / res.n_samples[sel].sum())


def test_subscribed_is_the_unbiased_form_by_monte_carlo(round_):
    """E_s[θ^{t+1}] = θ^t + Σ_i q_i (D_i / Σ_subscribers D) Δ_i for 'subscribed'; the
    'received' form is a different (ratio) estimator with another mean."""
    be, params, pairs, res = round_
    rng = np.random.default_rng(7)
    q = rng.uniform(0.2, 0.9, len(pairs))
    n_mc = 4000
    acc = {"subscribed": [], "received": []}
    for _ in range(n_mc):
        s = rng.random(len(pairs)) < q
        for mode in acc:
            w = aggregation_weights(pairs.module, res.n_samples, s, 2, mode)
            acc[mode].append(aggregate_round(be, params, pairs.module, res.updates, w)[1]["B"])
    D = res.n_samples
    sel = np.flatnonzero(pairs.module == 1)
    expected = params[1]["B"] + sum(q[i] * D[i] / D[sel].sum() * res.updates[i]["B"] for i in sel)
    sub = np.stack(acc["subscribed"])
    se = sub.std(axis=0) / np.sqrt(n_mc)
    z = np.abs(sub.mean(axis=0) - expected) / np.maximum(se, 1e-15)
    assert z.max() < 4.5
    rec = np.stack(acc["received"])
    z_rec = np.abs(rec.mean(axis=0) - expected) / np.maximum(rec.std(axis=0) / np.sqrt(n_mc), 1e-15)
    assert z_rec.max() > 10  # the received-normalised mean is not the q-weighted sum


def test_unknown_normalize():
    with pytest.raises(ValueError, match="normalize"):
        aggregation_weights(np.zeros(1, int), np.ones(1), np.ones(1, bool), 1, "mean")
