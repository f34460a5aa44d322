"""``fedopt validate bandwidth|power``: tables, CSV, target registry, bad arguments."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

FEDOPT = Path(sys.executable).parent / "fedopt"


def fedopt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEDOPT), *args], capture_output=True, text=True, timeout=300)


def test_validate_bandwidth_in_process(tmp_path, capsys):
    from fedopt.cli import main

    out = tmp_path / "bw.csv"
    rc = main(["validate", "bandwidth", "--regime", "noise-limited", "--instances", "4",
               "--sizes", "2,3", "--methods", "auto,lambertw,alg1,ipopt", "--csv", str(out),
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "budget binds" in text and "auto" in text and "alg1" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16
    auto = [r for r in rows if r["method"] == "auto"]
    assert all(r["status"] == "optimal" and float(r["gap"]) <= 1e-9 for r in auto)
    assert all(float(r["rel_to_best"]) <= 1e-9 for r in auto)


def test_validate_power_in_process(tmp_path, capsys):
    from fedopt.cli import main

    out = tmp_path / "pw.csv"
    rc = main(["validate", "power", "--regime", "defaults", "--instances", "3",
               "--methods", "auto,bounded,max", "--csv", str(out), "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["method"] for r in rows} == {"auto", "bounded", "max"}
    assert all(float(r["rel_to_best"]) <= 1e-12 for r in rows if r["method"] == "auto")


def test_targets_registry_accepts_other_modules():
    from fedopt.cli import validate

    assert {"bandwidth", "power"} <= set(validate.TARGETS)
    assert "round" in validate.EXTERNAL and "online" in validate.EXTERNAL
    calls = []
    validate.register("demo", lambda p: p.add_argument("--x", type=int, default=1),
                      lambda a: calls.append(a.x) or 0, "demo target")
    try:
        from fedopt.cli import main

        assert main(["validate", "demo", "--x", "5"]) == 0
        assert calls == [5]
    finally:
        validate.TARGETS.pop("demo")


@pytest.mark.parametrize("args, needle", [
    (["--methods", "auto,simplex"], "unknown method 'simplex'"),
    (["--instances", "0"], "argument --instances: must be an integer >= 1"),
    (["--sizes", "a,b"], "argument --sizes: entry 'a' of 'a,b': expected an integer"),
    (["--regime", "weird"], "invalid choice"),
])
def test_validate_bad_arguments_one_line_exit_2(args, needle, capsys):
    from fedopt.cli import main

    try:
        rc = main(["validate", "bandwidth", *args])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_console_script_validate_help():
    r = fedopt("validate", "--help")
    assert r.returncode == 0 and "bandwidth" in r.stdout and "power" in r.stdout
