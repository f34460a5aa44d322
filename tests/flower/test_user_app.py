"""A Flower user's own app (experiments/flower/mlp): a plain torch MLP, 3 clients, M = 1,
started from ``ArrayRecord(model.state_dict())``; and Flower's conventions around it.

Run in-process over the conftest's Grid (each node runs the real ClientApp). References: the
hand-computed FedAvg (1) of the clients' own training, and a Flower-template client that
replies its new weights under "arrays" (the strategy must turn them into the same changes).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
torch = pytest.importorskip("torch")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from fedopt.config import SystemConfig  # noqa: E402
from fedopt.flower import FedOptStrategy  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "experiments" / "flower" / "mlp"
USER_FILES = ["task.py", "client_app.py", "server_app.py"]


@pytest.fixture(scope="module")
def mlp():
    sys.path.insert(0, str(APP))
    try:
        yield {name: importlib.import_module(f"mlp_app.{name}")
               for name in ("task", "client_app", "server_app")}
    finally:
        sys.path.remove(str(APP))
        for name in [m for m in sys.modules if m.startswith("mlp_app")]:
            del sys.modules[name]


def _code_lines(path: Path) -> int:
    """Lines of code: not blank, not a comment, not a docstring line."""
    n, doc = 0, False
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith('"""'):
            doc = not (s.endswith('"""') and len(s) > 3) and not doc
            continue
        if doc or not s or s.startswith("#"):
            continue
        n += 1
    return n


def test_the_user_app_is_at_most_40_lines():
    assert sum(_code_lines(APP / "mlp_app" / f) for f in USER_FILES) <= 40


def _context(k: int = -1) -> Context:
    return Context(run_id=1, node_id=1, node_config={} if k < 0 else {"partition-id": k},
                   state=RecordDict(), run_config={"num-server-rounds": 2})


def test_the_user_app_runs(mlp, make_grid, capsys):
    """2 rounds; every round the allocator schedules the clients it can afford, each trains
    with the user's loop, and the new model is the D_k-weighted mean (1) of the received
    changes (test_a_changes_reply_equals_eq1_by_hand checks that by hand)."""
    grid = make_grid(mlp["client_app"].app, 3, seed=4)
    mlp["server_app"].app(grid, _context())
    out = capsys.readouterr().out
    assert "round 0:" in out and "round 1:" in out and "final model:" in out
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert trains and all("arrays" in m.content and "module-0" in m.content for m in trains)


def _strategy(**kw) -> FedOptStrategy:
    system = SystemConfig.from_dict({"K": 3, "M": 1, "ranks": [1], "M_max": 1, "local_steps": 5,
                                     "lr": 0.1})
    return FedOptStrategy.from_settings(system, simulate_uplink=False, **kw)


def _template_app(task) -> ClientApp:
    """A ClientApp as Flower's PyTorch template writes it: no query handler (no properties,
    no partition-id reported), weights in and *new weights* out under "arrays"."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model = task.Net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        data, _ = task.load_data(context)
        loss = task.train(model, data)
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                   "metrics": MetricRecord({"train_loss": loss,
                                                            "num-examples": len(data)})}),
                       reply_to=msg)

    return app


def test_weights_and_changes_give_the_same_model(mlp, make_grid, caplog):
    """A template client (new weights under "arrays", no properties) and fedopt's helper
    (changes under "module-0") end in the same model, both started from
    ArrayRecord(model.state_dict()); the template nodes get the channel model with one warning
    line each."""
    task = mlp["task"]
    start = ArrayRecord(task.Net().state_dict())
    finals = []
    for app in (mlp["client_app"].app, _template_app(task)):
        st = _strategy(fraction_evaluate=0.0)
        grid = make_grid(app, 3, seed=4)
        res = st.start(grid, start, num_rounds=2)
        finals.append((res.arrays.to_torch_state_dict(), [np.asarray(a.x) for a in st.allocations]))
    (a, xa), (b, xb) = finals
    assert all((p == q).all() for p, q in zip(xa, xb))  # the same schedules ...
    assert set(a) == set(b) == set(task.Net().state_dict())
    for k in a:  # ... and the same model (float32 round-off of w - theta)
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert any(not torch.equal(a[k], start.to_torch_state_dict()[k]) for k in a)  # it trained
    warnings = [r.message for r in caplog.records if "configured channel model" in r.message]
    assert len(warnings) == 6  # one line per node and run: the helper's nodes report |D_k| ...
    assert sum("data-size" in w for w in warnings) == 3  # ... the template's nothing


def test_a_changes_reply_equals_eq1_by_hand(mlp, make_grid):
    """One round, delivered uplink: θ' = θ + Σ_k (D_k / Σ D) Δ_k over the scheduled clients,
    with Δ_k the user's own training from θ (eq. (1))."""
    task = mlp["task"]
    st = _strategy(fraction_evaluate=0.0)
    grid = make_grid(mlp["client_app"].app, 3, seed=4)
    theta = task.Net().state_dict()
    res = st.start(grid, ArrayRecord(theta), num_rounds=1)
    x = np.asarray(st.allocations[0].x)[:, 0] > 0
    assert x.any()
    deltas, sizes = [], []
    for k in np.flatnonzero(x):
        model = task.Net()
        data, _ = task.load_data(_context(int(k)))
        task.train(model, data)
        deltas.append({n: model.state_dict()[n] - theta[n] for n in theta})
        sizes.append(len(data))
    w = np.asarray(sizes, float) / sum(sizes)
    got = res.arrays.to_torch_state_dict()
    for n in theta:
        want = theta[n] + sum(float(wi) * d[n] for wi, d in zip(w, deltas))
        assert torch.allclose(got[n], want, atol=1e-6), n


def test_fraction_train_and_metric_aggregation_knobs(mlp, make_grid):
    """FedAvg's knobs: fraction_train samples the nodes the allocator may schedule (at least
    min_train_nodes); the metric callables see the replies' RecordDicts and the weighting key."""
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    seen = []

    def train_aggr(contents, key):
        seen.append((len(contents), key))
        return MetricRecord({"clients": len(contents)})

    st = _strategy(fraction_train=0.34, min_train_nodes=1, train_metrics_aggr_fn=train_aggr,
                   evaluate_metrics_aggr_fn=aggregate_metricrecords, weighted_by_key="num-examples")
    grid = make_grid(mlp["client_app"].app, 3, seed=4)
    res = st.start(grid, ArrayRecord(mlp["task"].Net().state_dict()), num_rounds=2)
    for a in st.allocations:
        assert (np.asarray(a.x) > 0).any(axis=1).sum() <= 2  # ceil(0.34 * 3) = 2 may train
    assert seen and all(key == "num-examples" for _, key in seen)
    assert res.train_metrics_clientapp[1]["clients"] == seen[0][0]
    assert set(res.evaluate_metrics_clientapp[1]) >= {"loss", "accuracy"}
