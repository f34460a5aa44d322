"""Two exchanges a round: the next round's probes ride the evaluate exchange.

Reference: the same run with ``fold_probes=False`` (a probe query exchange each round) and
``fedopt simulate``; all three must end with the same modules and rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedopt.fl.config import RunConfig  # noqa: E402
from fedopt.fl.setup import build_run  # noqa: E402
from fedopt.flower.records import ACTION, pack_modules, unpack_modules  # noqa: E402
from fedopt.flower.sim import client_app, compare_params, make_strategy  # noqa: E402


def _run(run, make_grid, fold):
    setup = build_run(run)
    st = make_strategy(setup, fold_probes=fold)
    grid = make_grid(client_app(run), run.system.K, seed=7)
    res = st.start(grid, pack_modules(setup.params), num_rounds=run.rounds)
    queries = [m for m in grid.sent if m.metadata.message_type == "query"
               and m.content["config"].get(ACTION) == "probe"]
    return st, unpack_modules(res.arrays, run.system.M), grid, queries


def test_probes_folded_into_evaluate_give_the_same_run(make_grid):
    from fedopt.fl.runtime import Simulation

    example = Path(__file__).resolve().parents[2] / "experiments" / "flower" / "fedopt.yaml"
    run = RunConfig.load(str(example), ["probe_fraction=0.5", "rounds=3"])
    st_f, theta_f, grid_f, q_f = _run(run, make_grid, True)
    st_u, theta_u, _, q_u = _run(run, make_grid, False)
    sim = Simulation(run, None, progress=False)
    sim.run()
    assert compare_params(theta_f, theta_u) == 0.0
    assert compare_params(theta_f, sim.params) < 1e-12
    for a, b in zip(st_f.history, sim.rows, strict=True):
        assert a["subscriptions"] == b["subscriptions"] and a["received"] == b["received"]
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
    # folded: probe queries only in round 1; unfolded: every round
    assert {int(m.content["config"]["server-round"]) for m in q_f} == {1}
    assert {int(m.content["config"]["server-round"]) for m in q_u} == {1, 2, 3}
    carried = [m for m in grid_f.sent if m.metadata.message_type == "evaluate"
               and "probe-modules" in m.content["config"]]
    assert {int(m.content["config"]["server-round"]) for m in carried} == {1, 2}  # not after the last
