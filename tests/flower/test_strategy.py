"""FedOptStrategy without Ray: per-node configs, aggregation (1), failed replies, and the
whole loop against ``fedopt simulate``'s runtime on the same seed (in-process Grid)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, MessageType  # noqa: E402

from fedopt.allocator import RoundState  # noqa: E402
from fedopt.backends import PairBatch, weighted_mean_aggregate  # noqa: E402
from fedopt.flower.records import (  # noqa: E402
    CONFIG_KEY,
    module_key,
    pack_modules,
    record_to_params,
    unpack_modules,
)
from fedopt.flower.sim import (  # noqa: E402
    build_run,
    client_app,
    compare_params,
    make_allocator,
    make_strategy,
)


def _round_one(run, make_grid, **kwargs):
    setup = build_run(run)
    st = make_strategy(setup, **kwargs)
    grid = make_grid(client_app(run), run.system.K, seed=7)
    user = ConfigRecord({"note": "from the user", "power": -5.0})  # fedopt's keys win
    msgs = list(st.configure_train(1, pack_modules(setup.params), user, grid))
    return setup, st, grid, msgs


def _reference_allocation(run):
    """Round 0 planned from scratch: the population's state and every pair probed at θ^0."""
    setup = build_run(run)
    pop, be = setup.pop, setup.backend
    K, M = pop.K, pop.M
    pairs = PairBatch.from_mask(np.ones((K, M)))
    loss, gsq = be.probe(pairs, setup.params)
    state = RoundState(t=0, distance=pop.d, data_size=np.asarray(pop.n_data, float),
                       loss=loss.reshape(K, M), grad_sq=gsq.reshape(K, M), cpu_freq=pop.f,
                       cycles_per_bit=pop.c, samples=setup.samples())
    return make_allocator(setup).allocate(state)


def test_per_node_configs_are_distinct_and_match_the_allocation(example_run, make_grid):
    setup, st, grid, msgs = _round_one(example_run, make_grid)
    ref = _reference_allocation(example_run)
    x = np.asarray(ref.x) > 0
    assert np.array_equal(np.asarray(st.pending.allocation.x) > 0, x)
    scheduled = np.flatnonzero(x.any(axis=1))
    assert len(msgs) == scheduled.size >= 3
    ues = [grid.node_ue[int(m.metadata.dst_node_id)] for m in msgs]
    assert sorted(ues) == scheduled.tolist()  # one message per scheduled UE, no other
    configs = [m.content[CONFIG_KEY] for m in msgs]
    assert len({id(c) for c in configs}) == len(configs)  # a fresh ConfigRecord per node
    assert len({(tuple(c["modules"]), c["power"], tuple(c["bandwidth"])) for c in configs}) > 1
    for msg, k, cfg in zip(msgs, ues, configs):
        assert msg.metadata.message_type == MessageType.TRAIN
        mods = np.flatnonzero(x[k])
        assert cfg["modules"] == mods.tolist()
        assert cfg["power"] == pytest.approx(ref.p[k], rel=1e-12)
        assert cfg["bandwidth"] == pytest.approx(ref.b[k, mods].tolist(), rel=1e-12)
        assert cfg["success-prob"] == pytest.approx(ref.q[k, mods].tolist(), rel=1e-12)
        assert cfg["local-steps"] == example_run.system.local_steps
        assert cfg["note"] == "from the user"
        sent = {m for m in range(setup.pop.M) if module_key(m) in msg.content}
        assert sent == set(mods.tolist())  # one ArrayRecord per module it trains, no other
        for m in mods:
            got = record_to_params(msg.content[module_key(m)])
            assert all(np.array_equal(got[key], setup.params[m][key]) for key in got)
    # mutating one node's config leaves the others alone
    configs[0]["power"] = -1.0
    assert all(c["power"] > 0 for c in configs[1:])


def _hand_aggregate(params, pairs, updates, n, received, normalize):
    """Eq. (1) written out: θ_m + Σ_k s_k D_k / D_m · g_k, D_m over received or subscribed."""
    out = []
    for m, theta in enumerate(params):
        idx = [i for i in range(len(pairs)) if pairs[i][1] == m]
        pool = [i for i in idx if received[i]] if normalize == "received" else idx
        D_m = sum(n[i] for i in pool)
        new = {}
        for key, value in theta.items():
            acc = value.copy()
            for i in idx:
                if received[i]:
                    acc = acc + (n[i] / D_m) * updates[i][key]
            new[key] = acc
        out.append(new)
    return out


