"""The torch + peft LoRA backend: fast path against the plain peft loop, saved modules against a
fresh peft model, the ensemble (3) against Monte Carlo, the Dirichlet partition, bad input.

Unit tests build tiny randomly initialised BERT / RoBERTa encoders from a config (no weights)
and a small synthetic GLUE folder; one integration test uses the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from conftest import tiny_model, write_sst2  # noqa: E402  (tests/conftest.py)

from fedopt.backends.base import ModuleSpec, PairBatch, weighted_mean_aggregate  # noqa: E402
from fedopt.backends.glue import dirichlet_partition, load_task, read_tsv  # noqa: E402
from fedopt.backends.lora import LoraBackend, save_run  # noqa: E402
from fedopt.backends.lora_model import MeanPoolClassifier  # noqa: E402
from fedopt.config import SystemConfig  # noqa: E402
from fedopt.errors import ConfigError  # noqa: E402
from fedopt.population import draw_population  # noqa: E402


@pytest.fixture(scope="module")
def glue(tiny_glue) -> Path:
    return tiny_glue


@pytest.fixture(scope="module")
def bert(tiny_bert) -> Path:
    return tiny_bert


@pytest.fixture(scope="module")
def roberta(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("roberta"), "roberta")


CFG = SystemConfig(K=4, batch=4, data_min=30, data_max=60)
POP = draw_population(CFG, 0)
SPECS = [ModuleSpec(0, 2), ModuleSpec(1, 4, lora_alpha=3.0, top_layers=1),
         ModuleSpec(2, 8, target_modules=("query", "key", "value", "output.dense"))]
PAIRS = PairBatch(np.array([0, 0, 1, 2, 3, 3]), np.array([0, 1, 2, 0, 1, 2]))


def _backend(model: Path, glue: Path, **opts) -> LoraBackend:
    opts.setdefault("cache_dtype", "float32")
    return LoraBackend(CFG, POP, 0, model=str(model), data_dir=str(glue), progress=False,
                       log=lambda msg: None, **opts)


def _perturbed(params, seed=1):
    """Random non-zero B and head, so every gradient (A's too) is non-trivial."""
    rng = np.random.default_rng(seed)
    out = []
    for p in params:
        q = {}
        for k, v in p.items():
            q[k] = v + rng.normal(0, 0.05, v.shape).astype(np.float32) if ("lora_B" in k or "classifier" in k) else v
        out.append(q)
    return out


@pytest.mark.parametrize("kind,top", [("bert", 2), ("roberta", 2), ("bert", "all"), ("roberta", 5)])
def test_fast_path_gradients_match_peft_loop(kind, top, glue, request):
    """top 2 (and 1) of 3 blocks: the prefix cache holds block 1's input; "all" (or any L >= 3):
    LoRA in every block, the cache holds the embedding output."""
    model = request.getfixturevalue(kind)
    fast = _backend(model, glue, top_layers=top)
    ref = _backend(model, glue, lora_path="reference", top_layers=top)
    params = _perturbed(fast.init_modules(SPECS))
    ref.init_modules(SPECS)
    assert fast.first == (1 if top == 2 else 0)
    assert ref.lora_config(SPECS[0]).layers_to_transform == ([1, 2] if top == 2 else [0, 1, 2])
    lr = 1.0  # one step: update = -grad
    a = fast.local_update(PAIRS, params, 1, lr)
    b = ref.local_update(PAIRS, params, 1, lr)
    for i in range(len(PAIRS)):
        assert a.updates[i].keys() == b.updates[i].keys() == params[PAIRS.module[i]].keys()
        for k in a.updates[i]:
            assert np.abs(b.updates[i][k]).max() > 1e-6, k  # the reference gradient is not trivial
            np.testing.assert_allclose(a.updates[i][k], b.updates[i][k], atol=1e-5, rtol=0, err_msg=k)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    np.testing.assert_allclose(a.grad_sq, b.grad_sq, rtol=1e-5)
    np.testing.assert_allclose(a.grad_sq, [sum(float((u ** 2).sum()) for u in upd.values()) for upd in b.updates],
                               rtol=1e-5)  # ||grad||^2 is the first step's gradient, lr = 1
    # several steps, the next samples of each UE
    a = fast.local_update(PAIRS, params, 3, 0.3)
    b = ref.local_update(PAIRS, params, 3, 0.3)
    for ua, ub in zip(a.updates, b.updates):
        for k in ua:
            np.testing.assert_allclose(ua[k], ub[k], atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    pa, pb = fast.probe(PAIRS, params), ref.probe(PAIRS, params)
    np.testing.assert_allclose(pa[0], pb[0], rtol=1e-5)
    np.testing.assert_allclose(pa[1], pb[1], rtol=1e-5)
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], bool)
    ea, eb = fast.evaluate(params, ens), ref.evaluate(params, ens)
    np.testing.assert_allclose(ea.ue_accuracy, eb.ue_accuracy)
    np.testing.assert_allclose(ea.global_loss, eb.global_loss, rtol=1e-5)


