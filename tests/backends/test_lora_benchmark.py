"""benchmarks/lora_round.py runs in its reduced mode and writes its table (no timing asserted:
speed is measured by running the benchmark, not by tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_quick_benchmark_writes_markdown_and_json(tmp_path):
    import lora_round

    out = tmp_path / "bench.json"
    assert lora_round.main(["--quick", "--device", "cpu", "--dtype", "float32,bfloat16", "--repeats", "1",
                            "--steps", "2", "--batch", "4", "--encoders", "MiniLM-L6 (tiny)", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["P"] == 4
    for dt in ("float32", "bfloat16"):
        assert row["cells"][dt]["batched"] > 0 and row["cells"][dt]["naive"] > 0
    assert data["meta"]["vs_fp32"]["MiniLM-L6 (tiny)"]["bfloat16"] < 0.1  # autocast stays close
    md = out.with_suffix(".md").read_text()
    assert "| MiniLM-L6 (tiny) | 4 |" in md and "ratio bf16" in md


def test_benchmark_stops_at_its_time_bound(tmp_path):
    import lora_round

    out = tmp_path / "bench.json"
    assert lora_round.main(["--quick", "--device", "cpu", "--dtype", "float32", "--repeats", "1",
                            "--max-seconds", "0.001", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "stopped at the" in data["meta"]["note"]
    assert all("batched" not in c for r in data["rows"] for c in r["cells"].values())
