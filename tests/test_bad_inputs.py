"""Bad inputs across every command and the library (issue 13): one line, exit 2, nothing lost.

Every CLI case runs ``fedopt.cli.main`` in this process, in a workspace that holds inputs and
earlier outputs (a finished run, run folders with crafted checkpoints, a LoRA run folder). Each
case asserts exit code 2, exactly one non-empty stderr line that starts with ``fedopt`` and
names the offending key, path or value, no traceback, and that no file in the workspace was
created, changed or removed. Library cases assert the exception type (``TypeError`` for a wrong
type, ``ValueError`` for a wrong value) and a one-line message naming the argument.

The cases are tables: one row, one distinct bad input. The count is asserted at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = ROOT / "experiments" / "instances"
CASE_SECONDS = 30  # a bad input fails before any work: a case that runs longer is a failure

GOOD_YAML = ("rounds: 2\nK: 5\nM: 3\nranks: [4, 8, 16]\nM_max: 2\npolicy: primal_dual\n"
             "backend: synthetic\ncheckpoint_every: 1\nseed: 0\n")
GOOD_BW = {"problem": "bandwidth", "w": [0.1, 0.2], "a": [5.0, 10.0], "c": [0.001, 0.002],
           "b_min": [0.01, 0.01], "b_max": [1.0, 1.0], "budget": 1.0}
GOOD_PW = {"problem": "power", "W": [0.2, 0.3], "A": [0.002, 0.003], "kappa": 0.4,
           "alpha": 3.5, "C": 2.0, "p_min": 0.001, "p_max": 0.2}


# --- helpers ------------------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout(f"no answer within {CASE_SECONDS} s")


def run_cli(capsys, argv: list[str]) -> tuple[int | str, str, str]:
    """``fedopt.cli.main(argv)`` in-process: (exit code or the escaped exception, stdout, stderr)."""
    from fedopt.cli import main

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        rc: int | str = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # a traceback: reported as the case's failure
        rc = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: its content hash (size and mtime for big files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), folder) + "/"] = "dir"
        for name in filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            key = str(p.relative_to(folder))
            if st.st_size > 1 << 20:
                out[key] = f"{st.st_size}:{st.st_mtime_ns}"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_line(rc, err: str, needle: str) -> None:
    assert rc == 2, f"exit {rc!r}, expected 2; stderr: {err[-500:]!r}"
    assert "Traceback" not in err, err
    lines = [line for line in err.split("\n") if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err[-800:]!r}"
    line = lines[0]
    assert "\r" not in line, f"the error shares a line with a progress bar: {line!r}"
    assert line.startswith("fedopt"), line
    assert needle in line, f"{needle!r} not named in {line!r}"


# --- the workspace ------------------------------------------------------------------------------


def _with(base: dict, **changes) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k)
        else:
            out[k] = v
    return out


_DROP = object()

# instance files for `solve`: name -> (problem, content: dict or raw text/bytes, needle)
BAD_INSTANCES: dict[str, tuple[str, object, str]] = {
    "bw_w_true": ("bandwidth", _with(GOOD_BW, w=[True, 0.2]), "'w"),
    "bw_w_string_number": ("bandwidth", _with(GOOD_BW, w=["1.0", 0.2]), "'w"),
    "bw_w_null": ("bandwidth", _with(GOOD_BW, w=[None, 0.2]), "'w"),
    "bw_w_nan_token": ("bandwidth", '{"problem": "bandwidth", "w": [NaN, 0.2], "a": [5, 10], '
                       '"c": [0.001, 0.002], "b_min": [0.01, 0.01], "b_max": [1, 1], "budget": 1}', "NaN"),
    "bw_a_infinity_token": ("bandwidth", '{"problem": "bandwidth", "w": [0.1, 0.2], "a": [5, Infinity], '
                            '"c": [0.001, 0.002], "b_min": [0.01, 0.01], "b_max": [1, 1], "budget": 1}', "Infinity"),
    "bw_w_nan_string": ("bandwidth", _with(GOOD_BW, w=["NaN", 0.2]), "'w"),
    "bw_w_short": ("bandwidth", _with(GOOD_BW, a=[5.0]), "'a"),
    "bw_w_nested": ("bandwidth", _with(GOOD_BW, c=[[0.001], [0.002]]), "'c"),
    "bw_w_dict": ("bandwidth", _with(GOOD_BW, w={"0": 0.1}), "'w"),
    "bw_missing_a": ("bandwidth", _with(GOOD_BW, a=_DROP), "'a'"),
    "bw_budget_zero": ("bandwidth", _with(GOOD_BW, budget=0.0), "'budget'"),
    "bw_budget_negative": ("bandwidth", _with(GOOD_BW, budget=-1.0), "'budget'"),
    "bw_budget_true": ("bandwidth", _with(GOOD_BW, budget=True), "'budget'"),
    "bw_budget_string": ("bandwidth", _with(GOOD_BW, budget="1"), "'budget'"),
    "bw_budget_list": ("bandwidth", _with(GOOD_BW, budget=[1.0]), "'budget'"),
    "bw_bmin_negative": ("bandwidth", _with(GOOD_BW, b_min=[-0.01, 0.01]), "'b_min"),
    "bw_bmin_above_bmax": ("bandwidth", _with(GOOD_BW, b_min=[0.5, 0.01], b_max=[0.2, 1.0]), "'b_min"),
    "bw_a_negative": ("bandwidth", _with(GOOD_BW, a=[-5.0, 10.0]), "'a"),
    "bw_c_negative": ("bandwidth", _with(GOOD_BW, c=[0.001, -0.002]), "'c"),
    "bw_infeasible": ("bandwidth", _with(GOOD_BW, b_min=[0.6, 0.6]), "budget"),
    "bw_problem_power": ("bandwidth", _with(GOOD_BW, problem="power"), "'problem'"),
    "bw_problem_unknown": ("bandwidth", _with(GOOD_BW, problem="latency"), "'problem'"),
    "bw_json_list": ("bandwidth", "[1, 2, 3]", "JSON object"),
    "bw_json_string": ("bandwidth", '"bandwidth"', "JSON object"),
    "bw_not_json": ("bandwidth", "w: [1, 2]", "JSON"),
    "bw_empty_file": ("bandwidth", "", "JSON"),
    "bw_truncated": ("bandwidth", json.dumps(GOOD_BW)[:40], "JSON"),
    "bw_non_utf8": ("bandwidth", b'{"problem": "bandwidth", "w": [0.1, 0.2]\xff\xfe}', "bw_non_utf8.json"),
    "pw_kappa_negative": ("power", _with(GOOD_PW, kappa=-0.4), "'kappa'"),
    "pw_alpha_two": ("power", _with(GOOD_PW, alpha=2.0), "'alpha'"),
    "pw_alpha_string": ("power", _with(GOOD_PW, alpha="3.5"), "'alpha'"),
    "pw_alpha_true": ("power", _with(GOOD_PW, alpha=True), "'alpha'"),
    "pw_pmin_above_pmax": ("power", _with(GOOD_PW, p_min=0.5), "p_min"),
    "pw_pmin_zero": ("power", _with(GOOD_PW, p_min=0.0), "p_min"),
    "pw_pmax_huge_string": ("power", _with(GOOD_PW, p_max="1e400"), "'p_max'"),
    "pw_W_length": ("power", _with(GOOD_PW, W=[0.2]), "'A'"),
    "pw_C_negative": ("power", _with(GOOD_PW, C=-2.0), "'C'"),
    "pw_W_string": ("power", _with(GOOD_PW, W="0.2,0.3"), "'W'"),
    "pw_missing_kappa": ("power", _with(GOOD_PW, kappa=_DROP), "'kappa'"),
    "pw_given_bandwidth": ("power", GOOD_BW, "'problem'"),
}

# config YAML files: name -> (content, needle)
BAD_CONFIGS: dict[str, tuple[str | bytes, str]] = {
    "dup_key": (GOOD_YAML + "rounds: 3\n", "rounds"),
    "rounds_nan": (GOOD_YAML.replace("rounds: 2", "rounds: .nan"), "rounds"),
    "rounds_inf": (GOOD_YAML.replace("rounds: 2", "rounds: .inf"), "rounds"),
    "rounds_zero": (GOOD_YAML.replace("rounds: 2", "rounds: 0"), "rounds"),
    "rounds_float": (GOOD_YAML.replace("rounds: 2", "rounds: 2.5"), "rounds"),
    "rounds_string": (GOOD_YAML.replace("rounds: 2", "rounds: many"), "rounds"),
    "alpha_dir_zero": (GOOD_YAML + "alpha_dir: 0\n", "alpha_dir"),
    "alpha_dir_negative": (GOOD_YAML + "alpha_dir: -0.5\n", "alpha_dir"),
    # cell_radius: 0 is the documented "mean Voronoi radius"; a radius inside d_min is not
    "cell_radius_inside_d_min": (GOOD_YAML + "cell_radius: 5\n", "cell radius"),
    "K_zero": (GOOD_YAML.replace("K: 5", "K: 0"), "K"),
    "K_bool": (GOOD_YAML.replace("K: 5", "K: true"), "K"),
    "M_max_zero": (GOOD_YAML.replace("M_max: 2", "M_max: 0"), "M_max"),
    "ranks_short": (GOOD_YAML.replace("ranks: [4, 8, 16]", "ranks: [4, 8]"), "ranks"),
    "ranks_string": (GOOD_YAML.replace("ranks: [4, 8, 16]", "ranks: lots"), "ranks"),
    "policy_unknown": (GOOD_YAML.replace("policy: primal_dual", "policy: oracle"), "policy"),
    "backend_unknown": (GOOD_YAML.replace("backend: synthetic", "backend: jax"), "backend"),
    "unknown_key": (GOOD_YAML + "Pmax: 0.2\n", "Pmax"),
    "P_max_negative": (GOOD_YAML + "P_max: -1\n", "P_max"),
    "P_max_bad_unit": (GOOD_YAML + "P_max: 23 dBx\n", "P_max"),
    "N0_no_per_hz": (GOOD_YAML + "N0: -174 dBm\n", "N0"),
    "rho_nan": (GOOD_YAML + "rho: .nan\n", "rho"),
    "T_max_zero": (GOOD_YAML + "T_max: 0\n", "T_max"),
    "beta_above_M_max": (GOOD_YAML + "beta: 3\n", "beta"),
    "checkpoint_every_negative": (GOOD_YAML.replace("checkpoint_every: 1", "checkpoint_every: -1"),
                                  "checkpoint_every"),
    "seed_negative": (GOOD_YAML.replace("seed: 0", "seed: -1"), "seed"),
    "not_a_mapping": ("- rounds\n- K\n", "not_a_mapping.yaml"),
    "yaml_syntax": ("rounds: [1, 2\n", "yaml_syntax.yaml"),
    "non_utf8": (GOOD_YAML.encode() + b"# caf\xe9\n", "non_utf8.yaml"),
}


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.paths: dict[str, str] = {}


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


class _Payload:
    """Unpickling this runs ``touch`` on a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    from fedopt.cli import main

    w = Workspace(tmp_path_factory.mktemp("bad_inputs"))
    r = w.root
    _write(r / "good.yaml", GOOD_YAML)
    _write(r / "afile.txt", "not a folder\n")
    (r / "emptydir").mkdir()
    for name, (content, _) in BAD_CONFIGS.items():
        _write(r / "cfg" / f"{name}.yaml", content)
    for name, (_, content, _) in BAD_INSTANCES.items():
        _write(r / "inst" / f"{name}.json", content)
    _write(r / "inst" / "bw_good.json", GOOD_BW)
    _write(r / "inst" / "pw_good.json", GOOD_PW)
    # a finished run: the earlier output a bad command must leave alone
    assert main(["simulate", "--config", str(r / "good.yaml"), "--out", str(r / "run"), "--quiet"]) == 0
    # run folders whose checkpoint was crafted (the run-folder lane refuses them)
    from fedopt import safestate
    from fedopt.fl.checkpoint import KIND

    real = (r / "run" / "checkpoint.npz").read_bytes()
    marker = r / "pwned"
    payload = pickle.dumps(_Payload(marker))
    saved = safestate.FORMAT_VERSION
    safestate.FORMAT_VERSION = saved + 1
    try:
        newer = safestate.dumps({"t": 1}, KIND)
    finally:
        safestate.FORMAT_VERSION = saved
    crafted = {
        "pickle_npz": ("checkpoint.npz", payload),
        "pickle_pkl": ("checkpoint.pkl", payload),
        "truncated": ("checkpoint.npz", real[: len(real) // 2]),
        "empty": ("checkpoint.npz", b""),
        "random": ("checkpoint.npz", bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8))),
        "newer": ("checkpoint.npz", newer),
        "foreign": ("checkpoint.npz", safestate.dumps({"t": 1}, "someone-elses-state")),
        "object_array": ("checkpoint.npz", _object_npz()),
        "folder": ("checkpoint.npz", None),
    }
    for name, (fname, data) in crafted.items():
        d = r / f"ck_{name}"
        shutil.copytree(r / "run", d)
        (d / "checkpoint.npz").unlink()
        if data is None:
            (d / fname).mkdir()
        else:
            (d / fname).write_bytes(data)
    w.paths = {"r": str(r), "cfg": str(r / "good.yaml"), "file": str(r / "afile.txt"),
               "run": str(r / "run"), "dir": str(r / "emptydir"), "new": str(r / "new_out"),
               "missing": str(r / "nope" / "missing.yaml"), "proc": "/proc/fedopt-bad-inputs",
               "bw": str(r / "inst" / "bw_good.json"), "pw": str(r / "inst" / "pw_good.json")}
    w.marker = marker
    return w