@pytest.mark.parametrize("normalize", ["received", "subscribed"])
def test_aggregation_per_module_equals_eq1(example_run, make_grid, normalize):
    setup, st, grid, msgs = _round_one(example_run, make_grid, normalize=normalize)
    alloc = st.pending.allocation
    x = np.asarray(alloc.x) > 0
    replies = list(grid.send_and_receive(msgs))
    rng = copy.deepcopy(st.rng)  # the strategy's next draws: one per planned pair, row-major
    k_idx, m_idx = np.nonzero(x)
    u = rng.random(k_idx.size)
    received = u < alloc.q[k_idx, m_idx]
    assert received.any() and not received.all()  # the seed exercises both outcomes
    by_ue = {grid.node_ue[int(r.metadata.src_node_id)]: r for r in replies}
    pairs = list(zip(k_idx.tolist(), m_idx.tolist()))
    updates = [record_to_params(by_ue[k].content[module_key(m)]) for k, m in pairs]
    n = [float(np.asarray(by_ue[k].content["metrics"]["num-examples"])[
        by_ue[k].content["metrics"]["modules"].index(m)]) for k, m in pairs]
    arrays, metrics = st.aggregate_train(1, replies)
    got = unpack_modules(arrays, setup.pop.M)
    hand = _hand_aggregate(setup.params, pairs, updates, n, received, normalize)
    assert compare_params(got, hand) < 1e-13
    # and fedopt's own aggregation helper on the same received updates
    for m in range(setup.pop.M):
        sel = [i for i, (k, mm) in enumerate(pairs) if mm == m and received[i]]
        pool = sel if normalize == "received" else [i for i, (k, mm) in enumerate(pairs) if mm == m]
        w = np.array([n[i] for i in sel]) / sum(n[i] for i in pool) if sel else np.zeros(0)
        own = weighted_mean_aggregate(setup.params[m], [updates[i] for i in sel], w)
        assert compare_params([got[m]], [own]) < 1e-13
    assert metrics["received"] == int(received.sum())
    assert metrics["subscriptions"] == int(x.sum())
    for m in range(setup.pop.M):  # per module, against the hand-drawn uplink
        assert metrics[f"subscriptions_{m}"] == int(x[:, m].sum())
        assert metrics[f"received_{m}"] == int(received[m_idx == m].sum())


def test_error_reply_is_a_lost_upload_and_the_round_goes_on(example_run, make_grid):
    setup, st, grid, msgs = _round_one(example_run, make_grid, simulate_uplink=False)
    x = np.asarray(st.pending.allocation.x) > 0
    bad = int(np.flatnonzero(x.any(axis=1))[0])
    late = int(np.flatnonzero(x.any(axis=1))[1])
    grid.fail.add(bad)
    grid.drop.add(late)
    replies = list(grid.send_and_receive(msgs))
    assert sum(r.has_error() for r in replies) == 1
    arrays, metrics = st.aggregate_train(1, replies)  # no exception
    assert metrics["error_replies"] == 1 and metrics["missing_replies"] == 1
    lost = int(x[bad].sum() + x[late].sum())
    assert metrics["received"] == int(x.sum()) - lost
    for m in range(setup.pop.M):  # the failed and the late node's uploads are lost per module
        assert metrics[f"received_{m}"] == int(x[:, m].sum() - x[[bad, late], m].sum())
    # the aggregate is (1) over every other upload (real delivery: each arrival is received)
    k_idx, m_idx = np.nonzero(x)
    ok = [(k, m) for k, m in zip(k_idx.tolist(), m_idx.tolist()) if k not in (bad, late)]
    by_ue = {grid.node_ue[int(r.metadata.src_node_id)]: r for r in replies if not r.has_error()}
    updates = [record_to_params(by_ue[k].content[module_key(m)]) for k, m in ok]
    n = [float(setup.samples()[k]) for k, _ in ok]
    hand = _hand_aggregate(setup.params, ok, updates, n, [True] * len(ok), "received")
    assert compare_params(unpack_modules(arrays, setup.pop.M), hand) < 1e-13


