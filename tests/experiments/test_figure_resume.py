"""A figure killed mid-run continues each run in flight from its checkpoint (``--resume``):
the resumed figure's CSV equals an uninterrupted run's, a stored run's checkpoint is used (not
recomputed), and a checkpoint of another config is said once and started over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedopt import safestate
from fedopt.experiments.training import run_config, run_one
from fedopt.fl.checkpoint import CHECKPOINT, KIND

ROOT = Path(__file__).resolve().parents[2]
SETS = ["--seeds", "1", "--set", "rounds=24", "--set", "checkpoint_every=6"]


def _fig4(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedopt", "experiment", "fig4", "--quick", "--no-progress",
            *SETS, "--out", str(out), *extra]


def test_fig4_killed_mid_run_resumes_to_the_same_csv(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_fig4(full), cwd=ROOT, check=True, capture_output=True, timeout=600)
    runs = killed / "fig4" / "runs" / "seed0"
    proc = subprocess.Popen(_fig4(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    second = runs / "greedy" / CHECKPOINT  # the schemes run proposed, greedy, ...
    deadline = time.monotonic() + 600
    while not second.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert second.exists() and not (runs.parent / "seed0.json").exists()

    # proposed had finished (its checkpoint holds all 24 rounds), greedy had not. Mark one row
    # of each (re-signed) to show that the resume continues from them rather than starting
    # over, which would give the same numbers.
    for scheme, row, value in (("proposed", 5, 0.987654), ("greedy", 2, 0.876543)):
        path = runs / scheme / CHECKPOINT
        state = safestate.loads(path.read_bytes(), KIND)
        assert (state["t"] == 24) == (scheme == "proposed") and state["t"] >= 6
        state["rows"][row]["global_accuracy"] = value
        path.write_bytes(safestate.dumps(state, KIND))

    done = subprocess.run(_fig4(killed, "--resume"), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    a = (full / "fig4" / "fig4.csv").read_text().splitlines()
    b = (killed / "fig4" / "fig4.csv").read_text().splitlines()
    marked = [y for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and len(marked) == 2  # the marked rows; all else is equal
    assert marked[0].startswith("proposed,0,") and "0.987654" in marked[0]
    assert marked[1].startswith("greedy,0,") and "0.876543" in marked[1]
    assert not runs.exists() and (runs.parent / "seed0.json").is_file()


def test_a_checkpoint_of_another_config_starts_over_with_one_line(tmp_path, capsys):
    cfg = {"run": {"K": 6, "rounds": 6, "checkpoint_every": 2}}
    folder = tmp_path / "fedlora"
    run_one("fedlora", run_config(cfg, "synthetic", 0), folder)
    other = run_config(cfg, "synthetic", 0, lr=0.02)
    capsys.readouterr()
    resumed = run_one("fedlora", other, folder, resume=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config" in err[0] and "starts over" in err[0]
    assert "--resume: " not in err[0]
    fresh = run_one("fedlora", other)
    for key in ("accuracy", "global_accuracy", "energy", "received"):
        assert resumed[key] == fresh[key]