def test_fp16_cache_is_close_and_batch_padding_is_exact(bert, glue):
    exact = _backend(bert, glue)
    half = _backend(bert, glue, cache_dtype="float16")
    fixed = _backend(bert, glue, lora_path="reference", padding="max_length")
    params = _perturbed(exact.init_modules(SPECS))
    half.init_modules(SPECS)
    fixed.init_modules(SPECS)
    a, b, c = (x.local_update(PAIRS, params, 2, 0.5) for x in (exact, half, fixed))
    for ua, ub, uc in zip(a.updates, b.updates, c.updates):
        for k in ua:
            np.testing.assert_allclose(ua[k], uc[k], atol=1e-5, rtol=0)  # padding is masked out
            np.testing.assert_allclose(ua[k], ub[k], atol=5e-3 * max(1e-3, np.abs(ua[k]).max()) + 1e-5)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-2)


def test_num_params_counts_the_real_adapter(bert, glue):
    from peft import get_peft_model

    be = _backend(bert, glue)
    params = be.init_modules(SPECS)
    for spec, p in zip(SPECS, params):
        n = sum(v.size for v in p.values())
        assert be.num_params(spec) == n
        assert be.module_size_bits(spec, 16) == 16 * n
        # an independent count: a fresh peft model's trainable parameters for this config
        from transformers import AutoModel

        net = MeanPoolClassifier(AutoModel.from_pretrained(str(bert)), 2)
        for q in net.parameters():
            q.requires_grad_(False)
        pm = get_peft_model(net, be.lora_config(spec))
        assert sum(q.numel() for q in pm.parameters() if q.requires_grad) == n
    # rank 2 on query+value of the top 2 of 3 blocks (hidden 32) + head 32*2+2
    assert be.num_params(SPECS[0]) == 2 * 2 * 2 * (32 + 32) + 66


def test_saved_module_loads_into_fresh_peft_model(bert, glue, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    be = _backend(bert, glue)
    params = be.init_modules(SPECS)
    res = be.local_update(PAIRS, params, 2, 0.5)
    new = [weighted_mean_aggregate(params[m], [u for u, mm in zip(res.updates, PAIRS.module) if mm == m],
                                   np.full(int((PAIRS.module == m).sum()), 0.5)) for m in range(3)]
    ens = np.ones((4, 3), bool)
    save_run(be, tmp_path, new, ens, be.evaluate(new, ens))
    logits = be.module_logits(new)
    from fedopt.backends.lora_batched import pad_examples

    inputs = pad_examples(be.test.examples, be.pad_id)
    for m in range(3):
        folder = tmp_path / "lora" / f"m{m}"
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        net = MeanPoolClassifier(AutoModel.from_pretrained(str(bert)), 2, seed=123)  # different head init
        pm = PeftModel.from_pretrained(net, str(folder)).eval()
        with torch.no_grad():
            out = pm(**inputs).numpy()
        np.testing.assert_allclose(out, logits[m], atol=1e-5)


def test_ensemble_accuracy_matches_monte_carlo_resampling(bert, glue):
    be = _backend(bert, glue)
    params = _perturbed(be.init_modules(SPECS), seed=5)
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], bool)
    ev = be.evaluate(params, ens)
    logits = be.module_logits(params)
    y = be.test.labels
    assert ev.global_accuracy == pytest.approx(float((logits.mean(0).argmax(1) == y).mean()))
    rng = np.random.default_rng(0)
    for k in range(4):
        mask = ens[k] if ens[k].any() else np.ones(3, bool)
        correct = logits[mask].mean(0).argmax(1) == y
        # a test set drawn with UE k's label distribution, by resampling the test split
        cls = rng.choice(2, 40000, p=be.label_dist[k])
        draws = np.array([rng.choice(np.flatnonzero(y == c)) for c in cls])
        assert ev.ue_accuracy[k] == pytest.approx(correct[draws].mean(), abs=0.01)
    omega = be.data_sizes() / be.data_sizes().sum()
    assert ev.accuracy == pytest.approx(float(omega @ ev.ue_accuracy))


