"""The paper-scale configs (experiments/configs/fig{2,4}_paper*.yaml) parse to the paper's scale
and run end to end with --quick, here on the tiny random encoder and synthetic GLUE folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import sentences  # noqa: E402  (tests/conftest.py)

from fedopt.experiments.common import load_experiment  # noqa: E402
from fedopt.fl.config import RunConfig  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@pytest.mark.parametrize("name", ["fig2_paper", "fig4_paper", "fig2_paper_roberta", "fig4_paper_roberta"])
def test_paper_configs_are_at_the_paper_scale(name):
    cfg = load_experiment(name[:4], CONFIGS / f"{name}.yaml")
    run = RunConfig.from_dict({**cfg["run"], "backend": "lora"})
    opts = run.backend_options
    assert (opts["top_layers"], opts["dtype"], opts["device"]) == ("all", "bfloat16", "auto")
    assert opts["model"] == ("roberta-base" if "roberta" in name else None)
    assert cfg["seeds"] == 1
    if name.startswith("fig2"):
        assert max(cfg["K"]) == 100 and run.rounds == 150 and cfg["lora_task"] == "sst2"
    else:
        assert run.system.K == 100 and run.rounds == 200 and cfg["lora_task"] == "qnli"
    quick = load_experiment(name[:4], CONFIGS / f"{name}.yaml", quick=True)
    q = RunConfig.from_dict({**quick["run"], "backend": "lora"})
    assert q.rounds <= 2 and q.backend_options["model"] is None and q.backend_options["dtype"] == "float32"
    header = (CONFIGS / f"{name}.yaml").read_text()
    assert "measured run time:" in header and "docs/RESULTS.md" in header


@pytest.fixture(scope="module")
def glue2(tmp_path_factory, tiny_glue) -> Path:
    """The tiny SST-2 folder plus a QNLI dev.tsv (QNLI here has its dev split only)."""
    root = tmp_path_factory.mktemp("glue2")
    (root / "SST-2").symlink_to(tiny_glue / "SST-2")
    rng = np.random.default_rng(1)
    s, y = sentences(rng, 240)
    q, _ = sentences(rng, 240)
    d = root / "QNLI"
    d.mkdir()
    (d / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n" + "".join(
        f"{i}\t{a}?\t{b}.\t{'entailment' if c else 'not_entailment'}\n" for i, (a, b, c) in enumerate(zip(q, s, y))))
    return root


@pytest.mark.parametrize("fig", ["fig2", "fig4"])
def test_paper_config_runs_quick(fig, tiny_bert, glue2, tmp_path, capsys):
    from fedopt.cli import main

    rc = main(["experiment", fig, "--backend", "lora", "--config", str(CONFIGS / f"{fig}_paper.yaml"),
               "--quick", "--set", f"model={tiny_bert}", "--set", f"data_dir={glue2}",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / fig / "summary.json").read_text())
    assert summary
    config = (tmp_path / fig / "config.yaml").read_text()
    assert "top_layers: 1" in config and "dtype: float32" in config
