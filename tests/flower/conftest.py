"""Flower tests: an in-process Grid that delivers Messages to a ClientApp without Ray."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "flower" / "fedopt.yaml"


class LocalGrid(Grid):
    """K nodes with random 64-bit ids; node k runs ``app`` with partition-id k in-process.

    ``fail``: UEs whose ClientApp raises on the given message types (the reply is an error
    Message, as Flower's runtimes turn a ClientApp exception into one); ``drop``: UEs whose
    replies never arrive (a late node); ``offline``: UEs whose node is not connected. ``sent`` keeps every Message the server pushed.
    """

    def __init__(self, app, K: int, seed: int = 0, fail=(), drop=(), fail_on=("train",)):
        rng = np.random.default_rng(seed)
        ids = rng.integers(2**62, 2**63 - 1, size=K, dtype=np.int64)
        self.node_ue = {int(n): k for k, n in enumerate(ids)}
        self.app = app
        self.contexts = {n: Context(run_id=1, node_id=n, state=RecordDict(), run_config={},
                                    node_config={"partition-id": k, "num-partitions": K})
                         for n, k in self.node_ue.items()}
        self.fail, self.drop, self.fail_on = set(fail), set(drop), set(fail_on)
        self.offline: set[int] = set()  # UEs whose node is not connected
        self.reverse = False
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    # the abstract API
    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return [n for n, k in self.node_ue.items() if k not in self.offline]

    def push_messages(self, messages):
        ids = []
        messages = list(messages)
        if self.reverse:  # serve the nodes in the other order (as another worker mapping would)
            messages = messages[::-1]
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(msg)
            k = self.node_ue[int(msg.metadata.dst_node_id)]
            if k in self.drop and msg.metadata.message_type in self.fail_on:
                continue
            try:
                if k in self.fail and msg.metadata.message_type in self.fail_on:
                    raise RuntimeError(f"UE {k}: out of memory")
                reply = self.app(msg, self.contexts[int(msg.metadata.dst_node_id)])
            except Exception as exc:  # what a SuperNode does with a ClientApp exception
                reply = Message(Error(code=2, reason=str(exc)), reply_to=msg)
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


@pytest.fixture
def example_run():
    from fedopt.fl.config import RunConfig

    return RunConfig.load(str(EXAMPLE))


@pytest.fixture
def make_grid():
    """LocalGrid, with the process's task identity set as a ServerApp process has it (flwr 1.42
    stamps run id and source node on every new Message from it); restored afterwards."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1  # 1: SuperLink
    yield LocalGrid
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
