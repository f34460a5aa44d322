"""HetLoRA / FlexLoRA aggregation rules on small matrices, against hand computations,
FedAvg, the Eckart-Young theorem and peft's own SVD merge."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.baselines import (
    fedavg,
    flexlora_aggregate,
    hetlora_aggregate,
    lora_pairs,
    pad_rank,
    rank_of,
    shrink_tail,
    tail_norm,
    truncate_rank,
)


def adapter(rng, r, n_out=3, n_in=4, head=True):
    p = {"A": rng.normal(size=(r, n_in)), "B": rng.normal(size=(n_out, r))}
    if head:
        p["bias"] = rng.normal(size=(n_out,))
    return p


def test_pad_and_truncate_by_hand():
    p = {"A": np.array([[1.0, 2.0]]), "B": np.array([[3.0], [4.0]])}
    q = pad_rank(p, 3)
    np.testing.assert_array_equal(q["A"], [[1, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(q["B"], [[3, 0, 0], [4, 0, 0]])
    back = truncate_rank(q, 1)
    np.testing.assert_array_equal(back["A"], p["A"])
    np.testing.assert_array_equal(back["B"], p["B"])
    # truncation keeps the leading components: A[:r], B[:, :r]
    big = {"A": np.arange(6.0).reshape(3, 2), "B": np.arange(6.0).reshape(2, 3)}
    t = truncate_rank(big, 2)
    np.testing.assert_array_equal(t["A"], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(t["B"], [[0, 1], [3, 4]])
    with pytest.raises(ValueError):
        pad_rank(big, 2)
    with pytest.raises(ValueError):
        truncate_rank(p, 2)


def test_peft_key_pairing():
    p = {"x.lora_A.weight": np.zeros((2, 5)), "x.lora_B.weight": np.zeros((3, 2)),
         "head.weight": np.zeros((2, 3))}
    assert lora_pairs(p) == [("x.lora_A.weight", "x.lora_B.weight")]
    assert rank_of(p) == 2
    assert pad_rank(p, 4)["x.lora_B.weight"].shape == (3, 4)
    assert pad_rank(p, 4)["head.weight"].shape == (2, 3)


def test_hetlora_by_hand():
    # rank 1 and rank 2 with weights 1:3 -> p = (0.25, 0.75)
    u1 = {"A": np.array([[1.0, 2.0]]), "B": np.array([[1.0], [2.0]])}
    u2 = {"A": np.array([[3.0, 4.0], [5.0, 6.0]]), "B": np.array([[1.0, 2.0], [3.0, 4.0]])}
    g = hetlora_aggregate([u1, u2], [1.0, 3.0])
    np.testing.assert_allclose(g["A"], [[0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 4],
                                        [0.75 * 5, 0.75 * 6]])
    np.testing.assert_allclose(g["B"], [[0.25 * 1 + 0.75 * 1, 0.75 * 2],
                                        [0.25 * 2 + 0.75 * 3, 0.75 * 4]])


def test_hetlora_equal_ranks_is_fedavg():
    rng = np.random.default_rng(0)
    local = [adapter(rng, 3) for _ in range(4)]
    w = np.array([10.0, 20.0, 5.0, 65.0])
    g = hetlora_aggregate(local, w)
    p = w / w.sum()
    for key in ("A", "B", "bias"):
        np.testing.assert_allclose(g[key], sum(pi * q[key] for pi, q in zip(p, local)))
    np.testing.assert_allclose(g["A"], fedavg(local, w)["A"])


def test_flexlora_full_rank_is_fedavg_of_delta_w():
    rng = np.random.default_rng(1)
    n_out, n_in = 3, 4  # full rank is min(3, 4) = 3
    local = [adapter(rng, r, n_out, n_in) for r in (1, 2, 3)]
    scales = np.array([2.0, 2.0, 0.5])
    w = np.array([1.0, 2.0, 3.0])
    (out,), dW = flexlora_aggregate(local, w, scales, [3], out_scales=[2.0])
    p = w / w.sum()
    expect = sum(p[i] * scales[i] * local[i]["B"] @ local[i]["A"] for i in range(3))
    np.testing.assert_allclose(2.0 * out["B"] @ out["A"], expect, atol=1e-12)
    np.testing.assert_allclose(dW["A"], expect, atol=1e-12)
    np.testing.assert_allclose(out["bias"], sum(p[i] * local[i]["bias"] for i in range(3)))
    # FlexLoRA at equal full ranks is FedAvg of the products, not of the factors
    avg = fedavg(local[2:], [1.0])
    assert np.allclose(avg["B"] @ avg["A"], local[2]["B"] @ local[2]["A"])


def test_flexlora_truncation_is_eckart_young():
    rng = np.random.default_rng(2)
    local = [adapter(rng, 4, 6, 5, head=False) for _ in range(3)]
    outs, dW = flexlora_aggregate(local, [1, 1, 1], [1.0, 1.0, 1.0], [1, 2, 4])
    sig2 = np.sort(np.linalg.eigvalsh(dW["A"].T @ dW["A"]))[::-1]  # squared singular values
    for r, q in zip([1, 2, 4], outs):
        assert q["A"].shape == (r, 5) and q["B"].shape == (6, r)
        err = np.sum((dW["A"] - q["B"] @ q["A"]) ** 2)
        assert err == pytest.approx(max(sig2[r:].sum(), 0.0), rel=1e-9, abs=1e-10)
        np.testing.assert_allclose(q["A"] @ q["A"].T, np.eye(r), atol=1e-12)  # A = V_rᵀ


def test_flexlora_matches_peft_svd_merge():
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 5, bias=False)

        def forward(self, x):
            return self.lin(x)

    ranks, alphas, weights = [1, 2, 3], [2, 4, 3], [0.2, 0.3, 0.5]
    model = peft.get_peft_model(
        Net(), peft.LoraConfig(r=ranks[0], lora_alpha=alphas[0], target_modules=["lin"]),
        adapter_name="a0")
    for i in (1, 2):
        model.add_adapter(f"a{i}", peft.LoraConfig(r=ranks[i], lora_alpha=alphas[i],
                                                   target_modules=["lin"]))
    layer = model.base_model.model.lin
    local = []
    for i in range(3):
        with torch.no_grad():
            layer.lora_A[f"a{i}"].weight.normal_()
            layer.lora_B[f"a{i}"].weight.normal_()
        local.append({"A": layer.lora_A[f"a{i}"].weight.detach().double().numpy().copy(),
                      "B": layer.lora_B[f"a{i}"].weight.detach().double().numpy().copy()})
    model.base_model.add_weighted_adapter([f"a{i}" for i in range(3)], weights, "merged",
                                          combination_type="svd", svd_rank=2)
    A_peft = layer.lora_A["merged"].weight.detach().double().numpy()
    B_peft = layer.lora_B["merged"].weight.detach().double().numpy()
    assert layer.scaling["merged"] == 1.0  # peft's merged adapter: lora_alpha = r
    scales = np.array(alphas, float) / np.array(ranks)
    (ours,), _ = flexlora_aggregate(local, weights, scales, [2])
    np.testing.assert_allclose(ours["B"] @ ours["A"], B_peft @ A_peft, rtol=1e-5, atol=1e-5)
    # the factors themselves agree up to the sign of each singular pair (Σ sits in B)
    sign = np.sign(np.sum(ours["A"] * A_peft, axis=1))
    np.testing.assert_allclose(ours["A"] * sign[:, None], A_peft, atol=1e-5)
    np.testing.assert_allclose(ours["B"] * sign[None, :], B_peft, atol=1e-5)


def test_shrink_tail_is_group_soft_threshold():
    p = {"A": np.array([[1.0, 0.0], [3.0, 0.0]]), "B": np.array([[7.0, 4.0]])}
    assert tail_norm(p, 1) == pytest.approx(5.0)  # ‖(A[1:], B[:, 1:])‖ = ‖(3, 0, 4)‖
    q = shrink_tail(p, 1, 1.0)  # factor 1 - 1/5
    np.testing.assert_allclose(q["A"], [[1.0, 0.0], [2.4, 0.0]])
    np.testing.assert_allclose(q["B"], [[7.0, 3.2]])
    z = shrink_tail(p, 1, 6.0)  # threshold above the norm: the tail is zeroed
    assert tail_norm(z, 1) == 0.0 and z["A"][0, 0] == 1.0


def test_bad_weights_raise():
    rng = np.random.default_rng(3)
    local = [adapter(rng, 2)]
    with pytest.raises(ValueError):
        hetlora_aggregate(local, [0.0])
    with pytest.raises(ValueError):
        hetlora_aggregate(local, [1.0, 2.0])


def test_flexlora_rank_above_the_rank_of_delta_w_is_well_defined():
    """ΔW (10 × 65) has rank ≤ 10; a rank-16 output needs 6 more rows of A. They are
    orthonormal, orthogonal to ΔW's row space, B is 0 there, and a 1e-16 change of the
    uploads moves them by 1e-15 (LAPACK's own completion can jump by O(1))."""
    rng = np.random.default_rng(3)
    local = [{"A": rng.normal(size=(8, 65)), "B": rng.normal(size=(10, 8))} for _ in range(3)]
    nudged = [{k: v + 1e-16 * rng.normal(size=v.shape) for k, v in q.items()} for q in local]
    (out,), dW = flexlora_aggregate(local, [1, 2, 3], [1.0] * 3, [16], out_scales=[1.0])
    (out2,), _ = flexlora_aggregate(nudged, [1, 2, 3], [1.0] * 3, [16], out_scales=[1.0])
    A, B = out["A"], out["B"]
    np.testing.assert_allclose(A @ A.T, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(B @ A, dW["A"], atol=1e-12)  # still ΔW exactly (full rank 10)
    np.testing.assert_allclose(B[:, 10:], 0.0, atol=1e-12)
    np.testing.assert_allclose(dW["A"] @ A[10:].T, 0.0, atol=1e-10)
    assert np.abs(out2["A"] - A).max() < 1e-12
