"""Input files that are not regular files (a FIFO, /dev/zero), deeply nested JSON, damaged
figure stores and the mode of atomically written results: one stderr line, no traceback,
no hang, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedopt.cli import main
from fedopt.experiments.training import run_groups
from fedopt.runfolder import atomic_write_text

DEEP = "[" * 100_000 + "]" * 100_000


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedopt", *argv], capture_output=True,
                          text=True, timeout=20)


def _one(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def fifo(tmp_path) -> Path:
    p = tmp_path / "fifo1"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("argv", [
    ["simulate", "--config", "{}", "--out", "{out}"],
    ["solve", "bandwidth", "{}"],
    ["channel", "check", "--config", "{}"],
    ["evaluate", "{out}", "--tsv", "{}"],
])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_non_regular_input_is_one_line_exit_2(tmp_path, fifo, argv, special):
    path = str(fifo) if special == "fifo" else special
    out = tmp_path / "out"
    out.mkdir()
    proc = _cli(*[a.format(path, out=out) for a in argv])
    assert proc.returncode == 2, proc.stderr
    line = _one(proc.stderr)
    assert path in line and "not a regular file" in line, line
    assert list(out.iterdir()) == []


def test_deep_json_in_a_lora_run_folder_is_one_line(tmp_path, capsys):
    from fedopt.backends.lora import _run_json
    from fedopt.errors import ConfigError

    for name in ("backend.json", "ensembles.json"):
        (tmp_path / name).write_text(DEEP)
        with pytest.raises(ConfigError, match="nested too deeply") as exc:
            _run_json(tmp_path, name)
        assert name in str(exc.value) and "\n" not in str(exc.value)


def _double(x, *, folder, resume):
    return {"v": [x]}


def _check(result):
    return None if isinstance(result, dict) and isinstance(result.get("v"), list) else "bad"


@pytest.mark.parametrize("content", [
    "", '{"key": "k"', b"\xff\xfe", "[1, 2]", DEEP, "RESULT_NULL", "RESULT_RUNS5",
])
def test_a_damaged_store_is_recomputed_with_one_warning(tmp_path, capsys, content):
    store = tmp_path / "runs"
    tasks = [("g0", 3)]
    run_groups(_double, tasks, store, check=_check)
    path = store / "g0.json"
    good = json.loads(path.read_text())
    if content == "RESULT_NULL":
        content = json.dumps({**good, "result": None})
    elif content == "RESULT_RUNS5":
        content = json.dumps({**good, "result": {"runs": 5}})
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    capsys.readouterr()
    out = run_groups(_double, tasks, store, resume=True, check=_check)
    assert out == {"g0": {"v": [3]}}
    line = _one(capsys.readouterr().err)
    assert str(path) in line and "recomputed" in line, line
    assert json.loads(path.read_text()) == good


def test_fig4_store_checks(tmp_path):
    from fedopt.experiments.fig4 import _seed_misfit

    run = {k: [0.5, 0.6] for k in ("accuracy", "global_accuracy", "energy", "received",
                                   "subscriptions")}
    run["slots_per_round"] = 1
    assert _seed_misfit({"runs": {"proposed": run}, "budget": None}, ["proposed"]) is None
    for bad in ({"runs": 5, "budget": None}, None, {"runs": {}, "budget": None},
                {"runs": {"proposed": {**run, "energy": ["x", "y"]}}, "budget": None},
                {"runs": {"proposed": run}, "budget": "x"}):
        assert _seed_misfit(bad, ["proposed"]), bad


def test_atomic_writes_get_the_mode_of_open(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640


def test_an_in_process_fifo_config_does_not_block(fifo, tmp_path, capsys):
    assert main(["simulate", "--config", str(fifo), "--out", str(tmp_path / "o")]) == 2
    assert "not a regular file" in _one(capsys.readouterr().err)