def _object_npz() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, state=np.array([{"t": 1}], dtype=object))
    return buf.getvalue()


# --- the CLI cases ------------------------------------------------------------------------------
# (id, argv with {placeholders}, needle). Sizes are tiny so that a case that is not refused yet
# still ends quickly (and then fails on its exit code).

VB = "validate bandwidth --instances 1 --sizes 3 --methods alg1 --no-progress"
VP = "validate power --instances 1 --sizes 2 --no-progress"
VR = "validate round --K 3 --instances 1 --time-limit 1 --out {new}"
VO = "validate online --T 5 --K 3 --seeds 1 --policies greedy --no-plot --out {new}"
CH = "channel check --draws 100 --no-plot --out {new}"
SIM = "simulate --config {cfg} --quiet --out {new}"
EXP = "experiment fig3 --quick --no-progress --out {new}"
FL = "flower simulate --config {cfg} --out {new}"

CLI_CASES: list[tuple[str, str, str]] = [
    # argparse level
    ("no_command", "", "COMMAND"),
    ("unknown_command", "frobnicate", "frobnicate"),
    # --- solve: options
    ("solve_tol_negative", "solve bandwidth {bw} --tol -1", "--tol"),
    ("solve_tol_nan", "solve bandwidth {bw} --tol nan", "--tol"),
    ("solve_tol_inf", "solve bandwidth {bw} --tol inf", "--tol"),
    ("solve_tol_word", "solve power {pw} --tol tiny", "--tol"),
    ("solve_time_limit_negative", "solve bandwidth {bw} --time-limit -1", "--time-limit"),
    ("solve_time_limit_nan", "solve power {pw} --time-limit nan", "--time-limit"),
    ("solve_time_limit_word", "solve power {pw} --time-limit soon", "--time-limit"),
    ("solve_method_unknown", "solve bandwidth {bw} --method magic", "magic"),
    ("solve_method_wrong_problem", "solve power {pw} --method lambertw", "lambertw"),
    ("solve_problem_unknown", "solve latency {bw}", "latency"),
    ("solve_file_missing", "solve bandwidth {missing}", "missing.yaml"),
    ("solve_file_is_folder", "solve bandwidth {dir}", "emptydir"),
    ("solve_file_under_file", "solve bandwidth {file}/x.json", "afile.txt"),
    # --- channel check
    ("channel_tol_zero", CH + " --tol 0", "--tol"),
    ("channel_tol_negative", CH + " --tol -1", "--tol"),
    ("channel_tol_nan", CH + " --tol nan", "--tol"),
    ("channel_tol_one", CH + " --tol 1", "--tol"),
    ("channel_b_above_one", CH + " --b 2", "--b"),
    ("channel_b_zero", CH + " --b 0", "--b"),
    ("channel_b_empty_entry", CH + " --b 0.1,,0.2", "--b"),
    ("channel_d_negative", CH + " --d -5", "--d"),
    ("channel_d_word", CH + " --d near", "--d"),
    ("channel_p_nan", CH + " --p nan", "--p"),
    ("channel_p_inf", CH + " --p inf", "--p"),
    ("channel_draws_zero", CH + " --draws 0", "--draws"),
    ("channel_draws_float", CH + " --draws 1e4", "--draws"),
    ("channel_seed_negative", CH + " --seed -1", "--seed"),
    ("channel_out_is_file", "channel check --draws 100 --no-plot --out {file}", "afile.txt"),
    ("channel_out_under_file", "channel check --draws 100 --no-plot --out {file}/sub", "afile.txt"),
    ("channel_out_proc", "channel check --draws 100 --no-plot --out {proc}", "/proc"),
    ("channel_config_missing", CH + " --config {missing}", "missing.yaml"),
    ("channel_config_non_utf8", CH + " --config {r}/cfg/non_utf8.yaml", "non_utf8.yaml"),
    ("channel_set_unknown", CH + " --set Pmax=1", "Pmax"),
    ("channel_set_bad_unit", CH + " --set N0=-170dBm", "N0"),
    # --- validate bandwidth | power
    ("vb_instances_zero", VB + " --instances 0", "--instances"),
    ("vb_instances_negative", VB + " --instances -3", "--instances"),
    ("vb_sizes_empty_entry", VB + " --sizes 3,,4", "--sizes"),
    ("vb_sizes_zero", VB + " --sizes 0", "--sizes"),
    ("vb_sizes_word", VB + " --sizes three", "--sizes"),
    ("vb_methods_unknown", VB + " --methods alg1,magic", "magic"),
    ("vb_methods_empty_entry", VB + " --methods alg1,,auto", "--methods"),
    ("vb_seed_negative", VB + " --seed -1", "--seed"),
    ("vb_time_limit_nan", VB + " --time-limit nan", "--time-limit"),
    ("vb_scip_time_limit_negative", VB + " --scip-time-limit -5", "--scip-time-limit"),
    ("vb_regime_unknown", VB + " --regime hostile", "hostile"),
    ("vb_csv_under_file", VB + " --csv {file}/rows.csv", "afile.txt"),
    ("vb_csv_proc", VB + " --csv {proc}/rows.csv", "/proc"),
    ("vb_csv_is_folder", VB + " --csv {dir}", "emptydir"),
    ("vp_instances_zero", VP + " --instances 0", "--instances"),
    ("vp_seed_negative", VP + " --seed -1", "--seed"),
    ("vp_sizes_empty_entry", VP + " --sizes 2,,3", "--sizes"),
    ("vp_time_limit_negative", VP + " --time-limit -1", "--time-limit"),
    ("vp_csv_proc", VP + " --csv {proc}/rows.csv", "/proc"),
    ("vp_methods_unknown", VP + " --methods lambertw", "lambertw"),
    # --- validate round
    ("vr_K_zero", VR + " --K 0", "--K"),
    ("vr_K_empty_entry", VR + " --K 3,,5", "--K"),
    ("vr_K_word", VR + " --K few", "--K"),
    ("vr_instances_zero", VR + " --instances 0", "--instances"),
    ("vr_time_limit_negative", VR + " --time-limit -1", "--time-limit"),
    ("vr_time_limit_nan", VR + " --time-limit nan", "--time-limit"),
    ("vr_seed_negative", VR + " --seed -1", "--seed"),
    ("vr_out_is_file", "validate round --K 3 --instances 1 --out {file}", "afile.txt"),
    ("vr_out_proc", "validate round --K 3 --instances 1 --out {proc}", "/proc"),
    ("vr_config_non_utf8", VR + " --config {r}/cfg/non_utf8.yaml", "non_utf8.yaml"),
    ("vr_config_dup_key", VR + " --config {r}/cfg/dup_key.yaml", "rounds"),
    ("vr_set_alpha_dir_zero", VR + " --set alpha_dir=0", "alpha_dir"),
    ("vr_set_unknown", VR + " --set Kmax=3", "Kmax"),
    # --- validate online
    ("vo_T_zero", VO + " --T 0", "--T"),
    ("vo_T_empty_entry", VO + " --T 5,,10", "--T"),
    ("vo_K_zero", VO + " --K 0", "--K"),
    ("vo_seeds_zero", VO + " --seeds 0", "--seeds"),
    ("vo_energy_budget_negative", VO + " --energy-budget -1", "--energy-budget"),
    ("vo_energy_budget_nan", VO + " --energy-budget nan", "--energy-budget"),
    ("vo_energy_budget_inf", VO + " --energy-budget inf", "--energy-budget"),
    ("vo_policies_unknown", VO + " --policies greedy,oracle", "oracle"),
    ("vo_policies_empty_entry", VO + " --policies greedy,,lyapunov", "--policies"),
    ("vo_solver_unknown", VO + " --solver gurobi", "gurobi"),
    ("vo_out_is_file", "validate online --T 5 --K 3 --seeds 1 --no-plot --out {file}", "afile.txt"),
    ("vo_out_proc", "validate online --T 5 --K 3 --seeds 1 --no-plot --out {proc}", "/proc"),
    ("vo_config_missing", VO + " --config {missing}", "missing.yaml"),
    ("vo_set_rho_negative", VO + " --set rho=-1", "rho"),
    # --- simulate: paths and run folders
    ("sim_no_out", "simulate --config {cfg} --quiet", "--out"),
    ("sim_out_finished_run", "simulate --config {cfg} --quiet --out {run}", "--overwrite"),
    ("sim_out_is_file", "simulate --config {cfg} --quiet --out {file}", "afile.txt"),
    ("sim_out_under_file", "simulate --config {cfg} --quiet --out {file}/run", "afile.txt"),
    ("sim_out_proc", "simulate --config {cfg} --quiet --out {proc}", "/proc"),
    ("sim_config_missing", "simulate --config {missing} --quiet --out {new}", "missing.yaml"),
    ("sim_config_is_folder", "simulate --config {dir} --quiet --out {new}", "emptydir"),
    ("sim_resume_missing", "simulate --resume {r}/nope --quiet", "nope"),
    ("sim_resume_not_a_run", "simulate --resume {dir} --quiet", "emptydir"),
    ("sim_resume_and_other_out", "simulate --resume {run} --out {new} --quiet", "--resume"),
    ("sim_set_no_equals", SIM + " --set rounds", "rounds"),
    ("sim_set_empty_key", SIM + " --set =3", "key ''"),
    ("sim_set_alpha_dir_zero", SIM + " --set alpha_dir=0", "alpha_dir"),
    ("sim_set_rounds_nan", SIM + " --set rounds=nan", "rounds"),
    ("sim_set_cell_radius_negative", SIM + " --set cell_radius=-5", "cell_radius"),
    ("sim_set_unknown", SIM + " --set Pmax=1", "Pmax"),
    ("sim_set_P_max_bad_unit", SIM + " --set P_max=23dBx", "P_max"),
    ("sim_set_K_word", SIM + " --set K=many", "K"),
]
# every bad config file, through `simulate --config`
CLI_CASES += [(f"sim_config_{name}", f"simulate --config {{r}}/cfg/{name}.yaml --quiet --out {{new}}",
               needle) for name, (_, needle) in BAD_CONFIGS.items()]