def test_state_dict_resumes_exactly(bert, glue):
    be = _backend(bert, glue)
    params = be.init_modules(SPECS)
    be.local_update(PAIRS, params, 2, 0.1)
    state = be.state_dict()
    a = be.local_update(PAIRS, params, 3, 0.1)
    be.load_state_dict(state)
    b = be.local_update(PAIRS, params, 3, 0.1)
    for ua, ub in zip(a.updates, b.updates):
        for k in ua:
            np.testing.assert_array_equal(ua[k], ub[k])


def test_dirichlet_partition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    sizes = rng.integers(200, 1001, 20)
    parts = dirichlet_partition(labels, sizes, 0.5, np.random.default_rng(1))
    allidx = np.concatenate(parts)
    assert allidx.size == np.unique(allidx).size  # disjoint
    np.testing.assert_array_equal([p.size for p in parts], sizes)  # pools suffice: exact sizes
    skew = lambda a: np.mean([max(labels[p].mean(), 1 - labels[p].mean())  # noqa: E731
                              for p in dirichlet_partition(labels, sizes, a, np.random.default_rng(2))])
    assert skew(0.05) > 0.9  # nearly one class per UE
    assert skew(1000.0) < 0.56  # nearly the global balance (0.5)
    # a class that runs out: requests scaled down, still disjoint
    few = np.array([0] * 100 + [1] * 5000)
    parts = dirichlet_partition(few, np.full(10, 400), 0.5, np.random.default_rng(3))
    assert sum((few[p] == 0).sum() for p in parts) <= 100
    assert np.concatenate(parts).size == np.unique(np.concatenate(parts)).size


def test_qnli_dev_only_is_split_and_said(tmp_path):
    d = tmp_path / "QNLI"
    d.mkdir()
    rows = [f"{i}\tq {i}?\ts {i}.\t{'entailment' if i % 3 else 'not_entailment'}\n" for i in range(100)]
    (d / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n" + "".join(rows))
    train, test, note = load_task("qnli", tmp_path, seed=0, test_fraction=0.3)
    assert len(train) + len(test) == 100 and len(test) == 30
    assert "only dev.tsv" in note
    assert set(train.text_a).isdisjoint(test.text_a)
    assert train.text_b is not None and train.labels.mean() == pytest.approx(test.labels.mean(), abs=0.05)


def test_bad_input_one_line_errors(bert, glue, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not a local folder.*packaged all-MiniLM") as e:
        _backend("roberta-base", glue)
    assert "\n" not in str(e.value)
    bad = tmp_path / "nolabel.tsv"
    bad.write_text("sentence\tscore\nfine film\t1\n")
    with pytest.raises(ConfigError, match="no 'label' column"):
        read_tsv(bad, "sst2")
    with pytest.raises(ConfigError, match="no SST-2/ folder"):
        _backend(bert, tmp_path)
    with pytest.raises(ConfigError, match="target_modules: 'q_proj' matches no linear"):
        _backend(bert, glue, target_modules=["q_proj"])
    be = _backend(bert, glue)
    with pytest.raises(ConfigError, match="target_modules: 'v_proj'"):
        be.init_modules([ModuleSpec(0, 4, target_modules=("v_proj",))])


def test_evaluate_cli_matches_run_and_rejects_bad_tsv(bert, glue, tmp_path, capsys):
    import json

    from fedopt.cli import main

    be = _backend(bert, glue, eval_cache_dtype="float16")
    params = _perturbed(be.init_modules(SPECS), seed=9)
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], bool)
    ev = be.evaluate(params, ens)
    be.save_run(tmp_path, params, ens)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path), "--tsv", str(glue / "SST-2" / "dev.tsv"), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["accuracy"] == ev.global_accuracy
    np.testing.assert_allclose(out["ue_accuracy"], ev.ue_accuracy)
    assert captured.err == ""  # SST-2 trains on train.tsv: dev.tsv shares no rows with it
    assert main(["evaluate", str(tmp_path), "--json"]) == 0  # the run's own split: all of dev
    assert json.loads(capsys.readouterr().out)["accuracy"] == ev.global_accuracy
    bad = tmp_path / "nolabel.tsv"
    bad.write_text("sentence\nfine film\n")
    assert main(["evaluate", str(tmp_path), "--tsv", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'label' column" in err and "\n" not in err


def test_evaluate_cli_rebuilds_the_runs_qnli_split_and_warns_on_its_training_rows(
        bert, tmp_path, capsys):
    """QNLI's dev.tsv is split 70/30 for a run. Without --tsv, ``fedopt evaluate`` rebuilds
    the held-back 30 % and reproduces the run's evaluation exactly; with --tsv dev.tsv it
    says how many rows the run trained on (the 70 training rows of load_task's split)."""
    import json

    from fedopt.cli import main

    glue = tmp_path / "glue"
    (glue / "QNLI").mkdir(parents=True)
    rows = [f"{i}\tq {i} {'why' if i % 3 else 'how'}?\ts {i} {'yes' if i % 3 else 'no'}.\t"
            f"{'entailment' if i % 3 else 'not_entailment'}\n" for i in range(100)]
    dev = glue / "QNLI" / "dev.tsv"
    dev.write_text("index\tquestion\tsentence\tlabel\n" + "".join(rows))
    be = _backend(bert, glue, task="qnli", max_length=16)
    params = _perturbed(be.init_modules(SPECS), seed=6)
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], bool)
    ev = be.evaluate(params, ens)
    run = tmp_path / "run"
    be.save_run(run, params, ens)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["n"] == 30 and out["tsv"] is None and "split" in out["data"]
    assert out["accuracy"] == ev.global_accuracy
    np.testing.assert_allclose(out["ue_accuracy"], ev.ue_accuracy)
    np.testing.assert_allclose(out["module_accuracy"], ev.module_accuracy)
    assert captured.err == ""
    assert main(["evaluate", str(run), "--json", "--device", "cpu", "--tsv", str(dev)]) == 0
    captured = capsys.readouterr()
    train, _, _ = load_task("qnli", glue, seed=be.options.seed)
    assert json.loads(captured.out)["n"] == 100
    (line,) = captured.err.splitlines()
    assert f"{len(train)} of its 100 rows are in the run's training part" in line and len(train) == 70


