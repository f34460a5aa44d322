"""The run config: one flat namespace, validated; bad input is one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedopt.errors import ConfigError
from fedopt.fl.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


def test_flat_namespace_splits_keys():
    cfg = RunConfig.load(QUICK, ["rounds=7", "K=12", "P_max=100 mW", "classes=5", "policy=greedy"])
    assert cfg.rounds == 7 and cfg.policy == "greedy"
    assert cfg.system.K == 12 and cfg.system.P_max == pytest.approx(0.1)
    assert cfg.backend_options["classes"] == 5 and cfg.backend_options["features"] == 64
    flat = cfg.to_flat_dict()
    assert flat["K"] == 12 and flat["classes"] == 5 and flat["rounds"] == 7
    assert RunConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg  # config.yaml round-trips


def test_M_override_resets_ranks():
    cfg = RunConfig.load(QUICK, ["M=1", "M_max=1"])
    assert cfg.system.ranks == (8,)


@pytest.mark.parametrize("sets, match", [
    (["polcy=greedy"], "unknown key 'polcy'; did you mean 'policy'"),
    (["policy=magic"], "policy: unknown value 'magic'"),
    (["normalize=mean"], "normalize"),
    (["rounds=0"], "rounds"),
    (["M_max=4"], "M_max: 4 exceeds M = 3"),
    (["K=0"], "K:"),
    (["data_dir=/nonexistent/fedopt-data"], "data_dir"),
    (["backend=tpu"], "backend: unknown backend 'tpu'"),
])
def test_bad_keys_raise_config_error(sets, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.load(QUICK, sets)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedopt", "simulate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sets, word", [
    (["policy=oracle"], "policy"),
    (["M_max=5"], "M_max"),
    (["K=0"], "K"),
    (["data_dir=/nonexistent/fedopt-data"], "data_dir"),
])
def test_cli_bad_config_is_one_line_exit_2(tmp_path, sets, word):
    args = ["--config", str(QUICK), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_resume_with_a_different_config_is_one_line_exit_2(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    RunConfig.load(QUICK).to_yaml(run / "config.yaml")
    proc = _cli("--resume", str(run), "--set", "K=7")  # rounds is the one key that may change
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "different config" in lines[0] and "K: " in lines[0]
    proc = _cli("--config", str(QUICK), "--set", "seed=3", "--resume", str(run))
    assert proc.returncode == 2 and "seed" in proc.stderr
    proc = _cli("--resume", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
