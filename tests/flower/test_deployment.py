"""Flower's Deployment Engine on loopback: a SuperLink and 2 SuperNodes, ``flwr run`` of the
example app (experiments/flower), checked against ``fedopt simulate`` on the same seed.

This is the CI version (2 nodes, 2 rounds, synthetic full batch); ``fedopt flower deploy
--nodes 10`` is the full one. Every process gets free ports and is ended at exit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedopt.fl.config import RunConfig  # noqa: E402
from fedopt.flower.deploy import DeploymentError, LocalFederation, _descendants, _running  # noqa: E402
from fedopt.flower.results import read_params, read_rows  # noqa: E402
from fedopt.flower.sim import compare_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "experiments" / "flower"
EXAMPLE = APP / "fedopt.yaml"

pytestmark = pytest.mark.skipif(shutil.which("flower-superlink") is None
                                and not (ROOT / ".venv" / "bin" / "flower-superlink").exists(),
                                reason="Flower's deployment scripts are not installed")


def _all_ended(fed: LocalFederation) -> bool:
    return all(p.poll() is not None for p in fed.procs.values())


def test_loopback_deployment_equals_fedopt_simulate(tmp_path):
    """2 SuperNodes, 2 rounds: the same schedule, uploads, energies, ensemble losses (3) and
    final modules as ``fedopt simulate``, to 1e-12; nothing is left running afterwards, also
    when a run fails."""
    from fedopt.fl.runtime import Simulation

    sets = ["K=2", "rounds=2"]
    out = tmp_path / "out"
    fed = LocalFederation(2, home=tmp_path / "flwr")
    # a run that fails (no Flower App in the folder) after a good one: one error, and every
    # process is ended all the same
    with pytest.raises(DeploymentError, match="not a Flower App"), fed:
        family = [pid for p in fed.procs.values() for pid in [p.pid, *_descendants(p.pid)]]
        fed.run(APP, {"config": str(EXAMPLE), "set": ";".join(sets), "out": str(out)}, timeout=240)
        fed.run(tmp_path, {}, timeout=30)
    assert _all_ended(fed) and not any(_running(pid) for pid in family)

    run = RunConfig.load(str(EXAMPLE), sets)
    sim = Simulation(run, None, progress=False)
    sim.run()
    assert compare_params(read_params(out), sim.params) <= 1e-12
    rows = read_rows(out)
    assert len(rows) == len(sim.rows) == 2
    for ours, theirs in zip(rows, sim.rows, strict=True):
        for key in ("subscriptions", "arrived", "received", "participation", "error_replies"):
            assert ours[key] == theirs.get(key, 0), key
        for key in ("energy", "energy_computation", "energy_communication", "bandwidth",
                    "objective", "loss", "accuracy"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-12), key


def _wait_for(pred, timeout: float, what: str) -> None:
    import time

    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_supernode_killed_mid_round_is_counted_and_skipped_until_it_returns(tmp_path):
    """3 SuperNodes, 5 rounds. Node 2 is ended (SIGTERM: it leaves the federation) as soon as
    its round-2 train message arrives: round 2 finishes, its reply is an error the SuperLink
    writes (counted); node 2 is not scheduled while it is away; restarted (a new node id, the
    same partition-id) it is asked for its properties again and the run goes on to the end.
    CI runs the in-process version (test_failures.py)."""
    import json
    import signal
    import threading

    out = tmp_path / "out"
    fed = LocalFederation(3, home=tmp_path / "flwr")
    errors: list[BaseException] = []
    with fed:
        def run():
            try:
                fed.run(APP, {"config": str(EXAMPLE), "set": "K=3;rounds=5;beta=0.9",
                              "out": str(out)}, timeout=900)
            except BaseException as exc:  # reported below
                errors.append(exc)

        runner = threading.Thread(target=run)
        runner.start()
        log2 = fed.logs / "supernode-2.log"
        run_log = fed.logs / "flwr-run.log"

        def trains() -> int:
            return log2.read_text(errors="replace").count("Receiving: train message")

        _wait_for(lambda: trains() >= 2, 600, "node 2's round-2 train message")
        fed.stop_node(2, signal.SIGTERM)
        _wait_for(lambda: "fedopt round 3:" in run_log.read_text(errors="replace"), 600,
                  "round 4 to finish without node 2")
        fed.restart_node(2)
        runner.join(900)
        assert not runner.is_alive() and not errors, errors
    rows = read_rows(out)
    schedule = json.loads((out / "schedule.json").read_text())
    assert len(rows) == 5
    assert rows[1]["error_replies"] + rows[1]["missing_replies"] >= 1  # round 2: the kill
    assert not any(schedule[2][2]) and not any(schedule[3][2])  # away: never scheduled
    assert rows[1]["error_replies"] >= 1  # the SuperLink's NODE_UNAVAILABLE, matched and counted
    new_log = (fed.logs / "supernode-2.log").read_text(errors="replace")
    assert "Receiving: query message" in new_log  # back: asked for its properties again


@pytest.mark.parametrize("argv, says", [
    (["--app", "experiments/flower/mlp", "--set", "K=3"], "no fedopt run config"),
    (["--app", "experiments/flower/mlp"], "--nodes: needed"),
    (["--app", "tests"], "not a Flower App"),
    (["--set", "rounds=2;K=3"], "may not contain ';'"),
])
def test_deploy_refuses_bad_requests_in_one_line_before_starting_anything(argv, says, capsys,
                                                                         monkeypatch):
    """Exit code 2 and one line, before any process starts."""
    from fedopt.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(LocalFederation, "start", lambda self: pytest.fail("started"))
    assert main(["flower", "deploy", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


@pytest.mark.slow
def test_every_baseline_in_deployment_equals_fedopt_simulate(tmp_path):
    """The baselines in Flower's Deployment Engine (2 SuperNodes, 2 rounds, one federation):
    each ends with fedopt simulate's modules and rows to 1e-12 (the CI version runs Algorithm 2
    above; tests/flower/test_parity.py runs every scheme in-process)."""
    from fedopt.flower.sim import run_runtime

    sets = ["K=2", "rounds=2"]
    run = RunConfig.load(str(EXAMPLE), sets)
    with LocalFederation(2, home=tmp_path / "flwr") as fed:
        for scheme in ("fedlora", "full", "hetlora", "flexlora"):
            out = tmp_path / scheme
            fed.run(APP, {"config": str(EXAMPLE), "set": ";".join(sets), "out": str(out),
                          "scheme": scheme}, timeout=600)
            rt = run_runtime(run, scheme)
            assert compare_params(read_params(out), rt["simulation"].params) <= 1e-12, scheme
            for ours, theirs in zip(read_rows(out), rt["simulation"].rows, strict=True):
                assert ours["received"] == theirs["received"], scheme
                assert ours["energy"] == pytest.approx(theirs["energy"], rel=1e-12), scheme
                assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-12), scheme
