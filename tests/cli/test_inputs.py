"""The CLI's input layer: every bad option, path, list and config value is one stderr line
naming it, exit code 2, before any work (nothing is written), never a traceback.

The cases are data in ``bad_inputs.py`` (reusable by other modules); this module runs them
in-process, checks the helpers directly, and fuzzes YAML configs with hypothesis
(``FEDOPT_FUZZ_EXAMPLES`` examples, default 200).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from bad_inputs import (
    ARGV_CASES,
    BASE_YAML,
    BW,
    CONFIG_CASES,
    CONFIG_COMMANDS,
    assert_one_line_error,
    fill,
    make_fixtures,
    run_cli,
    snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedopt.config import SystemConfig, load_yaml
from fedopt.errors import ConfigError
from fedopt.files import check_output_dir, check_output_file, read_text
from fedopt.fl.config import RunConfig


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Fixture files in tmp_path, which is also the working folder (default --out paths)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path, make_fixtures(tmp_path)


def _check_case(capsys, world, argv, expected):
    tmp, values = world
    before = snapshot(tmp)
    r = run_cli(capsys, fill(argv, values))
    assert_one_line_error(r, expected.format(**values))
    assert snapshot(tmp) == before, "a refused command created or changed a file"


@pytest.mark.parametrize("argv, expected", ARGV_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_is_one_line_exit_2(capsys, world, argv, expected):
    _check_case(capsys, world, argv, expected)


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
@pytest.mark.parametrize("name, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_file_is_one_line_exit_2(capsys, world, command, name, expected):
    _check_case(capsys, world, [*CONFIG_COMMANDS[command], "--config", f"{{{name}}}"], expected)


def test_validate_round_error_is_on_its_own_line(capsys, world):
    """The config error comes before the progress bar: stderr holds nothing but the error."""
    r = run_cli(capsys, ["validate", "round", "--set", "alpha=1", "--K", "3", "--instances", "1"])
    assert r.returncode == 2
    assert r.stderr.startswith("fedopt validate: error: alpha") and r.stderr.count("\n") == 1


def test_solver_error_exits_1_with_one_line(capsys, world, monkeypatch):
    """A solver that returns status 'error' (NaN point) prints its result, JSON-safe, and one
    stderr line; exit code 1, for the table and for --json."""
    import fedopt.solvers as solvers
    from fedopt.solvers import Solution

    def failing(inst, method="auto", **kw):
        return Solution(x=np.full(2, np.nan), objective=math.nan, status="error", method="alg1",
                        extras={"native_status": "boom"})

    monkeypatch.setattr(solvers, "solve_bandwidth", failing)
    for extra in ([], ["--json"]):
        r = run_cli(capsys, ["solve", "bandwidth", BW, *extra])
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and "alg1" in r.stderr and "status error" in r.stderr
        if extra:
            out = json.loads(r.stdout)
            assert out["status"] == "error" and out["objective"] is None and out["x"] == [None, None]


def test_good_values_pass(capsys, world):
    """The types accept what they should: the boundary values of each interval."""
    from fedopt.cli._types import fraction, int_list, open_fraction, positive_float_list, seed

    assert fraction("1") == 1.0 and open_fraction("1e-300") == 1e-300 and seed("0") == 0
    assert int_list(" 3, 5 ,8") == [3, 5, 8] and positive_float_list("20,40.5") == [20.0, 40.5]
    r = run_cli(capsys, ["solve", "bandwidth", BW, "--tol", "0.5", "--time-limit", "1e-3",
                         "--json", "--method", "alg1"])
    assert r.returncode == 0, r.stderr


# --- the helpers -----------------------------------------------------------------------------


def test_read_text_errors_name_the_path(tmp_path):
    (tmp_path / "latin1.tsv").write_bytes("caf\xe9\n".encode("latin-1"))
    for path, words in ((tmp_path / "latin1.tsv", "not UTF-8"), (tmp_path / "nope", "not found"),
                        (tmp_path, "is a folder"), (Path("/proc/self/mem"), "cannot read")):
        with pytest.raises(ConfigError, match=words) as exc:
            read_text(path, "--tsv")
        assert str(exc.value).startswith("--tsv: ") and str(path) in str(exc.value)


def test_output_checks_leave_nothing_behind(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    assert check_output_dir(deep, "--out") == deep
    assert check_output_file(tmp_path / "x" / "y.csv", "--csv")
    assert list(tmp_path.iterdir()) == []  # the probe removed what it created
    (tmp_path / "keep.csv").write_text("old\n")
    check_output_file(tmp_path / "keep.csv", "--csv")
    assert (tmp_path / "keep.csv").read_text() == "old\n"


def test_yaml_duplicate_keys_and_merge_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("K: 5\nbeta: 0.1\nK: 6\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'K' at line 3"):
        load_yaml(p)
    # a merge key ("<<") may be overridden: that is not a duplicate
    p.write_text("base: &b {K: 5, beta: 0.1}\nrun:\n  <<: *b\n  K: 6\n")
    assert load_yaml(p)["run"] == {"K": 6, "beta": 0.1}


# --- fuzz: mutated YAML configs through config loading ----------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("FEDOPT_FUZZ_EXAMPLES", "200"))
_BASE = yaml.safe_load(BASE_YAML) | {"alpha_dir": 0.5, "beta": 0.3, "P_max": "23 dBm",
                                      "ranks": [4, 8], "mobility_step": 0.0, "seed": 1}
_KEYS = sorted(set(_BASE) | {"rounds", "policy", "cell_radius", "lr", "probe_fraction", "N0",
                             "backend", "dense", "separation", "eval_every", "T_max"})
_TOKENS = [".nan", ".inf", "-.inf", "1e999", "-1", "0", "-0.0", "1e308", "9" * 40, "true", "null",
           "~", "[]", "{}", "[1, .nan]", "'1.0'", "0x1F", "1_000", "!!python/name:os.system",
           "*a", "&a 3", "[", "{", "'", "-", "2023-01-01", "1e-400", "\t"]

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 10**20), st.floats()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def yaml_bytes(draw) -> bytes:
    data = dict(_BASE)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_KEYS))
        if draw(st.booleans()):
            data[key] = draw(values)
        elif key in data and isinstance(data[key], (int, float)) and not isinstance(data[key], bool):
            data[key] = -data[key] * draw(st.sampled_from([1, 10**300, 1e300]))  # sign, magnitude
        else:
            data.pop(key, None)
    lines = yaml.safe_dump(data, sort_keys=False).splitlines()
    rnd = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(0, 2))):  # text-level mutations the dumper never makes
        i = rnd.randrange(len(lines)) if lines else 0
        kind = draw(st.sampled_from(["token", "duplicate", "bytes", "drop"]))
        if kind == "token" and lines:
            lines[i] = lines[i].split(":")[0] + ": " + rnd.choice(_TOKENS)
        elif kind == "duplicate" and lines:
            lines.append(lines[i])
        elif kind == "drop" and lines:
            del lines[i]
    raw = ("\n".join(lines) + "\n").encode()
    if draw(st.booleans()) and draw(st.booleans()):  # non-UTF-8 or control bytes
        junk = draw(st.binary(min_size=1, max_size=4))
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + junk + raw[at:]
    return raw


def test_fuzz_yaml_configs_raise_only_config_error(tmp_path):
    """≥ 2,000 examples locally (FEDOPT_FUZZ_EXAMPLES=2000); CI runs the default 200."""
    path = tmp_path / "fuzz.yaml"
    seen = {"ok": 0, "error": 0}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(yaml_bytes())
    def check(raw: bytes) -> None:
        path.write_bytes(raw)
        t0 = time.perf_counter()
        try:
            RunConfig.load(path)
            SystemConfig.from_dict({k: v for k, v in load_yaml(path).items()
                                    if k in SystemConfig.field_names()})
            seen["ok"] += 1
        except ConfigError as exc:
            assert "\n" not in str(exc)
            seen["error"] += 1
        assert time.perf_counter() - t0 < 5.0  # no hang

    check()
    assert seen["ok"] > 0 and seen["error"] > 0  # the fuzz reaches both outcomes


# --- issue 13, second audit ------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [
    ["validate", "bandwidth", "--instances", "1", "--sizes", "3", "--methods", "auto",
     "--no-progress", "--csv", "/dev/full"],
    ["validate", "power", "--instances", "1", "--sizes", "3", "--methods", "auto",
     "--no-progress", "--csv", "/dev/full"],
])
def test_disk_full_at_the_end_is_one_line_exit_2(capsys, world, argv):
    """A write at the end that fails (disk full) is one line naming the file, exit 2."""
    r = run_cli(capsys, argv)
    assert_one_line_error(r, "cannot write /dev/full")


def test_final_write_oserror_is_one_line(monkeypatch):
    """The ``writing`` guard and main's fallback turn any OSError into one line naming it."""
    import fedopt.cli as cli
    from fedopt.cli._types import writing
    from fedopt.errors import FedoptError

    with pytest.raises(FedoptError, match=r"cannot write /x/y\.csv: No space left"):
        with writing("/x/y.csv"):
            raise OSError(28, "No space left on device")

    def boom(args):
        raise OSError(28, "No space left on device", "/x/z.json")

    monkeypatch.setattr(cli, "build_parser", lambda first: _FakeParser(boom))
    assert cli.main(["solve"]) == 2


class _FakeParser:
    def __init__(self, run):
        self.run = run

    def parse_args(self, argv):
        import argparse

        return argparse.Namespace(command="solve", _run=self.run)


def test_exponent_form_run_keys_accepted(tmp_path):
    """5e-1 without a dot is a YAML 1.1 string: run keys parse it as system keys do."""
    cfg = RunConfig.load(None, ["probe_fraction=5e-1", "target_accuracy=5E-1",
                                "mobility_step=1e1", "K=1e1"])
    assert (cfg.probe_fraction, cfg.target_accuracy, cfg.mobility_step, cfg.system.K) == \
        (0.5, 0.5, 10.0, 10)
    p = tmp_path / "c.yaml"
    p.write_text(BASE_YAML + "probe_fraction: 1e-1\n")
    assert RunConfig.load(p).probe_fraction == 0.1