def test_a_failing_node_never_stops_the_run(example_run, make_grid):
    setup = build_run(example_run)
    st = make_strategy(setup)
    grid = make_grid(client_app(example_run), example_run.system.K, seed=1, fail={0, 3},
                     fail_on=("train", "query", "evaluate"))
    result = st.start(grid, pack_modules(setup.params), num_rounds=3)
    assert len(st.history) == 3
    # their ClientApps raise on the properties query: they report nothing, so they stand for
    # the UEs no other node claims (0 and 3), with the channel model's values (issue 15)
    assert sorted(st.nodes.node_of_ue) == list(range(10))
    assert {grid.node_ue[st.nodes.node_of_ue[k]] for k in (0, 3)} == {0, 3}
    for row, alloc in zip(st.history, st.allocations):
        x = np.asarray(alloc.x) > 0
        assert row["error_replies"] == int(x[[0, 3]].any(axis=1).sum())  # their trains fail
        assert row["subscriptions"] == int(x.sum()) and row["missing_replies"] == 0
    assert set(result.train_metrics_clientapp) == {1, 2, 3}


@pytest.mark.parametrize("evaluate", ["nodes", "server"])
def test_in_process_loop_equals_fedopt_simulate(example_run, make_grid, evaluate):
    """The whole strategy loop, driven by start() over an in-process Grid, ends where the
    runtime ends on the same seed: same schedule, same uplink draws, same θ, and the same
    ensemble loss (3) whether the nodes or the server evaluate."""
    from fedopt.fl.runtime import Simulation
    from fedopt.flower.sim import server_evaluate

    setup = build_run(example_run)
    st = make_strategy(setup, fraction_evaluate=1.0 if evaluate == "nodes" else 0.0)
    grid = make_grid(client_app(example_run), example_run.system.K, seed=11)
    result = st.start(grid, pack_modules(setup.params), num_rounds=example_run.rounds,
                      evaluate_fn=server_evaluate(setup, st) if evaluate == "server" else None)
    if evaluate == "server":
        assert not result.evaluate_metrics_clientapp and len(result.evaluate_metrics_serverapp) == 3
    sim = Simulation(example_run, None, progress=False)
    sim.run()
    assert compare_params(unpack_modules(result.arrays, setup.pop.M), sim.params) < 1e-12
    for ours, theirs in zip(st.history, sim.rows, strict=True):
        for key in ("subscriptions", "received", "participation"):
            assert ours[key] == theirs[key], key
        for key in ("energy", "energy_computation", "energy_communication", "bandwidth", "objective"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-9), key
        assert st.evaluations[ours["round"] + 1]["loss"] == pytest.approx(theirs["loss"], rel=1e-9)


def test_nodes_joining_and_leaving_change_availability(example_run, make_grid):
    setup = build_run(example_run)
    st = make_strategy(setup)
    grid = make_grid(client_app(example_run), example_run.system.K, seed=5)
    grid.offline = {5}
    arrays = pack_modules(setup.params)

    def one_round(r):
        nonlocal arrays
        msgs = list(st.configure_train(r, arrays, ConfigRecord(), grid))
        state, alloc = st.pending.state, st.pending.allocation
        arrays, _ = st.aggregate_train(r, grid.send_and_receive(msgs))
        return state, np.asarray(alloc.x) > 0, msgs

    state, x, msgs = one_round(1)
    assert not state.available[5] and not x[5].any()
    assert 5 not in {grid.node_ue[int(m.metadata.dst_node_id)] for m in msgs}
    grid.offline = {2}  # UE 5 joins late, UE 2 leaves
    state, x, _ = one_round(2)
    assert state.available[5] and not state.available[2] and not x[2].any()
    assert st.nodes.properties["distance"][5] == pytest.approx(setup.pop.d[5])
    queries = [m for m in grid.sent if m.metadata.message_type == MessageType.QUERY
               and m.content[CONFIG_KEY].get("fedopt-action") == "properties"]
    assert len(queries) == 10  # every node asked once, the late one when it joined


def test_example_flower_app_runs_in_process(make_grid, capsys):
    """experiments/flower's ServerApp and ClientApp (what `flwr run` loads), one round over an
    in-process Grid, configured through Flower's run config as `flwr run -c` would."""
    import importlib
    import sys
    from pathlib import Path

    from flwr.app import Context, RecordDict

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flower"))
    try:
        server = importlib.import_module("fedopt_flower_app.server_app").app
        client = importlib.import_module("fedopt_flower_app.client_app").app
    finally:
        sys.path.pop(0)
    run_config = {"config": "fedopt.yaml", "set": "rounds=1; seed=4"}
    grid = make_grid(client, 10, seed=2)
    for ctx in grid.contexts.values():
        ctx.run_config = dict(run_config)
    server(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(),
                         run_config=dict(run_config)))
    out = capsys.readouterr().out
    assert "round 0: energy" in out and "round 1:" not in out
    assert sum(m.metadata.message_type == "train" for m in grid.sent) >= 3