# every crafted checkpoint, through `simulate --resume`
CLI_CASES += [(f"sim_resume_checkpoint_{name}", f"simulate --resume {{r}}/ck_{name} --quiet", "checkpoint")
              for name in ("pickle_npz", "pickle_pkl", "truncated", "empty", "random", "newer",
                           "foreign", "object_array", "folder")]
# every bad instance file, through `solve` (auto, and the fast methods)
CLI_CASES += [(f"solve_{name}", f"solve {problem} {{r}}/inst/{name}.json", needle)
              for name, (problem, _, needle) in BAD_INSTANCES.items()]
CLI_CASES += [
    ("solve_alg1_bw_infeasible", "solve bandwidth {r}/inst/bw_infeasible.json --method alg1", "budget"),
    ("solve_lambertw_bw_w_true", "solve bandwidth {r}/inst/bw_w_true.json --method lambertw", "'w"),
    # --- experiment
    ("exp_figure_unknown", "experiment fig9 --quick --out {new}", "fig9"),
    ("exp_backend_unknown", "experiment fig3 --backend jax --quick --out {new}", "jax"),
    ("exp_seeds_zero", EXP + " --seeds 0", "--seeds"),
    ("exp_seeds_negative", EXP + " --seeds -2", "--seeds"),
    ("exp_jobs_zero", EXP + " --jobs 0", "--jobs"),
    ("exp_out_is_file", "experiment fig3 --quick --no-progress --out {file}", "afile.txt"),
    ("exp_out_under_file", "experiment fig3 --quick --no-progress --out {file}/res", "afile.txt"),
    ("exp_out_proc", "experiment fig3 --quick --no-progress --out {proc}", "/proc"),
    ("exp_config_missing", EXP + " --config {missing}", "missing.yaml"),
    ("exp_config_non_utf8", EXP + " --config {r}/cfg/non_utf8.yaml", "non_utf8.yaml"),
    ("exp_config_dup_key", EXP + " --config {r}/cfg/dup_key.yaml", "rounds"),
    ("exp_set_alpha_dir_zero", EXP + " --set alpha_dir=0", "alpha_dir"),
    ("exp_set_unknown", EXP + " --set Pmax=1", "Pmax"),
    # --- flower simulate
    ("fl_cpus_zero", FL + " --cpus 0", "--cpus"),
    ("fl_evaluate_unknown", FL + " --evaluate everywhere", "everywhere"),
    ("fl_out_is_file", "flower simulate --config {cfg} --out {file}", "afile.txt"),
    ("fl_out_proc", "flower simulate --config {cfg} --out {proc}", "/proc"),
    ("fl_out_finished_run", "flower simulate --config {cfg} --out {run}", "--overwrite"),
    ("fl_config_missing", "flower simulate --config {missing} --out {new}", "missing.yaml"),
    ("fl_config_non_utf8", "flower simulate --config {r}/cfg/non_utf8.yaml --out {new}", "non_utf8.yaml"),
    ("fl_config_rounds_nan", "flower simulate --config {r}/cfg/rounds_nan.yaml --out {new}", "rounds"),
    ("fl_set_alpha_dir_zero", FL + " --set alpha_dir=0", "alpha_dir"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, ws, capsys, monkeypatch):
    _, argv, needle = case
    if argv.startswith("flower"):
        pytest.importorskip("flwr")
    monkeypatch.chdir(ws.root)  # default output folders land in the watched workspace
    # a fresh output folder per case: one wrongly accepted input cannot spoil the next case
    paths = dict(ws.paths, new=str(ws.root / "new_out" / case[0]))
    args = [a.format(**paths) for a in argv.split()]
    before = digest(ws.root)
    rc, _, err = run_cli(capsys, args)
    after = digest(ws.root)
    assert not ws.marker.exists(), "a crafted pickle was executed"
    assert_one_line(rc, err, needle.format(**paths))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files created, changed or removed: {changed[:5]}"


# --- evaluate: damaged LoRA run folders and bad TSVs ------------------------------------------


def _json_edit(name: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(lora: Path) -> None:
        data = json.loads((lora / name).read_text())
        fn(data)
        (lora / name).write_text(json.dumps(data))
    return apply


def _write_to(name: str, content) -> Callable[[Path], None]:
    return lambda lora: _write(lora / name, content)


def _st(lora: Path, m: int = 1) -> Path:
    return lora / f"m{m}" / "adapter_model.safetensors"


def _as_folder(p: Path) -> None:
    p.unlink()
    p.mkdir()


# (id, damage to RUN/lora, needle)
EVAL_DAMAGE: list[tuple[str, Callable[[Path], None], str]] = [
    ("backend_json_corrupt", _write_to("backend.json", "{not json"), "backend.json"),
    ("backend_json_empty", _write_to("backend.json", ""), "backend.json"),
    ("backend_json_list", _write_to("backend.json", "[1, 2]"), "backend.json"),
    ("backend_json_non_utf8", _write_to("backend.json", b'{"model": "\xff"}'), "backend.json"),
    ("backend_json_missing", lambda lo: (lo / "backend.json").unlink(), "backend.json"),
    ("backend_no_options", _json_edit("backend.json", lambda d: d.pop("options")), "options"),
    ("backend_task_number", _json_edit("backend.json", lambda d: d["options"].update(task=5)), "options"),
    ("backend_task_unknown", _json_edit("backend.json", lambda d: d["options"].update(task="mnli")), "mnli"),
    ("backend_option_unknown", _json_edit("backend.json", lambda d: d["options"].update(warp=9)), "warp"),
    ("backend_threads_negative", _json_edit("backend.json", lambda d: d["options"].update(threads=-1)),
     "threads"),
    ("backend_num_labels_wrong", _json_edit("backend.json", lambda d: d.update(num_labels=3)), "num_labels"),
    ("backend_modules_empty", _json_edit("backend.json", lambda d: d.update(modules=[])), "modules"),
    ("backend_rank_zero", _json_edit("backend.json", lambda d: d["modules"][0].update(rank=0)), "rank"),
    ("backend_rank_string", _json_edit("backend.json", lambda d: d["modules"][0].update(rank="2")), "rank"),
    ("backend_rank_changed", _json_edit("backend.json", lambda d: d["modules"][0].update(rank=4)), "shape"),
    ("backend_lora_alpha_nan", _json_edit("backend.json", lambda d: d["modules"][0].update(lora_alpha=float("nan"))),
     "lora_alpha"),
    ("backend_targets_number", _json_edit("backend.json", lambda d: d["modules"][0].update(target_modules=[1])),
     "target_modules"),
    ("backend_label_dist_shape", _json_edit("backend.json", lambda d: d.update(label_dist=[[1.0, 0.0]])),
     "label_dist"),
    ("backend_label_dist_strings", _json_edit("backend.json", lambda d: d.update(label_dist=[["a", "b"]] * 3)),
     "label_dist"),
    ("backend_data_sizes_strings", _json_edit("backend.json", lambda d: d.update(data_sizes=["a", "b", "c"])),
     "data_sizes"),
    ("ensembles_wrong_K", _write_to("ensembles.json", {"ensembles": [[1, 0], [0, 1]]}), "ensembles"),
    ("ensembles_wrong_M", _write_to("ensembles.json", {"ensembles": [[1], [0], [1]]}), "ensembles"),
    ("ensembles_strings", _write_to("ensembles.json", {"ensembles": [["yes", 0], [0, 1], [1, 1]]}),
     "ensembles[0, 0]"),
    ("ensembles_two", _write_to("ensembles.json", {"ensembles": [[2, 0], [0, 1], [1, 1]]}), "ensembles[0, 0]"),
    ("ensembles_nan", _write_to("ensembles.json", '{"ensembles": [[NaN, 0], [0, 1], [1, 1]]}'), "ensembles"),
    ("ensembles_ragged", _write_to("ensembles.json", {"ensembles": [[1, 0], [0], [1, 1]]}), "ensembles"),
    ("ensembles_bare_list", _write_to("ensembles.json", [[1, 0], [0, 1], [1, 1]]), "ensembles.json"),
    ("ensembles_missing", lambda lo: (lo / "ensembles.json").unlink(), "ensembles.json"),
    ("safetensors_missing", lambda lo: _st(lo).unlink(), "adapter_model.safetensors"),
    ("safetensors_truncated", lambda lo: _st(lo).write_bytes(_st(lo).read_bytes()[:100]),
     "adapter_model.safetensors"),
    ("safetensors_empty", lambda lo: _st(lo).write_bytes(b""), "adapter_model.safetensors"),
    ("safetensors_random", lambda lo: _st(lo).write_bytes(bytes(range(256)) * 4), "adapter_model.safetensors"),
    ("safetensors_folder", lambda lo: _as_folder(_st(lo)), "adapter_model.safetensors"),
    ("safetensors_other_layout", lambda lo: _st(lo).write_bytes(_st(lo, 2).read_bytes()),
     "adapter_model.safetensors"),
]
# (id, TSV content, extra options, needle)
EVAL_TSV: list[tuple[str, bytes | str, list[str], str]] = [
    ("tsv_malformed_strict", "sentence\tlabel\ngood film\t1\none\ttwo\tthree\nbad film\t0\n", ["--strict"],
     "line 3"),
    ("tsv_short_row_strict", "sentence\tlabel\ngood film\t1\nno label here\n", ["--strict"], "line 3"),
    ("tsv_non_utf8", b"sentence\tlabel\ncaf\xe9 film\t1\n", [], "UTF-8"),
    ("tsv_no_label_column", "sentence\tscore\ngood film\t1\n", [], "label"),
    ("tsv_label_unknown", "sentence\tlabel\ngood film\tpositive\n", [], "positive"),
    ("tsv_label_superscript", "sentence\tlabel\ngood film\t\u00b2\n", [], "line 2"),
    ("tsv_only_header", "sentence\tlabel\n", [], "no labelled rows"),
    ("tsv_empty", "", [], "label"),
]


@pytest.fixture(scope="module")
def lora_ws(tmp_path_factory) -> Path:
    """A tiny LoRA run (tiny random BERT, 3 UEs, 3 modules) and one damaged copy per case."""
    pytest.importorskip("peft")
    # tests/conftest.py by path: a bare "import conftest" may find another folder's conftest
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tests_root_conftest",
                                                  Path(__file__).parent / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    tiny_model, write_sst2 = helpers.tiny_model, helpers.write_sst2

    from fedopt.backends.base import ModuleSpec
    from fedopt.backends.lora import LoraBackend
    from fedopt.config import SystemConfig
    from fedopt.population import draw_population

    root = tmp_path_factory.mktemp("lora_bad_inputs")
    bert = tiny_model(root / "bert", "bert")
    glue = write_sst2(root / "glue", n_train=60, n_dev=20)
    cfg = SystemConfig(K=3, batch=4, data_min=10, data_max=15)
    be = LoraBackend(cfg, draw_population(cfg, 0), 0, model=str(bert), data_dir=str(glue),
                     progress=False, log=lambda m: None)
    params = be.init_modules([ModuleSpec(0, 2), ModuleSpec(1, 2), ModuleSpec(2, 4)])
    be.save_run(root / "run", params, np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]], bool))
    for name, damage, _ in EVAL_DAMAGE:
        shutil.copytree(root / "run", root / name)
        damage(root / name / "lora")
    for name, content, _, _ in EVAL_TSV:
        _write(root / f"{name}.tsv", content)
    return root


