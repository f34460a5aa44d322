"""A Grid whose ``send_and_receive`` polls for replies every ``poll`` seconds, until a deadline.

Flower 1.42's deployment Grid (``HttpGrid``) sleeps 3 s between pulls, so every exchange
with the nodes costs a multiple of 3 s however fast the nodes answer. This wrapper pushes the
messages once and pulls the replies every ``poll`` seconds (0.1 s by default) until every
message is answered or ``timeout`` passes; everything else is the wrapped Grid's. Replies are
returned as they come (an error reply the SuperLink writes for a node that left carries the
SuperLink's id as sender: match replies by ``reply_to_message_id``, as Flower does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["PollingGrid"]


class PollingGrid(Grid):
    """``grid`` with ``send_and_receive`` polling every ``poll`` seconds."""

    def __init__(self, grid: Grid, poll: float = 0.1) -> None:
        if not poll > 0:
            raise ValueError(f"poll: a positive number of seconds, got {poll}")
        self.grid = grid
        self.poll = float(poll)

    # everything but send_and_receive is the wrapped Grid's
    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        """Push, then pull every ``poll`` s until all are answered or ``timeout`` s passed
        (None: wait for all)."""
        pending = {i for i in self.grid.push_messages(messages) if i}
        end = None if timeout is None else time.monotonic() + timeout
        out: list[Message] = []
        while pending:
            got = list(self.grid.pull_messages(pending))
            out += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll if end is None else max(0.0, min(self.poll, end - time.monotonic())))
        return out
