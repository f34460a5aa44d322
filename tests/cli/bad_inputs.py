"""Bad command lines and bad config files, as data: a table other test modules can reuse.

Each case is ``(argv, expected)``: ``argv`` may hold ``{placeholders}`` that
:func:`make_fixtures` fills (files and folders under a temporary folder), and ``expected`` is
a substring the one stderr line must contain (the option, key, path or value at fault).
:func:`run_cli` runs ``fedopt.cli.main`` in this process; :func:`snapshot` records a folder
tree so that a test can assert that nothing was created or changed.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICK = str(ROOT / "experiments" / "configs" / "quick.yaml")
BW = str(ROOT / "experiments" / "instances" / "bandwidth_nonconvex_example_1.json")

# a small, valid run config: every config case below changes one thing in it
BASE_YAML = "rounds: 2\nK: 5\nM: 2\nM_max: 1\nfeatures: 8\nclasses: 3\n"

# name -> file content (bytes); written by make_fixtures as {name}
CONFIG_FILES: dict[str, bytes] = {
    "not_utf8": b"rounds: 2\nK: \xff\xfe5\n",
    "dup_key": BASE_YAML.encode() + b"rounds: 3\n",
    "rounds_nan": BASE_YAML.replace("rounds: 2", "rounds: .nan").encode(),
    "rounds_inf": BASE_YAML.replace("rounds: 2", "rounds: .inf").encode(),
    "rounds_float": BASE_YAML.replace("rounds: 2", "rounds: 2.5").encode(),
    "rounds_str": BASE_YAML.replace("rounds: 2", "rounds: two").encode(),
    "alpha_dir_0": (BASE_YAML + "alpha_dir: 0\n").encode(),
    "alpha_dir_neg": (BASE_YAML + "alpha_dir: -0.5\n").encode(),
    "mobility_nan": (BASE_YAML + "mobility_step: .nan\n").encode(),
    "probe_2": (BASE_YAML + "probe_fraction: 2\n").encode(),
    "seed_neg": (BASE_YAML + "seed: -1\n").encode(),
    "seed_bool": (BASE_YAML + "seed: true\n").encode(),
    "K_bool": BASE_YAML.replace("K: 5", "K: yes").encode(),
    "K_huge": BASE_YAML.replace("K: 5", "K: 1e400").encode(),
    "K_bigint": BASE_YAML.replace("K: 5", "K: " + "9" * 400).encode(),
    "M_huge": BASE_YAML.replace("M: 2", "M: 1000000000").encode(),
    "ranks_nan": (BASE_YAML + "ranks: [4, .nan]\n").encode(),
    "lr_neg": (BASE_YAML + "lr: -0.1\n").encode(),
    "P_max_huge_dbm": (BASE_YAML + "P_max: 1e400 dBm\n").encode(),
    "features_neg": BASE_YAML.replace("features: 8", "features: -1").encode(),
    "probe_batch_0": (BASE_YAML + "probe_batch: 0\n").encode(),
    "dense_int": (BASE_YAML + "dense: 1\n").encode(),
    "policy_list": (BASE_YAML + "policy: [1]\n").encode(),
    "data_dir_int": (BASE_YAML + "data_dir: 5\n").encode(),
    "null_key": (BASE_YAML + "null: 3\n").encode(),
    "mobility_huge": (BASE_YAML + "mobility_step: 1e10\n").encode(),
    "probe_exp_5e1": (BASE_YAML + "probe_fraction: 5e1\n").encode(),  # a YAML 1.1 string
    "ranks_open": (BASE_YAML + "ranks: '[4, 8'\n").encode(),
    "not_mapping": b"- rounds\n- 2\n",
    "bad_yaml": b"rounds: [2\n",
    "python_tag": b"rounds: !!python/object/apply:os.system ['true']\n",
}

# (config file, substring of the error)
CONFIG_CASES: list[tuple[str, str]] = [
    ("not_utf8", "not UTF-8"),
    ("dup_key", "duplicate key 'rounds' at line 7"),
    ("rounds_nan", "rounds: NaN"),
    ("rounds_inf", "rounds: must be finite"),
    ("rounds_float", "rounds: must be an integer"),
    ("rounds_str", "rounds: expected an integer"),
    ("alpha_dir_0", "alpha_dir: must be > 0"),
    ("alpha_dir_neg", "alpha_dir: must be > 0"),
    ("mobility_nan", "mobility_step: NaN"),
    ("probe_2", "probe_fraction: must be <= 1"),
    ("seed_neg", "seed: must be >= 0"),
    ("seed_bool", "seed: expected an integer, got True"),
    ("K_bool", "K: expected a number"),
    ("K_huge", "K: must be finite"),
    ("K_bigint", "K: must be <= "),
    ("M_huge", "M: must be <= 64"),
    ("ranks_nan", "ranks: NaN"),
    ("lr_neg", "lr: must be >= 0"),
    ("P_max_huge_dbm", "P_max: '1e400 dBm' is too large"),
    ("features_neg", "features: must be >= 1"),
    ("probe_batch_0", "probe_batch: must be >= 1"),
    ("dense_int", "dense: expected true or false"),
    ("policy_list", "policy: unknown value"),
    ("data_dir_int", "data_dir: expected a name"),
    ("null_key", "unknown key 'None'"),
    ("mobility_huge", "mobility_step: must be <= "),
    ("probe_exp_5e1", "probe_fraction: must be <= 1"),
    ("ranks_open", "ranks: unbalanced brackets"),
    ("not_mapping", "the top level must be a mapping"),
    ("bad_yaml", "not valid YAML"),
    ("python_tag", "not valid YAML"),
]

# every command that reads a run config: argv before "--config FILE"
CONFIG_COMMANDS: dict[str, list[str]] = {
    "simulate": ["simulate", "--out", "{tmp}/run"],
    "flower": ["flower", "simulate", "--out", "{tmp}/run"],
}

# (argv, substring): options of every command, before any work
ARGV_CASES: list[tuple[list[str], str]] = [
    # solve: numbers
    *[(["solve", "bandwidth", BW, "--tol", v], "--tol") for v in ("-1", "nan", "inf", "0", "1")],
    *[(["solve", "bandwidth", BW, "--time-limit", v], "--time-limit")
      for v in ("0", "-5", "nan", "inf")],
    (["solve", "power", BW, "--tol", "-1e-3"], "--tol"),
    # channel check: numbers, lists, output folder, config file
    *[(["channel", "check", "--tol", v], "--tol") for v in ("0", "-1", "1", "nan")],
    *[(["channel", "check", "--b", v], "--b") for v in ("2", "0", "0.5,,1", "0.5,nan")],
    *[(["channel", "check", "--d", v], "--d") for v in ("-1", "inf", "", "20,")],
    (["channel", "check", "--p", "0"], "--p"),
    *[(["channel", "check", "--draws", v], "--draws") for v in ("10", "many", "1e4")],
    (["channel", "check", "--seed", "-1"], "--seed"),
    (["channel", "check", "--out", "{file}"], "{file} is a file"),
    (["channel", "check", "--out", "{file}/sub"], "is under a file"),
    (["channel", "check", "--out", "/proc/fedopt-test"], "/proc/fedopt-test"),
    (["channel", "check", "--out", ""], "--out"),
    (["channel", "check", "--config", "{not_utf8}"], "not UTF-8"),
    (["channel", "check", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    (["channel", "check", "--config", "{tmp}"], "is a folder"),
    (["channel", "check", "--set", "alpha_dir=0"], "alpha_dir"),
    (["channel", "check", "--set", "cell_radius=-1"], "cell_radius"),
    # validate bandwidth | power
    *[(["validate", t, "--seed", "-1"], "--seed") for t in ("bandwidth", "power")],
    *[(["validate", t, "--instances", "0"], "--instances") for t in ("bandwidth", "power")],
    (["validate", "bandwidth", "--time-limit", "nan"], "--time-limit"),
    (["validate", "power", "--scip-time-limit", "-1"], "--scip-time-limit"),
    *[(["validate", "bandwidth", "--sizes", v], "--sizes") for v in ("3,,4", ",", "3,0", "3,x")],
    (["validate", "bandwidth", "--methods", "auto,,alg1"], "--methods"),
    (["validate", "bandwidth", "--methods", "auto,nope", "--instances", "1"], "'nope'"),
    (["validate", "bandwidth", "--csv", "{tmp}"], "is a folder"),
    (["validate", "bandwidth", "--csv", "{file}/x.csv"], "is under a file"),
    (["validate", "power", "--csv", "/proc/fedopt-x/y.csv"], "--csv"),
    # validate round | online
    (["validate", "round", "--seed", "-1"], "--seed"),
    (["validate", "round", "--instances", "0"], "--instances"),
    (["validate", "round", "--time-limit", "0"], "--time-limit"),
    *[(["validate", "round", "--K", v], "--K") for v in ("0", "3,,5", "3,-1")],
    (["validate", "round", "--out", "{file}"], "is a file"),
    (["validate", "round", "--config", "{not_utf8}", "--K", "3"], "not UTF-8"),
    (["validate", "round", "--set", "alpha=1", "--K", "3"], "alpha: must be > 2"),
    *[(["validate", "online", "--energy-budget", v], "--energy-budget")
      for v in ("-1", "nan", "inf")],
    (["validate", "online", "--seeds", "0"], "--seeds"),
    (["validate", "online", "--K", "0"], "--K"),
    *[(["validate", "online", "--T", v], "--T") for v in ("0", "5,,6")],
    (["validate", "online", "--policies", "greedy,"], "--policies"),
    (["validate", "online", "--out", "{file}/x"], "is under a file"),
    (["validate", "online", "--config", "{dup_key}"], "duplicate key 'rounds'"),
    # simulate | experiment | flower: output folders, numbers, config files
    (["simulate", "--config", QUICK, "--out", "{file}"], "is a file"),
    (["simulate", "--config", QUICK, "--out", "/proc/fedopt-x"], "/proc/fedopt-x"),
    (["simulate", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/run"], "missing.yaml"),
    (["simulate", "--config", QUICK, "--set", "rounds=nan", "--out", "{tmp}/run"], "rounds"),
    (["simulate", "--config", QUICK, "--set", "alpha_dir=0", "--out", "{tmp}/run"], "alpha_dir"),
    (["simulate", "--resume", "{bad_run}"], "not UTF-8"),
    (["experiment", "fig3", "--seeds", "0", "--out", "{tmp}/res"], "--seeds"),
    (["experiment", "fig2", "--jobs", "0", "--out", "{tmp}/res"], "--jobs"),
    (["experiment", "fig3", "--out", "{file}"], "is a file"),
    (["experiment", "fig3", "--out", "{fig_blocked}"], "fig3 is a file"),
    (["experiment", "fig3", "--config", "{not_utf8}", "--out", "{tmp}/res"], "not UTF-8"),
    (["experiment", "fig4", "--quick", "--config", "{dup_exp}", "--out", "{tmp}/res"],
     "duplicate key 'seeds'"),
    (["experiment", "fig4", "--quick", "--set", "alpha_dir=0", "--out", "{tmp}/res"],
     "alpha_dir"),
    (["flower", "simulate", "--cpus", "0"], "--cpus"),
    (["flower", "simulate", "--out", "/proc/fedopt-x"], "/proc/fedopt-x"),
    # issue 13, second audit: numeric edges of channel check, refused before the draws
    *[(["channel", "check", "--draws", "200", "--no-plot", "--out", "{tmp}/ch", opt, v], opt)
      for opt, v in (("--p", "1e-320"), ("--tol", "1e-320"), ("--d", "1e-300"),
                     ("--draws", "10000000000"), ("--tol", "1e-15"), ("--p", "1e-30"),
                     ("--d", "1e30"), ("--d", "5"), ("--tol", "0.6"), ("--p", "1e4"))],
    (["channel", "check", "--draws", "200", "--no-plot", "--out", "{tmp}/ch", "--p", "1e-9"],
     "--d/--p/--tol"),
    (["channel", "check", "--draws", "10000000", "--no-plot", "--out", "{tmp}/ch", "--d",
      "20,30,40,50,60,70,80,90,100,110", "--p", "0.1,0.2,0.3"], "--draws"),
    # CPU counts against os.cpu_count()
    (["flower", "simulate", "--cpus", "100000"], "--cpus"),
    (["experiment", "fig2", "--jobs", "100000", "--out", "{tmp}/res"], "--jobs"),
    # found before the work, not after it
    (["validate", "bandwidth", "--sizes", "100000000"], "--sizes"),
    (["validate", "online", "--energy-budget", "1e-320", "--T", "20", "--seeds", "1", "--K", "4",
      "--no-plot", "--out", "{tmp}/vo"], "--energy-budget"),
    # one rule for seeds: [0, 2^63 - 1] everywhere
    *[(["validate", t, "--seed", "99999999999999999999999"], "--seed")
      for t in ("bandwidth", "power", "round")],
    (["channel", "check", "--seed", str(2**63)], "--seed"),
    (["simulate", "--config", QUICK, "--set", "seed=9223372036854775808", "--out", "{tmp}/run"],
     "seed: must be <="),
    # run keys: exponent form parsed like system keys; bounds
    (["simulate", "--config", QUICK, "--set", "mobility_step=1e10", "--out", "{tmp}/run"],
     "mobility_step: must be <="),
    (["simulate", "--config", QUICK, "--set", "probe_fraction=5e1", "--out", "{tmp}/run"],
     "probe_fraction: must be <= 1"),
    # malformed --set lists
    *[(["simulate", "--config", QUICK, "--set", v, "--out", "{tmp}/run"], "ranks:")
      for v in ("ranks=[4,,8,16]", "ranks=[4, 8, 16", "ranks=4, 8, 16]", "ranks=[4,8,]")],
    # messages
    (["channel", "check", "--set", "N0=1e400dBm/Hz"], "N0: '1e400dBm/Hz' is too large"),
    (["simulate", "--resume", ""], "--resume: empty path"),
    *[([*argv, "--config", ""], "--config: empty path")
      for argv in (["channel", "check"], ["simulate", "--out", "{tmp}/run"],
                   ["validate", "online"], ["validate", "round"])],
]


def make_fixtures(tmp: Path) -> dict[str, str]:
    """Write the files the cases name into ``tmp``; returns the placeholder values."""
    values = {"tmp": str(tmp)}
    cfg = tmp / "configs"
    cfg.mkdir()
    for name, data in CONFIG_FILES.items():
        (cfg / f"{name}.yaml").write_bytes(data)
        values[name] = str(cfg / f"{name}.yaml")
    (tmp / "a_file").write_text("not a folder\n")
    values["file"] = str(tmp / "a_file")
    bad_run = tmp / "bad_run"  # a run folder whose config.yaml is not UTF-8
    bad_run.mkdir()
    (bad_run / "config.yaml").write_bytes(CONFIG_FILES["not_utf8"])
    values["bad_run"] = str(bad_run)
    blocked = tmp / "blocked"  # OUT exists, but OUT/fig3 is a file
    blocked.mkdir()
    (blocked / "fig3").write_text("x\n")
    values["fig_blocked"] = str(blocked)
    (cfg / "dup_exp.yaml").write_text("seeds: 1\nseeds: 2\n")
    values["dup_exp"] = str(cfg / "dup_exp.yaml")
    return values


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in argv]


def run_cli(capsys, argv: list[str]) -> subprocess.CompletedProcess:
    """``fedopt.cli.main(argv)`` in this process; argparse's SystemExit becomes the code."""
    from fedopt.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), rc, cap.out, cap.err)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> content hash ('dir' for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def assert_one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 2, exactly one non-empty stderr line that contains ``expected``, no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.args, r.returncode, r.stderr[-2000:])
    assert len(lines) == 1, (r.args, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert expected in lines[0], (r.args, lines[0])
