"""The synthetic backend against independent references: finite differences, per-pair calls,
explicit Hessians, hand-computed ensembles and the data split it promises."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.backends import ModuleSpec, PairBatch, TrainingBackend, make_backend
from fedopt.backends.synthetic import SyntheticBackend
from fedopt.config import SystemConfig
from fedopt.errors import ConfigError
from fedopt.population import draw_population

SMALL = {"classes": 4, "features": 6, "input_dim": 5, "test_per_ue": 20, "global_test": 100}


def backend(dense=False, K=6, ranks=(2, 3), alpha_dir=0.5, seed=0, **opts):
    cfg = SystemConfig(K=K, M=len(ranks), ranks=ranks, M_max=1, beta=0.3, data_min=20,
                       data_max=60, alpha_dir=alpha_dir)
    pop = draw_population(cfg, seed)
    be = SyntheticBackend(cfg, pop, seed, dense=dense, **{**SMALL, **opts})
    params = be.init_modules([ModuleSpec(m, r) for m, r in enumerate(ranks)])
    return cfg, pop, be, params


def randomize(params, rng, scale=0.3):
    return [{k: rng.normal(0, scale, v.shape) for k, v in p.items()} for p in params]


def test_satisfies_protocol_and_factory():
    cfg, pop, be, _ = backend()
    assert isinstance(be, TrainingBackend)
    be2 = make_backend("synthetic", cfg, pop, 0, **SMALL)
    assert isinstance(be2, SyntheticBackend)
    with pytest.raises(ConfigError, match="unknown option 'clases'"):
        make_backend("synthetic", cfg, pop, 0, clases=3)


@pytest.mark.parametrize("dense", [False, True])
def test_gradient_matches_finite_difference(dense):
    """One full-batch step of size lr moves θ by −lr ∇F_k; ∇F_k by central differences of the
    probe's exact full-batch loss."""
    _, _, be, params = backend(dense=dense, full_batch=True, l2=0.03)
    rng = np.random.default_rng(1)
    params = randomize(params, rng)
    pairs = PairBatch([2], [1])
    lr = 1e-3
    res = be.local_update(pairs, params, steps=1, lr=lr)
    grad = {k: -v / lr for k, v in res.updates[0].items()}
    eps = 1e-6
    for key, value in params[1].items():
        for idx in [tuple(rng.integers(0, s) for s in value.shape) for _ in range(5)]:
            plus = [dict(p) for p in params]
            minus = [dict(p) for p in params]
            plus[1] = {**params[1], key: value.copy()}
            minus[1] = {**params[1], key: value.copy()}
            plus[1][key][idx] += eps
            minus[1][key][idx] -= eps
            fd = (be.probe(pairs, plus)[0][0] - be.probe(pairs, minus)[0][0]) / (2 * eps)
            assert grad[key][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    # the reported ||grad||^2 is the squared norm of that same gradient
    assert res.grad_sq[0] == pytest.approx(sum((g**2).sum() for g in grad.values()), rel=1e-9)
    assert res.n_samples[0] == be.n[2]


def test_batched_call_equals_per_pair_calls_with_mixed_ranks():
    """All pairs in one vectorised call give what each pair gives alone (LoRA ranks padded)."""
    _, _, be, params = backend(full_batch=True, ranks=(2, 5))
    params = randomize(params, np.random.default_rng(2))
    pairs = PairBatch([0, 1, 3, 3, 5], [0, 1, 0, 1, 1])
    res = be.local_update(pairs, params, steps=3, lr=0.1)
    loss, gsq = be.probe(pairs, params)
    for i in range(len(pairs)):
        one = PairBatch([pairs.ue[i]], [pairs.module[i]])
        r1 = be.local_update(one, params, steps=3, lr=0.1)
        for key in r1.updates[0]:
            np.testing.assert_allclose(res.updates[i][key], r1.updates[0][key], rtol=1e-10, atol=1e-13)
            assert res.updates[i][key].shape == params[pairs.module[i]][key].shape
        np.testing.assert_allclose(res.loss[i], r1.loss[0], rtol=1e-12)
        l1, g1 = be.probe(one, params)
        np.testing.assert_allclose([loss[i], gsq[i]], [l1[0], g1[0]], rtol=1e-12)


def test_minibatch_samples_per_round_and_resume_of_the_stream():
    cfg, _, be, params = backend()
    pairs = PairBatch([0, 1], [0, 1])
    res = be.local_update(pairs, params, steps=4, lr=0.1)
    np.testing.assert_array_equal(res.n_samples, [4 * cfg.batch] * 2)
    state = be.state_dict()
    a = be.local_update(pairs, params, steps=2, lr=0.1)
    be.load_state_dict(state)
    b = be.local_update(pairs, params, steps=2, lr=0.1)
    for u, v in zip(a.updates, b.updates):
        for k in u:
            np.testing.assert_array_equal(u[k], v[k])


def test_dense_hessian_matches_finite_differences_and_smoothness_bounds():
    _, _, be, params = backend(dense=True, l2=0.02, classes=3, features=3)
    rng = np.random.default_rng(3)
    delta = rng.normal(0, 0.5, params[0]["W"].shape)
    n = delta.size
    H = np.zeros((n, n))
    eps = 1e-5
    for i in range(n):  # Hessian by central differences of the exact gradient
        e = np.zeros(n)
        e[i] = eps
        gp = be.global_objective(delta + e.reshape(delta.shape))[1].ravel()
        gm = be.global_objective(delta - e.reshape(delta.shape))[1].ravel()
        H[:, i] = (gp - gm) / (2 * eps)
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    lo, hi = be.hessian_eigenvalues(delta)
    assert lo == pytest.approx(ev[0], rel=1e-4, abs=1e-7)
    assert hi == pytest.approx(ev[-1], rel=1e-4)
    mu, L = be.smoothness()
    assert mu == pytest.approx(0.02)
    for _ in range(5):  # the certified (mu, L) bracket the Hessian of F anywhere
        lo, hi = be.hessian_eigenvalues(rng.normal(0, 2.0, delta.shape))
        assert mu - 1e-12 <= lo and hi <= L + 1e-12


def test_dense_optimum_is_the_minimum():
    _, _, be, params = backend(dense=True, l2=0.05)
    F_star, theta = be.optimum()
    F, g = be.global_objective(theta)
    assert np.linalg.norm(g) < 1e-7
    assert F_star <= F <= F_star + 1e-12
    rng = np.random.default_rng(4)
    for _ in range(20):
        assert be.global_objective(theta + rng.normal(0, 0.1, theta.shape))[0] > F_star
    # F is the omega-weighted mean of the local objectives
    Fk, grads = be.local_objectives(theta)
    omega = be.n / be.n.sum()
    assert omega @ Fk == pytest.approx(F, rel=1e-12)
    np.testing.assert_allclose(np.tensordot(omega, grads, 1), g, atol=1e-12)


def test_data_split_quantity_and_label_skew():
    cfg, pop, be, _ = backend(K=30, alpha_dir=0.1, test_per_ue=200)
    np.testing.assert_array_equal(be.data_sizes(), pop.n_data)
    np.testing.assert_array_equal(np.bincount(be.train_ue, minlength=30), pop.n_data)
    C = be.C
    train = np.stack([np.bincount(be.y_train[be.train_ue == k], minlength=C) for k in range(30)])
    test = np.stack([np.bincount(be.y_test[be.test_ue == k], minlength=C) for k in range(30)])
    p_train = train / train.sum(1, keepdims=True)
    p_test = test / test.sum(1, keepdims=True)
    # each UE's test split follows its own label distribution (total variation small)
    assert np.median(0.5 * np.abs(p_train - p_test).sum(1)) < 0.15
    # alpha_dir = 0.1 concentrates a UE on few classes; alpha_dir = 100 is near uniform
    _, _, be_iid, _ = backend(K=30, alpha_dir=100.0)
    iid = np.stack([np.bincount(be_iid.y_train[be_iid.train_ue == k], minlength=C) for k in range(30)])
    assert p_train.max(1).mean() > 0.7
    assert (iid / iid.sum(1, keepdims=True)).max(1).mean() < 0.45


def test_evaluate_ensemble_by_hand():
    """Eq. (3): UE k's logits are the mean of its modules' logits; no module: all modules."""
    _, _, be, params = backend(K=4, ranks=(2, 3))
    params = randomize(params, np.random.default_rng(5))
    ens = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)
    ev = be.evaluate(params, ens)
    W = [be.W_base + 2.0 * p["B"] @ p["A"] for p in params]  # s = alpha / r = 2
    for k in range(4):
        X = be.x_test[be.test_ue == k]
        y = be.y_test[be.test_ue == k]
        mods = np.flatnonzero(ens[k])
        mods = mods if len(mods) else np.arange(2)  # no module yet: every module (3)
        z = np.mean([X @ W[m].T for m in mods], 0)
        assert ev.ue_accuracy[k] == pytest.approx(np.mean(z.argmax(1) == y))
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        assert ev.ue_loss[k] == pytest.approx(-logp[np.arange(len(y)), y].mean())
    omega = be.n / be.n.sum()
    assert ev.accuracy == pytest.approx(omega @ ev.ue_accuracy)
    zg = np.mean([be.x_global @ w.T for w in W], 0)
    assert ev.global_accuracy == pytest.approx(np.mean(zg.argmax(1) == be.y_global))
    for m in range(2):  # each module alone on the global test set, by a loop over examples
        pred = [int(np.argmax(x @ W[m].T)) for x in be.x_global]
        assert ev.module_accuracy[m] == pytest.approx(np.mean(np.array(pred) == be.y_global))
        assert ev.module_top_share[m] == pytest.approx(max(pred.count(c) for c in set(pred)) / len(pred))


