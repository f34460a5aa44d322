"""``fedopt solve``: JSON keys, the human table, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from solver_factories import shared_examples

FEDOPT = Path(sys.executable).parent / "fedopt"
KEYS = {"objective", "x", "status", "method", "iterations", "seconds", "bound", "gap", "gap_abs",
        "tolerance"}


def fedopt(*args: str) -> subprocess.CompletedProcess:
    """The console script, in a subprocess."""
    return subprocess.run([str(FEDOPT), *args], capture_output=True, text=True, timeout=120)


def fedopt_inproc(capsys, *args: str) -> subprocess.CompletedProcess:
    """``fedopt.cli.main`` in this process (same code path, no interpreter start-up)."""
    from fedopt.cli import main

    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), rc, cap.out, cap.err)


GOOD_BW = {"problem": "bandwidth", "w": [0.1, 0.2], "a": [5.0, 10.0], "c": [0.001, 0.002],
           "b_min": [0.01, 0.01], "b_max": [1.0, 1.0], "budget": 1.0}
GOOD_PW = {"problem": "power", "W": [0.2, 0.3], "A": [0.002, 0.003], "kappa": 0.4,
           "alpha": 3.5, "C": 2.0, "p_min": 0.001, "p_max": 0.2}


@pytest.mark.parametrize("path", shared_examples("bandwidth") + shared_examples("power"),
                         ids=lambda p: p.stem)
def test_json_output_keys(path, capsys):
    kind = "power" if path.stem.startswith("power") else "bandwidth"
    r = fedopt_inproc(capsys, "solve", kind, str(path), "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    alias = "p" if kind == "power" else "b"
    assert KEYS | {alias} == set(out)
    assert out["x"] == out[alias]
    assert out["status"] == "optimal" and out["gap"] <= 1e-9
    ref = json.loads(path.read_text())["reference"]["objective"]
    assert out["objective"] <= ref + 1e-9 * abs(ref)


def test_console_script_json_smoke():
    path = shared_examples("bandwidth")[0]
    r = fedopt("solve", "bandwidth", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert KEYS | {"b"} == set(json.loads(r.stdout))


def test_table_output(tmp_path, capsys):
    f = tmp_path / "bw.json"
    f.write_text(json.dumps(GOOD_BW))
    r = fedopt_inproc(capsys, "solve", "bandwidth", str(f), "--method", "alg1")
    assert r.returncode == 0, r.stderr
    assert "status" in r.stdout and "objective" in r.stdout and "\nb " in r.stdout
    f2 = tmp_path / "pw.json"
    f2.write_text(json.dumps(GOOD_PW))
    r = fedopt_inproc(capsys, "solve", "power", str(f2), "--method", "max", "--json")
    out = json.loads(r.stdout)
    assert out["p"] == 0.2 and out["status"] == "feasible"


def _bad(base: dict, **changes) -> dict:
    d = dict(base)
    for k, v in changes.items():
        if v is KeyError:
            d.pop(k)
        else:
            d[k] = v
    return d


MALFORMED = {
    "not_json": ("bandwidth", "{not json", "not valid JSON"),
    "missing_key": ("bandwidth", _bad(GOOD_BW, c=KeyError), "missing key 'c'"),
    "unequal_lengths": ("bandwidth", _bad(GOOD_BW, a=[1.0]), "'a' has length 1"),
    "nan": ("bandwidth", '{"problem": "bandwidth", "w": [NaN, 0.2], "a": [5, 10], '
            '"c": [0.001, 0.002], "b_min": [0.01, 0.01]}', "NaN"),
    "inf": ("bandwidth", '{"problem": "bandwidth", "w": [0.1, 0.2], "a": [Infinity, 10], '
            '"c": [0.001, 0.002], "b_min": [0.01, 0.01]}', "Infinity"),
    "huge_number_inf": ("bandwidth", _bad(GOOD_BW, c=[1e400, 0.1]), "finite"),
    "negative_w": ("bandwidth", _bad(GOOD_BW, w=[-0.1, 0.2]), "'w[0]'"),
    "negative_a": ("bandwidth", _bad(GOOD_BW, a=[5.0, -1.0]), "'a[1]'"),
    "negative_c": ("bandwidth", _bad(GOOD_BW, c=[-0.001, 0.002]), "'c[0]'"),
    "b_min_zero": ("bandwidth", _bad(GOOD_BW, b_min=[0.0, 0.01]), "b_min"),
    "b_min_negative": ("bandwidth", _bad(GOOD_BW, b_min=[0.01, -0.01]), "b_min"),
    "b_min_above_b_max": ("bandwidth", _bad(GOOD_BW, b_min=[0.5, 0.01], b_max=[0.4, 1.0]),
                          "exceeds 'b_max[0]'"),
    "infeasible": ("bandwidth", _bad(GOOD_BW, b_min=[0.6, 0.6]), "infeasible"),
    "wrong_problem": ("bandwidth", GOOD_PW, "expected 'bandwidth'"),
    "not_an_object": ("bandwidth", "[1, 2]", "JSON object"),
    "string_values": ("bandwidth", _bad(GOOD_BW, w="abc"), "'w'"),
    "power_missing": ("power", _bad(GOOD_PW, kappa=KeyError), "missing key 'kappa'"),
    "power_negative_W": ("power", _bad(GOOD_PW, W=[-0.2, 0.3]), "'W[0]'"),
    "power_pmin_above_pmax": ("power", _bad(GOOD_PW, p_min=0.5), "exceeds 'p_max'"),
    "round_missing": ("round", '{"problem": "round", "a": [1.0]}', "missing key 'kappa'"),
    "round_bad_b_min": ("round", '{"problem": "round", "a": [0.1], "kappa": [0.1], '
                        '"omega": [1], "S": [1e6], "b_min": [[-0.1]], "E_cmp": [[0]], '
                        '"Delta": [[0]], "Gamma": [[1]], "rho": 1, "B": 1e6, "theta": 1, '
                        '"alpha": 3.5, "P_min": 0.001, "P_max": 0.2, "M_max": 1}',
                        "'b_min[0][0]' = -0.1"),
    "power_nan": ("power", '{"problem": "power", "W": [0.2], "A": [0.1], "kappa": NaN, '
                  '"alpha": 3.5, "C": 1, "p_min": 0.001, "p_max": 0.2}', "NaN"),
}


@pytest.fixture(scope="module")
def malformed_runs(tmp_path_factory):
    """Run every malformed case through the console script once, a few at a time."""
    from concurrent.futures import ThreadPoolExecutor

    d = tmp_path_factory.mktemp("malformed")
    jobs = {}
    for case, (kind, content, _) in MALFORMED.items():
        f = d / f"{case}.json"
        f.write_text(content if isinstance(content, str) else json.dumps(content))
        jobs[case] = ("solve", kind, str(f), "--json")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(fedopt, *args) for case, args in jobs.items()}
        return {case: fut.result() for case, fut in futures.items()}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_one_line_exit_2(malformed_runs, case):
    _, _, needle = MALFORMED[case]
    r = malformed_runs[case]
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fedopt solve: error:")
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_missing_file_and_bad_method(tmp_path, capsys):
    def fedopt(*args):  # in-process; the malformed-file cases above use the console script
        return fedopt_inproc(capsys, *args)

    r = fedopt("solve", "bandwidth", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "file not found" in r.stderr
    f = tmp_path / "bw.json"
    f.write_text(json.dumps(GOOD_BW))
    r = fedopt("solve", "bandwidth", str(f), "--method", "max")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "does not apply to bandwidth" in r.stderr
    r = fedopt("solve", "bandwidth", str(f), "--method", "simplex")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = fedopt("solve", "bandwidth", str(shared_examples("bandwidth_nonconvex")[0]),
               "--method", "cvxpy")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "every term convex" in r.stderr


# --- fedopt solve round (7) ---------------------------------------------------------------------

ROUND_CASES = [(p, m) for p in shared_examples("round_example") for m in ("auto", "bcd", "joint")] + [
    (p, "scip") for p in shared_examples("round_example_0")]


@pytest.mark.parametrize("path, method", ROUND_CASES, ids=lambda v: getattr(v, "stem", v))
def test_solve_round_feasible_and_above_scip_bound(path, method, capsys):
    """Feasible for (7), objective = RoundSystem.objective at the point, never below SCIP's
    stored dual bound (an independent reference)."""
    import math

    import numpy as np

    from fedopt.instances import load_instance

    r = fedopt_inproc(capsys, "solve", "round", str(path), "--method", method, "--json",
                      "--time-limit", "20")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert KEYS == set(out) and out["method"] == method
    assert set(out["x"]) == {"x", "p", "b"}
    inst = load_instance(path)
    x = np.array(out["x"]["x"])
    p = np.array(out["x"]["p"], float)
    b = np.array(out["x"]["b"], float)
    assert x.shape == b.shape == (inst.K, inst.M) and p.shape == (inst.K,)
    on = x > 0
    assert set(np.unique(x)) <= {0, 1}
    if method == "bcd":
        np.testing.assert_array_equal(x, inst.x)
    assert (on.sum(axis=1) <= inst.M_max).all()  # (7b)
    assert not (on & ~np.isfinite(inst.b_min)).any()  # (7c)
    assert (b[on] >= inst.b_min[on]).all() and (b[on] <= 1).all()  # (7d)
    assert math.fsum(b[on]) <= 1 + 1e-12
    used = on.any(axis=1)
    assert (p[used] >= inst.P_min).all() and (p[used] <= inst.P_max).all()  # (7e)
    assert on.sum() >= inst.floor
    assert out["status"] in ("optimal", "feasible", "time_limit")
    obj = inst.system().objective(x, p, b)
    assert out["objective"] == pytest.approx(obj, rel=1e-12)
    ref = json.loads(path.read_text())["reference"]
    assert out["objective"] >= ref["scip_bound"] * (1 - 1e-6)
    if method == "bcd":
        assert out["objective"] <= ref["bcd_objective"] * (1 + 1e-6)
    if method == "auto":  # certified, and never worse than SCIP's incumbent
        assert out["status"] == "optimal" and out["gap"] <= 1e-6
        assert out["objective"] <= ref["scip_objective"] * (1 + 1e-9)
        assert out["bound"] <= ref["scip_objective"]


def test_solve_round_table_and_bad_method(tmp_path, capsys):
    path = shared_examples("round_example_0")[0]
    r = fedopt_inproc(capsys, "solve", "round", str(path))
    assert r.returncode == 0, r.stderr
    assert "auto" in r.stdout and "pairs (k,m)" in r.stdout
    r = fedopt_inproc(capsys, "solve", "round", str(path), "--method", "lambertw")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "does not apply to round" in r.stderr
    data = json.loads(path.read_text())
    data.pop("x")
    f = tmp_path / "no_x.json"
    f.write_text(json.dumps(data))
    r = fedopt_inproc(capsys, "solve", "round", str(f), "--method", "bcd")
    assert r.returncode == 2 and "needs the switching 'x'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = fedopt_inproc(capsys, "solve", "round", str(shared_examples("power")[0]))
    assert r.returncode == 2 and "expected 'round'" in r.stderr
