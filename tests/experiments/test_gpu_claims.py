"""benchmarks/gpu_claims.py on a hand-made root of figure parts: finished parts (CSVs), a part
cut by its time limit (a checkpoint), a damaged checkpoint and several seeds. Every expected
number is worked out by hand from the curves written here."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from fedopt.fl.checkpoint import CHECKPOINT, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_claims.py"


def _csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _fig4(scheme: str, seed: int, acc: list[float], energy: list[float]) -> list[dict]:
    return [{"scheme": scheme, "seed": seed, "round": t + 1, "accuracy": a, "global_accuracy": a,
             "energy": e} for t, (a, e) in enumerate(zip(acc, energy))]


def _claims(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(root), *args],
                          capture_output=True, text=True, timeout=120)


def test_claims_from_finished_cut_and_damaged_parts(tmp_path):
    # Fig. 4: proposed on two seeds (seed 1 ran one round more: only the common 4 count),
    # mean curve 0.6 0.7 0.8 0.9; energy scheme at half the energy; greedy cut after 3 rounds.
    _csv(tmp_path / "fig4a/fig4/fig4.csv",
         _fig4("proposed", 0, [0.5, 0.6, 0.7, 0.8], [10] * 4)
         + _fig4("proposed", 1, [0.7, 0.8, 0.9, 1.0, 1.0], [10] * 5)
         + _fig4("energy", 0, [0.9] * 4, [5] * 4))
    save_checkpoint({"config": {"K": 100, "seed": 0},
                     "rows": [{"global_accuracy": 0.5, "energy": 8.0}] * 3},
                    tmp_path / "fig4b/fig4/runs/seed0/greedy")
    bad = tmp_path / "fig4c/fig4/runs/seed0/one_shot" / CHECKPOINT
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    # Fig. 2 at K = 100, window 1: proposed first reaches 0.8 at round 2, FedLoRA at round 3.
    _csv(tmp_path / "fig2a/fig2/fig2_curves.csv",
         [{"K": 100, "seed": 0, "scheme": s, "round": t + 1, "accuracy": a}
          for s, acc in (("proposed", [0.5, 0.9, 0.9]), ("fedlora", [0.5, 0.6, 0.85]))
          for t, a in enumerate(acc)])

    r = _claims(tmp_path, "--target", "0.8", "--window", "1", "--final-window", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # Over rounds 1-3 (greedy's), the last 2: proposed (0.7 + 0.8) / 2, greedy 0.5, energy 0.9.
    assert "| 4b | proposed − greedy: +25.0 points (0.750 vs 0.500) | rounds 1-3, last 2 |" in out
    # Energy over rounds 1-3: 15 J against 30 J.
    assert "| 4c | energy constraint: +15.0 points (0.900 vs 0.750) for 50.0 % less energy" in out
    assert "4a" not in out  # one-shot's only checkpoint is damaged
    assert "skipped" in r.stderr and "one_shot" in r.stderr and len(r.stderr.splitlines()) == 1
    assert "| 2a | Algorithm 2's rounds to 0.8 by K: K = 100: 2 |" in out
    assert "| 2b | K = 100: Algorithm 2 2 vs fedlora 3 rounds (33.3 % fewer; inf: not reached)" in out


def test_root_that_is_not_a_folder_is_exit_2(tmp_path):
    r = _claims(tmp_path / "missing")
    assert r.returncode == 2 and "is not a folder" in r.stderr
