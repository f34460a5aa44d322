"""Failures are data: a node that leaves is unavailable until it returns, an error reply is
matched by ``reply_to_message_id`` and counted, a round has a deadline.

In-process (LocalGrid) versions of what a deployment sees: Flower's SuperLink answers a message
to a node that left with a NODE_UNAVAILABLE error whose sender is the SuperLink itself
(``create_message_error_unavailable_res_message``, the function the SuperLink calls). The
deployment version (a SuperNode killed mid-round) is in test_deployment.py (slow).
"""

from __future__ import annotations

from uuid import uuid4

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, MessageType  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402
from flwr.server.superlink.linkstate.utils import (  # noqa: E402
    create_message_error_unavailable_res_message,
)

from fedopt.fl.setup import build_run  # noqa: E402
from fedopt.flower.records import pack_modules  # noqa: E402
from fedopt.flower.sim import client_app, make_strategy  # noqa: E402


def leaving_grid(LocalGrid):  # noqa: N803 (the conftest's class, from its make_grid fixture)
    class LeavingGrid(LocalGrid):
        """LocalGrid whose nodes can leave (``leave(k)``: no longer listed; a message pushed to it
        is answered by the SuperLink's NODE_UNAVAILABLE error) and return under a new node id
        (``rejoin(k)``, as a restarted SuperNode does)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.left: set[int] = set()

        def leave(self, k: int) -> None:
            self.left.add(k)
            self.offline.add(k)

        def rejoin(self, k: int) -> int:
            old = next(n for n, j in self.node_ue.items() if j == k)
            new = old ^ 0x5A5A5A5A
            self.node_ue[new] = self.node_ue.pop(old)
            self.contexts[new] = self.contexts.pop(old)
            self.left.discard(k)
            self.offline.discard(k)
            return new

        def push_messages(self, messages):
            messages = list(messages)
            here = [m for m in messages if self.node_ue[int(m.metadata.dst_node_id)] not in self.left]
            ids = list(super().push_messages(here))
            for msg in messages:
                if msg in here:
                    continue
                msg.metadata.__dict__["_message_id"] = str(uuid4())
                msg.metadata.__dict__["_created_at"] = msg.metadata.created_at or 0.0
                err = create_message_error_unavailable_res_message(msg.metadata, "node_unavail")
                self._replies[msg.metadata.message_id] = err
                ids.append(msg.metadata.message_id)
            return ids

    return LeavingGrid


def _round(st, grid, r, arrays, during=None):
    msgs = list(st.configure_train(r, arrays, ConfigRecord(), grid))
    plan = st.pending
    if during is not None:
        during(plan)
    arrays, _ = st.aggregate_train(r, grid.send_and_receive(msgs, timeout=5.0))
    return plan, arrays, msgs


@pytest.fixture
def setup(example_run, make_grid):
    s = build_run(example_run)
    grid = leaving_grid(make_grid)(client_app(example_run), example_run.system.K, seed=3)
    return s, make_strategy(s), grid


def test_a_node_that_leaves_mid_round_is_counted_and_not_scheduled_until_it_returns(setup):
    s, st, grid = setup
    arrays = pack_modules(s.params)
    left = {}

    def leave(plan):  # a scheduled UE's node leaves after its train message was built
        left["k"] = int(np.flatnonzero(plan.x.any(axis=1))[0])
        grid.leave(left["k"])

    plan1, arrays, _ = _round(st, grid, 1, arrays, during=leave)
    k = left["k"]
    row = st.history[-1]
    assert row["error_replies"] == 1 and row["missing_replies"] == 0  # the SuperLink's reply
    assert not plan1.x[k].any() or row["arrived"] == plan1.x.sum() - plan1.x[k].sum()
    for r in (2, 3):  # gone: unavailable, never scheduled, no message
        plan, arrays, msgs = _round(st, grid, r, arrays)
        assert not plan.state.available[k] and not plan.x[k].any()
        assert k not in {grid.node_ue[int(m.metadata.dst_node_id)] for m in msgs}
        assert st.history[-1]["error_replies"] == 0
    new = grid.rejoin(k)  # back under a new node id: asked for its properties, available again
    plan, arrays, _ = _round(st, grid, 4, arrays)
    assert plan.state.available[k] and st.nodes.node_of_ue[k] == new
    assert any(int(m.metadata.dst_node_id) == new and m.metadata.message_type == MessageType.QUERY
               for m in grid.sent)


def test_the_superlinks_error_reply_is_matched_by_reply_to_not_sender(setup):
    """Node of UE 4 has left but is still listed (the SuperLink has not noticed yet): its
    properties query is answered by the SuperLink, from the SuperLink's own id."""
    s, st, grid = setup
    grid.left.add(4)
    plan, _, _ = _round(st, grid, 1, pack_modules(s.params))
    node = next(n for n, k in grid.node_ue.items() if k == 4)
    assert node in st.gone and 4 not in st.nodes.node_of_ue and not plan.state.available[4]
    assert SUPERLINK_NODE_ID not in st.nodes.ue_of_node and not plan.x[4].any()


def test_a_late_node_is_unavailable_until_it_answers_again(setup):
    """Train replies that miss the deadline are counted as missing; those nodes are asked for
    their properties again next round and are available once they answer."""
    s, st, grid = setup
    arrays = pack_modules(s.params)
    grid.drop = set(range(st.K))  # no train reply arrives (stuck nodes); queries still do
    plan, arrays, _ = _round(st, grid, 1, arrays)
    late = np.flatnonzero(plan.x.any(axis=1))
    assert st.history[-1]["missing_replies"] == len(late) > 0
    assert st.history[-1]["arrived"] == 0
    nodes = {st.nodes.node_of_ue[int(k)] for k in late}
    assert nodes <= st.gone
    grid.drop = set()
    before = len(grid.sent)
    plan, arrays, _ = _round(st, grid, 2, arrays)
    asked = {int(m.metadata.dst_node_id) for m in grid.sent[before:]
             if m.metadata.message_type == MessageType.QUERY and "modules" not in m.content["config"]}
    assert nodes <= asked and not nodes & st.gone
    assert plan.state.available[late].all()


def test_the_round_deadline_is_the_strategys_not_flowers_3600_s(setup, monkeypatch):
    """start() waits ``round_timeout`` for train / evaluate replies (Flower's own default is
    3600 s) and pulls them every ``poll_interval`` s."""
    from fedopt.flower.polling import PollingGrid

    s, st, grid = setup
    assert st.round_timeout == 300.0 and st.query_timeout <= 120.0
    seen = []
    real = PollingGrid.send_and_receive

    def spy(self, messages, *, timeout=None):
        seen.append((self.poll, timeout))
        return real(self, messages, timeout=timeout)

    monkeypatch.setattr(PollingGrid, "send_and_receive", spy)
    st.round_timeout = 7.5
    st.start(grid, pack_modules(s.params), num_rounds=1)
    assert (0.1, 7.5) in seen and all(t in (7.5, st.query_timeout) for _, t in seen)