def test_from_settings_builds_the_allocator(example_run):
    from fedopt.errors import ConfigError
    from fedopt.flower import FedOptStrategy

    st = FedOptStrategy.from_settings(example_run.system, "greedy", normalize="subscribed")
    assert st.allocator.config is example_run.system and st.engine.rule.normalize == "subscribed"
    assert st.K == 10 and st.M == 3 and st.engine.local_steps == example_run.system.local_steps
    with pytest.raises(ConfigError, match="policy|greedyy"):
        FedOptStrategy.from_settings(example_run.system, "greedyy")


def test_minibatch_runs_do_not_depend_on_which_node_is_served_first(example_run, make_grid):
    """With minibatches (no full_batch) one worker's backend serves many nodes; each node keeps
    its own random state in its context, so serving the nodes in another order gives the same
    run. Without that state, the second order would draw other minibatches."""
    run = example_run.replace(full_batch=False, rounds=2)
    finals = []
    for reverse in (False, True):
        setup = build_run(run)
        st = make_strategy(setup)
        grid = make_grid(client_app(run), run.system.K, seed=3)
        grid.reverse = reverse
        result = st.start(grid, pack_modules(setup.params), num_rounds=run.rounds)
        finals.append(unpack_modules(result.arrays, setup.pop.M))
        assert sum(r["received"] for r in st.history) >= 2
    assert compare_params(*finals) == 0.0
    # the node state is what makes it so: a shared stream gives another result
    from fedopt.flower.client import FedOptClient

    setup = build_run(run)
    shared = FedOptClient(setup.backend, 0, setup.specs, template=setup.params)
    a = shared.backend.local_update(PairBatch([0], [0]), setup.params, 2, 0.1).updates[0]
    b = shared.backend.local_update(PairBatch([0], [0]), setup.params, 2, 0.1).updates[0]
    assert compare_params([a], [b]) > 0


def test_logged_energy_is_eq4_at_the_power_and_bandwidth_the_nodes_received(example_run, make_grid):
    """The round's logged energy, rebuilt by hand from what each node was told (p_k, b_{k,m})
    and the population: E = ζ I φ_m c_k D_k s f_k² + p_k S_m / (b B log2(1 + θ)), eq. (4)."""
    setup, st, grid, msgs = _round_one(example_run, make_grid)
    cfg, pop = setup.system, setup.pop
    D = setup.samples()
    total = cmp_total = 0.0
    for msg in msgs:
        k = grid.node_ue[int(msg.metadata.dst_node_id)]
        c = msg.content[CONFIG_KEY]
        for j, m in enumerate(c["modules"]):
            e_cmp = cfg.zeta * cfg.local_steps * pop.phi[m] * pop.c[k] * D[k] * cfg.s_bits * pop.f[k] ** 2
            e_com = c["power"] * pop.S[m] / (c["bandwidth"][j] * cfg.B * np.log2(1 + cfg.theta))
            assert c["energy"][j] == pytest.approx(e_cmp + e_com, rel=1e-9)
            total += e_cmp + e_com
            cmp_total += e_cmp
    _, metrics = st.aggregate_train(1, grid.send_and_receive(msgs))
    assert metrics["energy"] == pytest.approx(total, rel=1e-9)
    assert metrics["energy_computation"] == pytest.approx(cmp_total, rel=1e-9)
    assert metrics["participation"] == pytest.approx(len(msgs) / example_run.system.K)


def test_injected_channel_source_feeds_the_allocator(example_run, make_grid):
    """A user's channel_fn (here: a fixed fade and UE 1 out of coverage) reaches the
    RoundState; the allocator then never schedules UE 1."""
    from fedopt.flower import ChannelState

    setup = build_run(example_run)
    K = example_run.system.K
    fade = np.linspace(0.5, 2.0, K)
    seen = []

    def channel_fn(t, rng, nodes):
        seen.append((t, sorted(nodes.node_of_ue)))
        return ChannelState(distance=nodes.properties["distance"] * 0.5, fading=fade,
                            available=np.arange(K) != 1)

    st = make_strategy(setup, channel_fn=channel_fn)
    grid = make_grid(client_app(example_run), K, seed=9)
    list(st.configure_train(1, pack_modules(setup.params), ConfigRecord(), grid))
    state, x = st.pending.state, np.asarray(st.pending.allocation.x) > 0
    assert seen == [(0, list(range(K)))]
    assert np.array_equal(state.fading, fade) and not state.available[1] and not x[1].any()
    assert np.allclose(state.distance, 0.5 * setup.pop.d)
