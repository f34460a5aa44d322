"""The --quick version of every figure through the CLI, checked against closed forms:
bisection's iteration bound (Fig. 3), the certified global optimum (Fig. 3), the
Cauchy-Schwarz minimum of max-power energy (Fig. 5), and the runs' own bookkeeping."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from fedopt.cli import main
from fedopt.experiments.training import rounds_to_converge, smoothed


def read(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def run_quick(fig, tmp_path, *extra):
    rc = main(["experiment", fig, "--quick", "--out", str(tmp_path), "--no-progress", *extra])
    assert rc == 0
    d = tmp_path / fig
    for name in (f"{fig}.png", f"{fig}.md", "summary.json", "config.yaml"):
        assert (d / name).is_file(), name
    return d, json.loads((d / "summary.json").read_text())


def test_fig3_quick(tmp_path):
    d, s = run_quick("fig3", tmp_path)
    rows = read(d / "fig3_iterations.csv")
    # bisection bound: shrinking the bracket [0, ν_max] to a width ε·ν* by halving takes
    # log2(ν_max / (ε ν*)) steps; Algorithm 1's geometric steps are never slower
    for r in rows:
        nu, nu_max, eps = float(r["nu"]), float(r["nu_max"]), float(r["eps"])
        if nu > 0:
            assert int(r["iterations"]) <= math.log2(nu_max / (eps * nu)) + 3
    assert math.log2(10) - 0.8 < s["slope_iterations_per_decade"] < math.log2(10) + 0.8
    assert s["r2"] > 0.95  # 3 tolerances x 2 seeds at the quick scale
    lat = read(d / "fig3_latency.csv")
    for r in lat:
        if r["method"] == "alg1" and r["gap_to_bound"]:
            assert float(r["gap_to_bound"]) < 1e-6  # Algorithm 1 vs the certified optimum
        if r["method"] == "global":
            assert r["status"] == "optimal"
    assert any(r["method"] == "scip" for r in lat)


def test_fig5_quick(tmp_path):
    from fedopt.experiments.rounds import floor_schedule, measured_round
    from fedopt.fl.config import RunConfig

    d, s = run_quick("fig5", tmp_path)
    rows = read(d / "fig5.csv")
    by = {}
    for r in rows:
        by.setdefault((r["seed"], r["sweep"], r["snr_db"], r["rho"]), {})[r["power"]] = r
    for pair in by.values():  # adaptive power solves (21) exactly: never a worse objective
        assert float(pair["adaptive"]["objective"]) <= float(pair["max"]["objective"]) * (1 + 1e-5)
    # closed form: with p = P_max, Σ S/(b B log2(1+θ)) over Σ b ≤ 1 is at least (Σ√S)²/(B log2(1+θ))
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((d / "config.yaml").read_text())))
    for seed in cfg["resolved"]["seeds"]:
        run = RunConfig.from_dict({**cfg["run"], "seed": seed, "checkpoint_every": 0})
        sim, _, sys_ = measured_round(run)
        x = floor_schedule(sys_.b_min, run.system.beta, np.random.default_rng([seed, 5]))
        k, m = np.nonzero(x)
        floor = run.system.P_max * np.sum(np.sqrt(sys_.S[m])) ** 2 / sys_.rate_per_b
        e_max = [float(r["energy_communication"]) for r in rows
                 if int(r["seed"]) == seed and r["power"] == "max"]
        assert min(e_max) >= floor * (1 - 1e-5)  # the CSV keeps 6 significant digits
        # at the largest ρ the energy term dominates: the allocation sits at the closed form
        big = max(float(r["rho"]) for r in rows if r["sweep"] == "rho")
        e_big = [float(r["energy_communication"]) for r in rows if int(r["seed"]) == seed
                 and r["power"] == "max" and r["sweep"] == "rho" and float(r["rho"]) == big]
        assert e_big[0] == pytest.approx(floor, rel=0.05)


def test_fig4_quick(tmp_path):
    d, s = run_quick("fig4", tmp_path)
    rows = read(d / "fig4.csv")
    schemes = {r["scheme"] for r in rows}
    assert schemes == {"proposed", "greedy", "one_shot", "energy"}
    T = max(int(r["round"]) for r in rows)
    assert len(rows) == len(schemes) * len(s["seeds"]) * T
    for r in rows:
        a = float(r["accuracy"])
        assert 0.0 <= a <= 1.0
    assert all(v > 0 for v in s["energy_budget_per_ue_round_J"].values())


def test_fig2_quick(tmp_path):
    from fedopt.baselines import full_parameter
    from fedopt.fl.config import RunConfig

    d, s = run_quick("fig2", tmp_path)
    rows = read(d / "fig2.csv")
    assert {r["scheme"] for r in rows} == {"proposed", "fedlora", "full", "hetlora", "flexlora"}
    cfg = __import__("yaml").safe_load((d / "config.yaml").read_text())
    for r in rows:
        n = float(r["rounds_to_converge"])
        assert float(r["slots_to_converge"]) == n * int(r["slots_per_round"])
        if r["scheme"] == "full":
            base = RunConfig.from_dict({**cfg["run"], "K": int(r["K"]), "seed": 0,
                                        "checkpoint_every": 0})
            assert int(r["slots_per_round"]) == full_parameter(base)[1] > 1
        else:
            assert int(r["slots_per_round"]) == 1


def test_fig2_global_metric_follows_the_runs_global_accuracy(tmp_path):
    """metric: global_accuracy ranks convergence on the run's global test accuracy: the curves
    equal a direct run's global_accuracy, and rounds-to-converge is recomputed from them."""
    import yaml

    from fedopt.experiments.training import run_config, run_one

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"metric": "global_accuracy", "schemes": ["proposed", "fedlora"],
                                    "quick": {"K": [6], "seeds": 1, "run": {"rounds": 6},
                                              "target": 0.3, "window": 2}}))
    d, s = run_quick("fig2", tmp_path, "--config", str(path))
    assert s["metric"] == "global_accuracy"
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    direct = run_one("fedlora", run_config(cfg, "synthetic", 0, K=6))
    curve = [float(r["accuracy"]) for r in read(d / "fig2_curves.csv") if r["scheme"] == "fedlora"]
    np.testing.assert_allclose(curve, direct["global_accuracy"], rtol=0, atol=1e-12)
    row = next(r for r in read(d / "fig2.csv") if r["scheme"] == "fedlora")
    assert float(row["rounds_to_converge"]) == rounds_to_converge(direct["global_accuracy"], 0.3, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("metric: loss\n")
    assert main(["experiment", "fig2", "--quick", "--config", str(bad), "--out", str(tmp_path),
                 "--no-progress"]) == 2


def test_fig2_jobs_and_resume(tmp_path):
    """--jobs 2 gives the sequential run's CSV byte for byte; --resume loads the stored groups
    (a tampered stored curve shows up), --overwrite recomputes them (the tamper is gone)."""
    one, _ = run_quick("fig2", tmp_path / "one")
    two, _ = run_quick("fig2", tmp_path / "two", "--jobs", "2")
    assert (one / "fig2.csv").read_text() == (two / "fig2.csv").read_text()
    stored = two / "runs" / "K6_seed0.json"
    data = json.loads(stored.read_text())
    data["result"]["fedlora"]["accuracy"] = [0.987654] * len(data["result"]["fedlora"]["accuracy"])
    stored.write_text(json.dumps(data))

    def fedlora_final(d):
        return next(float(r["final_accuracy"]) for r in read(d / "fig2.csv")
                    if r["scheme"] == "fedlora" and r["K"] == "6" and r["seed"] == "0")

    resumed, _ = run_quick("fig2", tmp_path / "two", "--resume")
    assert fedlora_final(resumed) == pytest.approx(0.987654)
    rerun, _ = run_quick("fig2", tmp_path / "two", "--overwrite")
    assert fedlora_final(rerun) == fedlora_final(one)
    stored.write_text("{not json")  # a corrupt store is run again, not a traceback
    healed, _ = run_quick("fig2", tmp_path / "two", "--resume")
    assert fedlora_final(healed) == fedlora_final(one)
    assert json.loads(stored.read_text())["result"]["fedlora"]["accuracy"][0] != 0.987654


def test_rounds_to_converge_by_hand():
    acc = [0.1, 0.5, 0.7, float("nan"), 0.9, 0.9]
    np.testing.assert_allclose(smoothed(acc, 2), [0.1, 0.3, 0.6, 0.7, 0.9, 0.9])
    assert rounds_to_converge(acc, 0.6, 2) == 3
    assert rounds_to_converge(acc, 0.95, 2) == math.inf


@pytest.mark.parametrize("argv", [
    ["experiment", "fig9"],
    ["experiment", "fig3", "--seeds", "0"],
    ["experiment", "fig3", "--quick", "--set", "K=-1"],
    ["experiment", "fig3", "--config", "/nonexistent/fig3.yaml"],
    ["experiment", "fig3", "--quick", "--jobs", "2"],
    ["experiment", "fig2", "--quick", "--jobs", "0"],
])
def test_bad_input_exits_2(argv, tmp_path, capsys):
    try:
        rc = main(argv + ["--out", str(tmp_path), "--no-progress"])
    except SystemExit as exc:  # argparse
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