def test_evaluate_cli_scores_a_gpu_run_on_the_cpu(bert, glue, tmp_path, capsys):
    """A run trained with ``device: cuda`` (its backend.json says so) is scored where the user
    is: ``--device auto`` (the default) runs it on the CPU with the same result."""
    import json

    import torch

    from fedopt.cli import main

    be = _backend(bert, glue)
    params = _perturbed(be.init_modules(SPECS), seed=4)
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], bool)
    ev = be.evaluate(params, ens)
    be.save_run(tmp_path, params, ens)
    meta_path = tmp_path / "lora" / "backend.json"
    meta = json.loads(meta_path.read_text())
    meta["options"]["device"] = "cuda"  # as the run on the GPU wrote it
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    dev = str(glue / "SST-2" / "dev.tsv")
    assert main(["evaluate", str(tmp_path), "--tsv", dev, "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == ev.global_accuracy
    if not torch.cuda.is_available():
        assert main(["evaluate", str(tmp_path), "--tsv", dev, "--json"]) == 0  # auto: the CPU
        assert json.loads(capsys.readouterr().out)["accuracy"] == ev.global_accuracy
        assert main(["evaluate", str(tmp_path), "--tsv", dev, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "cuda" in err and "\n" not in err
    assert main(["evaluate", str(tmp_path), "--tsv", dev, "--device", "tpu"]) == 2
    assert "device" in capsys.readouterr().err


def test_packaged_minilm_fast_path_matches_full_model(tmp_path):
    """Integration: the real all-MiniLM-L6-v2 weights, fp32 cache, fast == peft loop."""
    data = write_sst2(tmp_path / "glue", n_train=120, n_dev=24)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = SystemConfig(K=2, batch=4, data_min=30, data_max=40)
    pop = draw_population(cfg, 0)
    kw = dict(data_dir=str(data), progress=False, log=lambda m: None, cache_dtype="float32")
    fast = LoraBackend(cfg, pop, 0, **kw)
    ref = LoraBackend(cfg, pop, 0, lora_path="reference", **kw)
    specs = [ModuleSpec(0, 4), ModuleSpec(1, 8)]
    params = _perturbed(fast.init_modules(specs), seed=3)
    ref.init_modules(specs)
    assert fast.n_layers == 6 and fast.encoder.config.hidden_size == 384
    pairs = PairBatch(np.array([0, 0, 1]), np.array([0, 1, 1]))
    a, b = fast.local_update(pairs, params, 1, 1.0), ref.local_update(pairs, params, 1, 1.0)
    for ua, ub in zip(a.updates, b.updates):
        for k in ua:
            np.testing.assert_allclose(ua[k], ub[k], atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.module_logits(params), ref.module_logits(params), atol=1e-4)


def test_float64_params_from_an_aggregation_rule_are_accepted(bert, glue):
    """HetLoRA/FlexLoRA aggregate in float64 (SVD); the fast path must take such params and
    give the float32 result (a regression: torch.baddbmm refused mixed dtypes)."""
    be = _backend(bert, glue)
    params = _perturbed(be.init_modules(SPECS))
    wide = [{k: v.astype(np.float64) for k, v in p.items()} for p in params]
    ens = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]], bool)
    a, b = be.evaluate(params, ens), be.evaluate(wide, ens)
    np.testing.assert_allclose(b.ue_loss, a.ue_loss, rtol=1e-6)
    pa, pb = be.probe(PAIRS, params), be.probe(PAIRS, wide)
    np.testing.assert_allclose(pb[0], pa[0], rtol=1e-6)


def test_prefix_cache_is_reused_only_for_the_same_prefix_and_data(bert, roberta, glue):
    """The schemes of one figure share a seed's split and the frozen model: the second backend
    reuses the first one's cache (even with other adapters above the cut), which equals a cache
    built from scratch; another model or another split gets its own."""
    from fedopt.backends.lora_batched import PrefixCache

    a = _backend(bert, glue)
    a.init_modules(SPECS)
    b = _backend(bert, glue)
    b.init_modules([ModuleSpec(0, 4)])  # FedLoRA-like: one module, another rank, same cut
    assert b.train.cache is a.train.cache and b.test.cache is a.test.cache
    fresh = PrefixCache(b.encoder, b.layers[b.first], b.train.examples, b.pad_id, torch.float32)
    assert torch.equal(fresh.flat, b.train.cache.flat) and torch.equal(fresh.offsets, b.train.cache.offsets)
    other_model = _backend(roberta, glue)
    other_model.init_modules([ModuleSpec(0, 4)])
    assert other_model.train.cache is not a.train.cache
    other_split = LoraBackend(CFG, POP, 1, model=str(bert), data_dir=str(glue), progress=False,
                              log=lambda msg: None, cache_dtype="float32")
    other_split.init_modules([ModuleSpec(0, 4)])
    assert other_split.train.cache is not a.train.cache
    assert not torch.equal(other_split.train.cache.lengths, a.train.cache.lengths) or \
        not torch.equal(other_split.train.cache.flat, a.train.cache.flat)


def test_adamw_fast_path_matches_peft_loop(bert, glue):
    """AdamW is elementwise (moments, bias correction, decoupled decay), so AdamW on the
    stacked pairs is per-pair AdamW: the fast path equals the plain peft loop."""
    kw = dict(local_optimizer="adamw", weight_decay=0.01)
    fast = _backend(bert, glue, **kw)
    ref = _backend(bert, glue, lora_path="reference", **kw)
    params = _perturbed(fast.init_modules(SPECS))
    ref.init_modules(SPECS)
    a = fast.local_update(PAIRS, params, 3, 1e-3)
    b = ref.local_update(PAIRS, params, 3, 1e-3)
    for ua, ub in zip(a.updates, b.updates):
        for k in ua:
            assert np.abs(ub[k]).max() > 1e-4, k  # AdamW moved every tensor (~lr a step)
            np.testing.assert_allclose(ua[k], ub[k], atol=1e-5, rtol=0, err_msg=k)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    np.testing.assert_allclose(a.grad_sq, b.grad_sq, rtol=1e-5)


def _manual_adamw(be, spec, params, rows_per_round, lr, opt_kw, shift=None):
    """An independent run of one pair: a fresh peft model of the module's config, one
    torch.optim.AdamW kept across local updates, each starting from the given θ_m.
    ``shift`` (C,): added to the logits in the loss (logit adjustment)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModel

    from fedopt.backends.lora_batched import pad_examples
    from fedopt.backends.lora_model import to_numpy, to_torch

    net = MeanPoolClassifier(AutoModel.from_pretrained(str(be.model_name)), 2)
    for q in net.parameters():
        q.requires_grad_(False)
    pm = get_peft_model(net, be.lora_config(spec)).eval()
    leaves = [q for q in pm.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(leaves, lr=lr, **opt_kw)
    out = []
    for theta, rows in zip(params, rows_per_round):
        set_peft_model_state_dict(pm, to_torch(theta))  # copies into the same tensors
        for r in rows:
            logits = pm(**pad_examples([be.train.examples[int(i)] for i in r], be.pad_id))
            if shift is not None:
                logits = logits + torch.as_tensor(shift, dtype=torch.float32)
            torch.nn.functional.cross_entropy(logits, torch.from_numpy(be.train.labels[r])).backward()
            opt.step()
            opt.zero_grad()
        new = to_numpy(get_peft_model_state_dict(pm))
        out.append({k: new[k] - theta[k] for k in new})
    return out


@pytest.mark.parametrize("path,split", [("fast", False), ("fast", True), ("reference", False)])
def test_adamw_kept_state_equals_one_optimizer_per_ue_and_module(path, split, bert, glue, monkeypatch):
    """optimizer_state: keep carries each (UE, module)'s AdamW state across local updates
    (also through state_dict), and pairs with different step counts share a batched pass;
    ``split`` forces one padding group per pair (long QNLI pairs do that), so several
    backward passes run through the leaf groups of one step."""
    from fedopt import safestate
    from fedopt.backends import lora_batched

    if split:
        monkeypatch.setattr(lora_batched, "plan_groups",
                            lambda lengths, rows, overhead=256: [[i] for i in range(len(lengths))])

    lr, steps = 1e-2, [2, 3, 2]
    opt_kw = dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    kw = dict(local_optimizer="adamw", adamw_beta1=0.8, adamw_beta2=0.99, adamw_eps=1e-6,
              weight_decay=0.05, lora_path=path)
    keep = _backend(bert, glue, optimizer_state="keep", **kw)
    reset = _backend(bert, glue, **kw)
    params = _perturbed(keep.init_modules(SPECS))
    reset.init_modules(SPECS)
    rounds = [PairBatch(np.array([0]), np.array([0])), PairBatch(np.array([0, 1]), np.array([0, 1])),
              PairBatch(np.array([0, 1, 2]), np.array([0, 1, 2]))]  # step counts 5, 3, 0 in round 3
    thetas, rows, got, got_reset = [], [], [], []
    for t, (pairs, I) in enumerate(zip(rounds, steps)):
        thetas.append([{k: v * (1 + 0.1 * t) for k, v in p.items()} for p in params])  # "aggregated"
        state = keep.state_dict()
        rows.append(keep.round_batches(pairs, I))
        keep.load_state_dict(state)
        if t == 2:  # resume from a checkpoint, as the runtime does
            keep2 = _backend(bert, glue, optimizer_state="keep", **kw)
            keep2.init_modules(SPECS)
            keep2.load_state_dict(safestate.loads(safestate.dumps(keep.state_dict(), "t"), "t"))
            keep = keep2
        got.append(keep.local_update(pairs, thetas[t], I, lr).updates)
        got_reset.append(reset.local_update(pairs, thetas[t], I, lr).updates)
    for k, m in [(0, 0), (1, 1), (2, 2)]:
        when = [t for t, p in enumerate(rounds) if k in p.ue]
        ref = _manual_adamw(keep, SPECS[m], [thetas[t][m] for t in when],
                            [rows[t][list(rounds[t].ue).index(k)] for t in when], lr, opt_kw)
        for t, u in zip(when, ref):
            mine = got[t][list(rounds[t].ue).index(k)]
            for key in u:
                np.testing.assert_allclose(mine[key], u[key], atol=1e-5, rtol=0, err_msg=f"{k} {t} {key}")
    bad = keep.state_dict()
    key = next(iter(bad["optim"][0]["exp_avg"]))
    bad["optim"][0]["exp_avg"][key] = bad["optim"][0]["exp_avg"][key][:1]
    with pytest.raises(ValueError, match="does not fit the module"):
        keep.load_state_dict(bad)
    # with a kept state the third round differs from a fresh AdamW (UE 0 and 1), not for UE 2
    assert max(np.abs(got[2][0][key] - got_reset[2][0][key]).max() for key in got[2][0]) > 1e-3
    for key in got[2][2]:
        np.testing.assert_allclose(got[2][2][key], got_reset[2][2][key], atol=1e-6)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_logit_adjustment_trains_on_the_prior_shifted_loss(path, bert, glue):
    """logit_adjustment τ: UE k's local loss is CE(z + τ log π̃_k, y), π̃_k its label shares with
    add-one smoothing, computed here from the backend's π_k and |D_k| and checked against an
    independent peft + AdamW loop on the shifted logits; test logits are not shifted."""
    tau, lr, steps = 0.7, 1e-2, 2
    kw = dict(local_optimizer="adamw", adamw_eps=1e-6, lora_path=path)  # eps: A's tiny gradients
    be = _backend(bert, glue, logit_adjustment=tau, **kw)
    plain = _backend(bert, glue, **kw)
    params = _perturbed(be.init_modules(SPECS))
    plain.init_modules(SPECS)
    n = be.data_sizes()[:, None].astype(float)
    counts = np.rint(be.label_dist * n)
    shift = tau * np.log((counts + 1) / (n + be.label_dist.shape[1]))
    assert np.ptp(shift, axis=1).max() > 0.1  # the tiny partition is skewed: the shift matters
    state = be.state_dict()
    rows = be.round_batches(PAIRS, steps)
    be.load_state_dict(state)
    got = be.local_update(PAIRS, params, steps, lr)
    base = plain.local_update(PAIRS, params, steps, lr)
    for i, (k, m) in enumerate(zip(PAIRS.ue, PAIRS.module)):
        ref = _manual_adamw(be, SPECS[m], [params[m]], [rows[i]], lr, {"eps": 1e-6, "weight_decay": 0.0},
                            shift=shift[k])[0]
        for key in ref:
            np.testing.assert_allclose(got.updates[i][key], ref[key], atol=1e-5, rtol=0, err_msg=key)
        assert max(np.abs(got.updates[i][key] - base.updates[i][key]).max() for key in ref) > 1e-4
    ens = np.ones((CFG.K, len(SPECS)), bool)  # evaluation is the plain model's
    assert be.evaluate(params, ens).global_loss == pytest.approx(plain.evaluate(params, ens).global_loss)
    with pytest.raises(ConfigError, match="logit_adjustment: must be a finite number >= 0"):
        _backend(bert, glue, logit_adjustment=-1.0)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_gamma_optimizer_is_adamws_first_step_decrease(path, bert, glue):
    """gamma: optimizer under AdamW reports G = Σ g²/(|g| + ε) (Γ = (η/2) G): checked against
    the gradient g that one plain SGD step at lr 1 measures (update = -g), and as AdamW's own
    first-step decrease -g·Δθ/η; under SGD it stays ||g||², MODEL.md's."""
    eps = 1e-6
    sgd = _backend(bert, glue, lora_path=path)
    params = _perturbed(sgd.init_modules(SPECS))
    state = sgd.state_dict()
    g = [{k: -u for k, u in upd.items()} for upd in sgd.local_update(PAIRS, params, 1, 1.0).updates]
    sgd.load_state_dict(state)
    expect = [sum(float((v ** 2 / (np.abs(v) + eps)).sum()) for v in gi.values()) for gi in g]
    adam = _backend(bert, glue, lora_path=path, local_optimizer="adamw", adamw_eps=eps, gamma="optimizer")
    adam.init_modules(SPECS)
    res = adam.local_update(PAIRS, params, 1, 1e-3)
    np.testing.assert_allclose(res.grad_sq, expect, rtol=1e-5)
    decrease = [-sum(float((gi[k] * u[k]).sum()) for k in u) / 1e-3 for gi, u in zip(g, res.updates)]
    np.testing.assert_allclose(res.grad_sq, decrease, rtol=1e-4)
    norm_sq = [sum(float((v ** 2).sum()) for v in gi.values()) for gi in g]
    assert min(r / q for r, q in zip(res.grad_sq, norm_sq)) > 1.5  # not ||g||²
    plain = _backend(bert, glue, lora_path=path, gamma="optimizer")  # SGD: the paper's ||g||²
    plain.init_modules(SPECS)
    np.testing.assert_allclose(plain.probe(PAIRS, params)[1], sgd.probe(PAIRS, params)[1], rtol=1e-12)
    with pytest.raises(ConfigError, match="gamma: must be 'gradient' or 'optimizer'"):
        _backend(bert, glue, gamma="adam")


def test_bf16_and_fp16_autocast_stay_close_to_fp32(bert, glue):
    """Autocast (matmuls in bf16 / fp16, the head, losses and updates in fp32; fp16 with loss
    scaling). Measured on this tiny encoder, one step at lr 1 (update = -grad), worst over
    tensors of max|Δ| / max|u|: bf16 0.021, fp16 0.009; losses 2e-5 and ||grad||^2 2.4e-4
    relative; logits 1.2e-4 absolute (scale 0.5). The bounds below leave a 2-5x margin."""
    exact = _backend(bert, glue, top_layers="all")
    params = _perturbed(exact.init_modules(SPECS))
    a = exact.local_update(PAIRS, params, 1, 1.0)
    la = exact.module_logits(params)
    for dtype, path, tol in [("bfloat16", "fast", 0.05), ("bfloat16", "reference", 0.05), ("float16", "fast", 0.02)]:
        low = _backend(bert, glue, top_layers="all", dtype=dtype, lora_path=path)
        low.init_modules(SPECS)
        b = low.local_update(PAIRS, params, 1, 1.0)
        for ua, ub in zip(a.updates, b.updates):
            for k in ua:
                assert np.abs(ua[k] - ub[k]).max() <= tol * np.abs(ua[k]).max(), (dtype, path, k)
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-4)
        np.testing.assert_allclose(b.grad_sq, a.grad_sq, rtol=1e-3)
        np.testing.assert_allclose(low.module_logits(params), la, atol=5e-4)
        assert low.compute.autocast().fast_dtype == getattr(torch, dtype)