def test_collapsed_module_predicts_one_class_and_carries_the_logit_mean():
    """A module whose logits favour one class by a wide margin on every example: its top
    share is 1 and the uniform logit mean (3) follows it, though the other module is right."""
    from fedopt.backends.base import ONE_CLASS, ensemble_evaluation

    y = np.array([0, 1, 0, 1, 1, 0])
    good = np.stack([1.0 - y, y.astype(float)], axis=1)  # margin 1 toward the true class
    dead = np.tile([0.0, 6.7], (6, 1))  # "class 1" by 6.7 for everything (QNLI seed 2's m0)
    ev = ensemble_evaluation(np.stack([good, dead]), y, np.ones((1, 2), bool), np.ones(1),
                             label_dist=np.array([[0.5, 0.5]]))
    assert list(ev.module_accuracy) == [1.0, 0.5]
    assert list(ev.module_top_share) == [0.5, 1.0] and ev.module_top_share[1] >= ONE_CLASS
    assert ev.global_accuracy == 0.5  # the mean follows the dead module's margin


def test_training_improves_accuracy():
    """Federated averaging of local updates learns: accuracy on the global test set rises."""
    cfg = SystemConfig(K=10, M=1, ranks=(4,), M_max=1, beta=0.3, data_min=100, data_max=200)
    be = SyntheticBackend(cfg, draw_population(cfg, 0), 0, global_test=500)  # default sizes
    params = be.init_modules([ModuleSpec(0, 4)])
    ens = np.ones((10, 1), bool)
    before = be.evaluate(params, ens).global_accuracy
    for _ in range(60):
        pairs = PairBatch(np.arange(10), np.zeros(10, int))
        res = be.local_update(pairs, params, steps=5, lr=0.1)
        w = res.n_samples / res.n_samples.sum()
        params = [be.aggregate(0, params[0], res.updates, w)]
    after = be.evaluate(params, ens).global_accuracy
    assert after > before + 0.1
