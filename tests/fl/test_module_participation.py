"""Per-module subscribers and received uploads in every metrics row: a module that keeps one
or two subscribers is trained on their data alone (docs/RESULTS.md, QNLI). Checked against
the played x and the uplink draws s of the run's trace; the Flower strategy's hand-drawn
uplink checks the same columns (tests/flower/test_strategy.py)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np

from fedopt.fl.config import RunConfig
from fedopt.fl.runtime import Simulation


def test_rows_summary_and_plot_count_each_module(tmp_path):
    run = RunConfig.from_dict({"K": 12, "M": 3, "ranks": [2, 4, 8], "M_max": 2, "rounds": 6,
                               "checkpoint_every": 0, "eval_every": 3, "seed": 4})
    sim = Simulation(run, tmp_path, progress=False)
    summary = sim.run()
    x = np.array(sim.trace["x"], bool)  # (T, K, M) as played
    s = np.array(sim.trace["s"], bool)  # (T, K, M) received
    assert x.sum() > 0 and 0 < s.sum() < x.sum()  # the seed loses some uploads
    for t, row in enumerate(sim.rows):
        for m in range(3):
            assert row[f"subscriptions_{m}"] == int(x[t, :, m].sum())
            assert row[f"received_{m}"] == int(s[t, :, m].sum())
        assert sum(row[f"received_{m}"] for m in range(3)) == row["received"]
    assert np.allclose(summary["module_mean_subscriptions"], x.sum(axis=1).mean(axis=0))
    assert np.allclose(summary["module_mean_received"], s.sum(axis=1).mean(axis=0))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["module_mean_received"] == summary["module_mean_received"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"subscriptions_2", "received_2"} <= set(header)
    img = plt.imread(tmp_path / "participation.png")
    assert img.shape[0] > img.shape[1]  # the per-module panel under the fractions


def test_rows_without_module_columns_still_summarize_and_plot(tmp_path):
    """A run checkpointed before these columns existed resumes with rows that lack them."""
    from fedopt.fl.metrics import plot_run, summarize

    run = RunConfig.from_dict({"K": 6, "rounds": 3, "checkpoint_every": 0, "eval_every": 3})
    sim = Simulation(run, None, progress=False)
    sim.run()
    rows = [dict(r) for r in sim.rows]
    for r in rows[:1]:
        for k in [k for k in r if k.startswith(("subscriptions_", "received_"))]:
            del r[k]
    out = summarize(rows, np.zeros(6), 0.0)
    assert "module_mean_subscriptions" not in out
    assert len(plot_run(rows, tmp_path)) == 3