@pytest.mark.parametrize("case", EVAL_DAMAGE, ids=[c[0] for c in EVAL_DAMAGE])
def test_evaluate_damaged_run_folder(case, lora_ws, capsys):
    name, _, needle = case
    before = digest(lora_ws)
    rc, _, err = run_cli(capsys, ["evaluate", str(lora_ws / name), "--quiet",
                                  "--tsv", str(lora_ws / "glue" / "SST-2" / "dev.tsv")])
    assert_one_line(rc, err, needle)
    assert digest(lora_ws) == before


@pytest.mark.parametrize("case", EVAL_TSV, ids=[c[0] for c in EVAL_TSV])
def test_evaluate_bad_tsv(case, lora_ws, capsys):
    name, _, extra, needle = case
    rc, _, err = run_cli(capsys, ["evaluate", str(lora_ws / "run"), "--quiet",
                                  "--tsv", str(lora_ws / f"{name}.tsv"), *extra])
    assert_one_line(rc, err, needle)


def test_evaluate_reports_skipped_rows(lora_ws, capsys):
    """Not a bad input, a damaged one: the malformed rows are counted and named, n excludes them."""
    dev = (lora_ws / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()
    bad = dev[:3] + ["one\ttwo\tthree"] + dev[3:6] + ["a lone field"] + dev[6:]
    path = lora_ws / "skipped.tsv"
    path.write_text("\n".join(bad) + "\n")
    rc, out, err = run_cli(capsys, ["evaluate", str(lora_ws / "run"), "--tsv", str(path), "--json"])
    assert rc == 0, err
    assert "skipped 2 malformed row(s)" in err and "first: line 4" in err and "--strict" in err
    res = json.loads(out)
    assert res["n"] == len(dev) - 1 and res["skipped_rows"] == 2
    rc, _, err = run_cli(capsys, ["evaluate", str(lora_ws / "run"), "--tsv", str(path), "--strict"])
    assert_one_line(rc, err, "line 4")


# --- the library ----------------------------------------------------------------------------------


def _state(**changes):
    from fedopt import RoundState

    rng = np.random.default_rng(0)
    kw = dict(t=0, distance=rng.uniform(20, 150, 4), data_size=np.full(4, 500.0),
              loss=rng.uniform(0.3, 1.0, (4, 3)), grad_sq=rng.uniform(1, 10, (4, 3)),
              cpu_freq=np.full(4, 1.5e9), cycles_per_bit=np.full(4, 1000.0), samples=np.full(4, 40.0))
    kw.update(changes)
    return RoundState(**kw)


def _allocate(**changes):
    from fedopt import RoundAllocator, SystemConfig

    return RoundAllocator(SystemConfig(K=4)).allocate(_state(**changes))


def _allocator(**kw):
    from fedopt import RoundAllocator, SystemConfig

    return RoundAllocator(SystemConfig(K=4), **kw)


def _solve_bw(inst, **kw):
    from fedopt.solvers import solve_bandwidth

    return solve_bandwidth(inst, **kw)


def _solve_pw(inst, **kw):
    from fedopt.solvers import solve_power

    return solve_power(inst, **kw)


def _bw_inst():
    from fedopt.instances import load_instance

    return load_instance(INSTANCES / "bandwidth_example_0.json")


def _policy(name="primal_dual", **kw):
    from fedopt.online import make_policy

    return make_policy(name, 0.5, 2, **kw)


def _update(costs=None, feasible=None, t=0, **kw):
    pol = _policy()
    st = pol.init(3, 2)
    costs = np.array([[-1.0, 0.5], [0.2, -0.3], [0.1, 0.1]]) if costs is None else costs
    feasible = np.ones((3, 2), bool) if feasible is None else feasible
    return pol.update(costs, feasible, t, st, **kw)


def _greedy_update(t=0):
    from fedopt.online import greedy

    pol = greedy(0.5, 2)
    return pol.update(np.zeros((3, 2)), np.ones((3, 2), bool), t, pol.init(3, 2))


def _hindsight(**kw):
    from fedopt.online import solve_hindsight

    args = dict(costs=-np.ones((2, 3, 2)), feasible=True, beta=0.5, M_max=2)
    args.update(kw)
    return solve_hindsight(**args)


def _project(**kw):
    from fedopt.online import project_capped_simplex

    args = dict(y=np.full((2, 3), 0.7), cap=2)
    args.update(kw)
    return project_capped_simplex(**args)


def _round(**kw):
    from fedopt.online import systematic_round

    args = dict(x_frac=np.full((2, 3), 0.5), cap=2, rng=np.random.default_rng(0))
    args.update(kw)
    return systematic_round(**args)


_NAN = float("nan")
# (id, call, exception type, needle)
LIBRARY_CASES: list[tuple[str, Callable[[], object], type[BaseException], str]] = [
    # RoundState.available / t through RoundAllocator.allocate
    ("available_strings", lambda: _allocate(available=["no", "yes", "yes", "yes"]), TypeError, "state.available[0]"),
    ("available_nan", lambda: _allocate(available=[_NAN, 1.0, 1.0, 1.0]), TypeError, "state.available[0]"),
    ("available_float_ones", lambda: _allocate(available=[1.0, 0.5, 1.0, 1.0]), TypeError, "state.available"),
    ("available_none_entry", lambda: _allocate(available=[True, None, True, True]), TypeError,
     "state.available[1]"),
    ("available_two", lambda: _allocate(available=[1, 2, 1, 1]), ValueError, "state.available[1]"),
    ("available_short", lambda: _allocate(available=[True, False, True]), ValueError, "state.available"),
    ("available_2d", lambda: _allocate(available=np.ones((4, 1), bool)), ValueError, "state.available"),
    ("available_string", lambda: _allocate(available="yes"), TypeError, "state.available"),
    ("t_nan", lambda: _allocate(t=_NAN), TypeError, "state.t"),
    ("t_negative", lambda: _allocate(t=-1), ValueError, "state.t"),
    ("t_string", lambda: _allocate(t="3"), TypeError, "state.t"),
    ("t_float", lambda: _allocate(t=2.5), TypeError, "state.t"),
    ("t_bool", lambda: _allocate(t=True), TypeError, "state.t"),
    ("distance_strings", lambda: _allocate(distance=["a", "b", "c", "d"]), TypeError, "state.distance"),
    ("distance_nan", lambda: _allocate(distance=[_NAN, 50.0, 60.0, 70.0]), ValueError, "state.distance[0]"),
    ("distance_zero", lambda: _allocate(distance=[0.0, 50.0, 60.0, 70.0]), ValueError, "state.distance[0]"),
    ("data_size_short", lambda: _allocate(data_size=np.full(3, 500.0)), ValueError, "state.data_size"),
    ("loss_string", lambda: _allocate(loss="high"), TypeError, "state.loss"),
    ("loss_inf", lambda: _allocate(loss=np.full((4, 3), np.inf)), ValueError, "state.loss"),
    ("loss_wrong_M", lambda: _allocate(loss=np.ones((4, 2)), grad_sq=np.ones((4, 2))), ValueError, "state.loss"),
    ("grad_sq_negative", lambda: _allocate(grad_sq=-np.ones((4, 3))), ValueError, "state.grad_sq"),
    ("cpu_freq_none", lambda: _allocate(cpu_freq=None), TypeError, "state.cpu_freq"),
    ("fading_zero", lambda: _allocate(fading=np.zeros(4)), ValueError, "state.fading[0]"),
    ("state_dict", lambda: _allocator().allocate({"t": 0}), TypeError, "state"),
    # RoundAllocator's own arguments
    ("alloc_config_dict", lambda: __import__("fedopt").RoundAllocator({"K": 4}), TypeError, "config"),
    ("alloc_policy_number", lambda: _allocator(policy=3), TypeError, "policy"),
    ("alloc_policy_unknown", lambda: _allocator(policy="oracle"), ValueError, "oracle"),
    ("alloc_power_method_list", lambda: _allocator(power_method=["alg"]), TypeError, "power_method"),
    ("alloc_bandwidth_method_unknown", lambda: _allocator(bandwidth_method="magic"), ValueError, "magic"),
    ("alloc_tol_negative", lambda: _allocator(tol=-1.0), ValueError, "tol"),
    ("alloc_tol_nan", lambda: _allocator(tol=_NAN), ValueError, "tol"),
    ("alloc_max_iter_float", lambda: _allocator(max_iter=2.5), TypeError, "max_iter"),
    ("alloc_max_iter_zero", lambda: _allocator(max_iter=0), ValueError, "max_iter"),
    ("alloc_seed_negative", lambda: _allocator(seed=-1), ValueError, "seed"),
    ("alloc_on_infeasible_unknown", lambda: _allocator(on_infeasible="ignore"), ValueError, "on_infeasible"),
    ("alloc_module_bits_strings", lambda: _allocator(module_bits=["a", "b", "c"]), TypeError, "module_bits"),
    ("alloc_phi_short", lambda: _allocator(phi=[1.0, 2.0]), ValueError, "phi"),
    ("alloc_policy_params_list", lambda: _allocator(policy_params=[1]), TypeError, "policy_params"),
    ("alloc_load_state_dict_list", lambda: _allocator().load_state_dict([1, 2]), TypeError, "state_dict"),
    ("alloc_load_state_dict_partial", lambda: _allocator().load_state_dict({"policy": None}), ValueError,
     "state_dict"),
    # policies
    ("make_policy_unknown", lambda: _policy("oracle"), ValueError, "oracle"),
    ("make_policy_name_list", lambda: _policy(["greedy"]), TypeError, "policy"),
    ("make_policy_beta_string", lambda: __import__("fedopt.online").online.make_policy("greedy", "0.5", 2),
     TypeError, "beta"),
    ("make_policy_beta_nan", lambda: __import__("fedopt.online").online.make_policy("greedy", _NAN, 2),
     ValueError, "beta"),
    ("make_policy_M_max_float", lambda: __import__("fedopt.online").online.make_policy("greedy", 0.5, 2.0),
     TypeError, "M_max"),
    ("make_policy_M_max_zero", lambda: __import__("fedopt.online").online.make_policy("greedy", 0.0, 0),
     ValueError, "M_max"),
    ("primal_dual_eta_negative", lambda: _policy(eta_x=-1.0), ValueError, "eta_x"),
    ("primal_dual_seed_string", lambda: _policy(seed="0"), TypeError, "seed"),
    ("lyapunov_V_nan", lambda: _policy("lyapunov", V=_NAN), ValueError, "V"),
    ("lyapunov_Z0_string", lambda: _policy("lyapunov", Z0="1"), TypeError, "Z0"),
    ("policy_on_infeasible_unknown", lambda: _policy("greedy", on_infeasible="skip"), ValueError,
     "on_infeasible"),
    ("policy_init_K_zero", lambda: _policy().init(0, 2), ValueError, "K"),
    ("policy_init_M_float", lambda: _policy().init(3, 2.0), TypeError, "M"),
    ("update_t_nan", lambda: _update(t=_NAN), TypeError, "t"),
    ("update_t_negative", lambda: _update(t=-2), ValueError, "t"),
    ("update_costs_strings", lambda: _update(costs=[["a", "b"]] * 3), TypeError, "costs"),
    ("update_costs_nan", lambda: _update(costs=np.full((3, 2), _NAN)), ValueError, "costs[0, 0]"),
    ("update_costs_shape", lambda: _update(costs=np.zeros((2, 2))), ValueError, "costs"),
    ("update_feasible_strings", lambda: _update(feasible=[["no", "yes"]] * 3), TypeError, "feasible[0, 0]"),
    ("update_feasible_nan", lambda: _update(feasible=np.full((3, 2), _NAN)), TypeError, "feasible[0, 0]"),
    ("update_feasible_shape", lambda: _update(feasible=np.ones((3, 3), bool)), ValueError, "feasible"),
    ("update_active_strings", lambda: _update(active=["no", "yes", "yes"]), TypeError, "active[0]"),
    ("update_active_short", lambda: _update(active=[True, True]), ValueError, "active"),
    ("update_energy_strings", lambda: _update(energy=[["a", "b"]] * 3), TypeError, "energy"),
    ("greedy_update_t_string", lambda: _greedy_update(t="0"), TypeError, "t"),
    ("record_outcome_x_strings", lambda: __import__("fedopt.online").online.record_outcome(
        _policy().init(3, 2), [["a", "b"]] * 3), TypeError, "x[0, 0]"),
    ("hindsight_costs_2d", lambda: _hindsight(costs=np.zeros((3, 2))), ValueError, "costs"),
    ("hindsight_costs_strings", lambda: _hindsight(costs=[[["a"]]]), TypeError, "costs"),
    ("hindsight_feasible_nan", lambda: _hindsight(feasible=np.full((2, 3, 2), _NAN)), TypeError, "feasible"),
    ("hindsight_feasible_shape", lambda: _hindsight(feasible=np.ones((4, 4), bool)), ValueError, "feasible"),
    ("hindsight_solver_number", lambda: _hindsight(solver=1), TypeError, "solver"),
    ("hindsight_solver_unknown", lambda: _hindsight(solver="gurobi"), ValueError, "gurobi"),
    ("hindsight_energy_budget_negative", lambda: _hindsight(energy_budget=-1.0), ValueError, "energy_budget"),
    ("project_cap_negative", lambda: _project(cap=-1.0), ValueError, "cap"),
    ("project_y_strings", lambda: _project(y=[["a"]]), TypeError, "y"),
    ("project_mask_shape", lambda: _project(mask=np.ones((3, 3), bool)), ValueError, "mask"),
    ("round_rng_int", lambda: _round(rng=0), TypeError, "rng"),
    ("round_cap_float", lambda: _round(cap=1.5), TypeError, "cap"),
    # solver entry points (the lead's lane)
    ("solve_bandwidth_dict", lambda: _solve_bw(dict(GOOD_BW)), TypeError, "instance"),
    ("solve_bandwidth_none", lambda: _solve_bw(None), TypeError, "instance"),
    ("solve_bandwidth_power_instance", lambda: _solve_bw(
        __import__("fedopt.instances").instances.load_instance(INSTANCES / "power_example_0.json")),
     TypeError, "instance"),
    ("solve_bandwidth_method_unknown", lambda: _solve_bw(_bw_inst(), method="magic"), ValueError, "magic"),
    ("solve_bandwidth_tol_negative", lambda: _solve_bw(_bw_inst(), tol=-1.0), ValueError, "tol"),
    ("solve_bandwidth_tol_inf", lambda: _solve_bw(_bw_inst(), tol=float("inf")), ValueError, "tol"),
    ("solve_bandwidth_time_limit_nan", lambda: _solve_bw(_bw_inst(), method="global", time_limit=_NAN),
     ValueError, "time_limit"),
    ("solve_power_none", lambda: _solve_pw(None), TypeError, "instance"),
    ("solve_power_string", lambda: _solve_pw("power_example_0.json"), TypeError, "instance"),
    ("solve_power_bandwidth_instance", lambda: _solve_pw(_bw_inst()), TypeError, "instance"),
    # config
    ("config_K_string", lambda: __import__("fedopt").SystemConfig(K="many"), ValueError, "K"),
    ("config_alpha_dir_zero", lambda: __import__("fedopt").SystemConfig(alpha_dir=0), ValueError, "alpha_dir"),
    ("config_cell_radius_negative", lambda: __import__("fedopt").SystemConfig(cell_radius=-1.0),
     ValueError, "cell_radius"),
    ("config_unknown_key", lambda: __import__("fedopt").SystemConfig(Pmax=1), (TypeError, ValueError), "Pmax"),
]


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_bad_input(case):
    _, call, exc_type, needle = case
    with pytest.raises(exc_type) as info:
        call()
    msg = str(info.value)
    assert msg.strip() and "\n" not in msg, repr(msg)
    assert needle in msg, f"{needle!r} not named in {msg!r}"


# --- degenerate instances: solved or refused, by every method alike ------------------------------

DEGENERATE = {
    "bw_N0": ("bandwidth", _with(GOOD_BW, w=[], a=[], c=[], b_min=[], b_max=[])),
    "bw_budget_in_slack": ("bandwidth", _with(GOOD_BW, b_min=[0.5, 0.5], budget=1.0 - 5e-13)),
    "bw_huge": ("bandwidth", _with(GOOD_BW, w=[1e308, 1e308], c=[1e308, 1e308])),
    "pw_N0": ("power", _with(GOOD_PW, W=[], A=[])),
}
DEGENERATE_METHODS = {"bandwidth": ["auto", "alg1", "lambertw"], "power": ["auto", "lambertw"]}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_instances_are_solved_or_refused(name, tmp_path, capsys):
    """Each method either refuses (exit 2, one line) or returns a finite, feasible point with
    the same objective as the others; none labels a non-finite point optimal or feasible."""
    from fedopt.solvers import POWER_METHODS

    problem, content = DEGENERATE[name]
    path = tmp_path / f"{name}.json"
    _write(path, content)
    methods = [m for m in DEGENERATE_METHODS[problem] if problem == "bandwidth" or m in POWER_METHODS]
    answers = {}
    for method in methods:
        rc, out, err = run_cli(capsys, ["solve", problem, str(path), "--method", method, "--json",
                                        "--time-limit", "5"])
        assert rc in (0, 2), f"{method}: {rc!r} {err[-300:]}"
        if rc == 2:
            assert_one_line(rc, err, "")
            answers[method] = "refused"
            continue
        sol = json.loads(out)
        assert np.isfinite(sol["objective"]) and np.all(np.isfinite(np.asarray(sol["x"], float))), (method, sol)
        assert sol["status"] in ("optimal", "feasible"), (method, sol)
        answers[method] = round(float(sol["objective"]), 9)
    assert len(set(answers.values())) == 1, f"methods disagree on {name}: {answers}"


# --- the count --------------------------------------------------------------------------------------


def test_at_least_150_distinct_bad_inputs():
    ids = [c[0] for c in CLI_CASES] + [c[0] for c in EVAL_DAMAGE] + [c[0] for c in EVAL_TSV] \
        + [c[0] for c in LIBRARY_CASES]
    assert len(ids) == len(set(ids))
    argvs = [c[1] for c in CLI_CASES]
    assert len(argvs) == len(set(argvs)), "two CLI cases with the same command line"
    assert len(ids) >= 150, len(ids)
