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
