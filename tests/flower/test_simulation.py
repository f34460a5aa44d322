"""Flower's Ray simulation engine end to end, and the ``fedopt flower`` CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from fedopt.flower.sim import BACKEND_CONFIG, run_flower_simulation  # noqa: E402


@pytest.mark.slow
def test_ray_simulation_matches_the_plan(example_run):
    """10 nodes, 3 rounds, synthetic backend, Ray engine with 2 CPUs (about 15-20 s here,
    mostly Ray and worker start-up)."""
    assert example_run.system.K == 10 and example_run.rounds == 3
    out = run_flower_simulation(example_run, backend_config=BACKEND_CONFIG)
    st = out["strategy"]
    assert len(st.history) == 3 and len(st.allocations) == 3
    # the loss decreases: the nodes' ω-weighted ensemble loss (3), round by round
    losses = [st.evaluations[r]["loss"] for r in (1, 2, 3)]
    assert losses[-1] < losses[0]
    assert all(st.evaluations[r]["nodes"] == 10 for r in (1, 2, 3))
    # logged participation and energy are what the allocator planned, and every planned
    # upload came back from its node (none lost to the engine)
    for row, alloc in zip(st.history, st.allocations):
        x = np.asarray(alloc.x) > 0
        assert row["participation"] == pytest.approx(x.any(axis=1).mean())
        assert row["energy"] == pytest.approx(float(alloc.energy[x].sum()), rel=1e-12)
        assert row["subscriptions"] == int(x.sum()) == row["arrived"]
        assert row["error_replies"] == 0 and row["missing_replies"] == 0
    # that it ends where fedopt simulate ends, for every scheme: tests/flower/test_parity.py


@pytest.mark.parametrize("args, word", [
    (["--config", "missing.yaml"], "missing.yaml"),
    (["--set", "K=10", "--set", "rhoo=1"], "rhoo"),
    (["--cpus", "0"], "--cpus"),
    (["--set", "policy=greedyy"], "greedy"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, args, word):
    from fedopt.cli import main

    try:
        code = main(["flower", "simulate", *args])
    except SystemExit as exc:  # an option's argparse type (--cpus 0)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and word in err and len(err.strip().splitlines()) == 1


def test_importing_fedopt_never_imports_flower():
    code = ("import sys, fedopt, fedopt.fl, fedopt.allocator, fedopt.cli; "
            "sys.exit(int(any(m == 'flwr' or m.startswith('flwr.') for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
