"""Resume: a run SIGKILLed right after its checkpoint at round T/2 and resumed ends with the
same summary.json (and metrics.csv) as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedopt.fl.checkpoint import CHECKPOINT, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"
T = 24
SETS = ["--set", f"rounds={T}", "--set", f"checkpoint_every={T // 2}", "--set", "K=20",
        "--set", "mobility_step=5", "--set", "probe_fraction=0.5", "--set", "eval_every=3"]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedopt", "simulate", "--quiet", *args]


def test_sigkill_at_half_then_resume_gives_identical_summary(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd("--config", str(QUICK), *SETS, "--out", str(full)), cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd("--config", str(QUICK), *SETS, "--out", str(killed)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / CHECKPOINT
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    if (killed / "summary.json").exists():
        pytest.fail("the run finished before the kill; make the run longer")
    assert load_checkpoint(killed)["t"] == T // 2  # killed after the round-T/2 checkpoint
    subprocess.run(_cmd("--resume", str(killed)), cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    for name in ("summary.json", "metrics.csv", "config.yaml"):  # byte for byte
        assert (full / name).read_bytes() == (killed / name).read_bytes(), name
    assert json.loads((killed / "summary.json").read_text())["rounds"] == T


def test_lora_run_resumes_exactly_from_its_checkpoint(tmp_path, tiny_bert, tiny_glue):
    """The LoRA backend's modules and sampling state survive checkpoint.npz: a run stopped
    after round 2 and resumed writes the same summary, metrics and adapters, byte for byte."""
    pytest.importorskip("peft")
    from fedopt.fl import RunConfig, Simulation
    from fedopt.fl.checkpoint import save_checkpoint

    run = RunConfig.from_dict({
        "backend": "lora", "K": 4, "M": 2, "ranks": [2, 4], "M_max": 2, "beta": 0.5, "rounds": 3,
        "rho": 1e-4, "model": str(tiny_bert), "data_dir": str(tiny_glue), "progress": False,
        "cache_dtype": "float32", "data_min": 30, "data_max": 60, "batch": 4,
        "checkpoint_every": 0})
    full, part = tmp_path / "full", tmp_path / "part"
    Simulation(run, full, progress=False).run()
    first = Simulation(run, part, progress=False)
    first.step()
    first.step()
    save_checkpoint(first.state_dict(), part)
    Simulation(run, part, progress=False).run(resume=True)
    for name in ("summary.json", "metrics.csv", "lora/m0/adapter_model.safetensors",
                 "lora/m1/adapter_model.safetensors", "lora/ensembles.json"):
        assert (full / name).read_bytes() == (part / name).read_bytes(), name


def test_resume_with_more_rounds_extends_a_finished_run_exactly(tmp_path):
    """A finished run of T/2 rounds, resumed with --set rounds=T, writes what one run of T
    rounds writes (eval_every divides T/2, so both evaluate the same rounds)."""
    full, short = tmp_path / "full", tmp_path / "short"
    subprocess.run(_cmd("--config", str(QUICK), *SETS, "--out", str(full)), cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    subprocess.run(_cmd("--config", str(QUICK), *SETS, "--set", f"rounds={T // 2}",
                        "--out", str(short)), cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    assert load_checkpoint(short)["t"] == T // 2
    subprocess.run(_cmd("--resume", str(short), "--set", f"rounds={T}"), cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    for name in ("summary.json", "metrics.csv", "config.yaml"):  # byte for byte
        assert (full / name).read_bytes() == (short / name).read_bytes(), name


def test_resume_cannot_cut_a_run_below_its_checkpoint_or_change_another_key(tmp_path):
    out = tmp_path / "run"
    subprocess.run(_cmd("--config", str(QUICK), *SETS, "--set", f"rounds={T // 2}",
                        "--out", str(out)), cwd=ROOT, check=True, capture_output=True, timeout=300)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for extra, says in ((["--set", f"rounds={T // 2 - 1}"], "has run 12 rounds"),
                        (["--set", f"rounds={T}", "--set", "K=21"], "K: 20 there, 21 now")):
        r = subprocess.run(_cmd("--resume", str(out), *extra), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing lost


def test_lora_run_extends_exactly(tmp_path, tiny_bert, tiny_glue):
    """The LoRA backend: a finished 2-round run extended to 3 rounds writes the adapters of
    one 3-round run, byte for byte."""
    pytest.importorskip("peft")
    from fedopt.fl import RunConfig, Simulation

    base = {"backend": "lora", "K": 4, "M": 2, "ranks": [2, 4], "M_max": 2, "beta": 0.5,
            "rho": 1e-4, "model": str(tiny_bert), "data_dir": str(tiny_glue), "progress": False,
            "cache_dtype": "float32", "data_min": 30, "data_max": 60, "batch": 4,
            "checkpoint_every": 0, "local_optimizer": "adamw", "optimizer_state": "keep"}
    full, part = tmp_path / "full", tmp_path / "part"
    Simulation(RunConfig.from_dict({**base, "rounds": 3}), full, progress=False).run()
    Simulation(RunConfig.from_dict({**base, "rounds": 2}), part, progress=False).run()
    Simulation(RunConfig.from_dict({**base, "rounds": 3}), part, progress=False).run(resume=True)
    for name in ("metrics.csv", "lora/m0/adapter_model.safetensors",
                 "lora/m1/adapter_model.safetensors", "lora/ensembles.json"):
        assert (full / name).read_bytes() == (part / name).read_bytes(), name


def test_resume_conflicts_lists_every_key_but_rounds():
    """Brute force over the key set: a key differs when its value does or when one side lacks
    it (absent is not the same as None); rounds never conflicts."""
    from fedopt.fl.config import RunConfig, resume_conflicts

    base = RunConfig.load(QUICK).to_flat_dict()
    assert resume_conflicts(base, dict(base)) == []
    assert resume_conflicts(base, {**base, "rounds": base["rounds"] + 7}) == []
    changed = {**base, "K": base["K"] + 1, "seed": base["seed"] + 1, "rounds": 1}
    assert resume_conflicts(base, changed) == sorted(["K", "seed"])
    none_key = next(k for k, v in base.items() if v is None)
    lacking = {k: v for k, v in base.items() if k != none_key}
    assert resume_conflicts(base, lacking) == [none_key]
