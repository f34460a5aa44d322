"""Shared test fixtures: a small synthetic SST-2 folder and a tiny randomly initialised BERT
(no weights from any hub), for the LoRA backend and the figures on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

POS = ["good", "great", "fine", "love", "nice", "superb"]
NEG = ["bad", "awful", "poor", "hate", "dull", "boring"]
FILL = ["the", "movie", "was", "a", "plot", "and", "it", "film", "story", "actors", "very"]


def sentences(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    y = rng.integers(0, 2, n)
    out = []
    for label in y:
        words = list(rng.choice(FILL, rng.integers(2, 18)))
        for _ in range(rng.integers(1, 3)):
            words.insert(rng.integers(0, len(words) + 1), rng.choice(POS if label else NEG))
        out.append(" ".join(words))
    return out, y


def write_sst2(root: Path, n_train: int = 400, n_dev: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "SST-2"
    d.mkdir(parents=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        s, y = sentences(rng, n)
        (d / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{a} \t{b}\n" for a, b in zip(s, y)))
    return root


def tiny_model(folder: Path, kind: str) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

    from fedopt.backends.lora_model import default_model_path

    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    common = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=96, type_vocab_size=2)
    torch.manual_seed(0)
    if kind == "bert":
        model = BertModel(BertConfig(**common))
    else:
        model = RobertaModel(RobertaConfig(**common, pad_token_id=tok.pad_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    return tiny_model(tmp_path_factory.mktemp("bert"), "bert")


# Slow end-to-end tests (real Flower deployments, Ray, long solver sweeps) run on request:
# `pytest --run-slow` or FEDOPT_RUN_SLOW=1 (`make test-slow`). Each has a fast version that
# `make test` and CI run.
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if config.getoption("--run-slow") or os.environ.get("FEDOPT_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