def test_device_option(bert, glue, tmp_path, capsys):
    from fedopt.backends.lora import LoraOptions
    from fedopt.cli import main

    assert _backend(bert, glue, device="cpu").device.type == "cpu"
    auto = _backend(bert, glue)  # device: auto
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:-1", 0):
        with pytest.raises(ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
            LoraOptions(device=bad)
    with pytest.raises(ConfigError, match="dtype: must be one of float32, bfloat16, float16"):
        LoraOptions(dtype="half")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the no-CUDA error cannot be shown here")
    argv = ["simulate", "--set", "backend=lora", "--set", f"model={bert}", "--set", f"data_dir={glue}",
            "--set", "K=2", "--set", "rounds=1", "--out", str(tmp_path / "run"), "--quiet"]
    for device in ("cuda", "cuda:1"):
        capsys.readouterr()
        assert main(argv + ["--set", f"device={device}"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"device: {device} asked for" in err and "no CUDA device" in err and "\n" not in err


@pytest.mark.parametrize("mode", ["train", "held_out"])
def test_probe_rows_are_kept_out_of_local_training_when_held_out(mode, bert, glue):
    """``probe_rows: held_out``: no row of UE k's probe batch is ever in its training batches
    (three epochs of draws), which cover every other row; ``train`` draws all rows. The fast
    path's probe loss on the chosen rows equals the plain peft loop's."""
    be = _backend(bert, glue, probe_rows=mode, probe_batch=8)
    params = _perturbed(be.init_modules(SPECS))
    for k in range(CFG.K):
        ue = set(be._ue_rows[k].tolist())
        probe = set(be._probe_rows[k].tolist())
        assert probe <= ue and len(probe) == 8
        drawn = set(be._draw(k, 3 * be._ue_rows[k].size).tolist())
        if mode == "held_out":
            assert drawn.isdisjoint(probe) and drawn | probe == ue  # trains on every other row
        else:
            assert drawn == ue
    loss, _ = be.probe(PAIRS, params)
    ref = _backend(bert, glue, probe_rows=mode, probe_batch=8, lora_path="reference")
    ref.init_modules(SPECS)
    ref_loss, _ = ref.probe(PAIRS, params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)


def test_probe_rows_rejects_an_unknown_mode_and_a_one_sample_ue(bert, glue):
    with pytest.raises(ConfigError, match="probe_rows"):
        _backend(bert, glue, probe_rows="validation")
    one = SystemConfig(K=2, batch=1, data_min=1, data_max=1)
    with pytest.raises(ConfigError, match="held_out needs at least 2 samples per UE; UE 0 has 1"):
        LoraBackend(one, draw_population(one, 0), 0, model=str(bert), data_dir=str(glue),
                    progress=False, log=lambda msg: None, probe_rows="held_out")
