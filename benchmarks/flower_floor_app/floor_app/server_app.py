"""Times ``exchanges`` round trips (one QUERY to every node each) and writes them to ``out``."""

import json
import time
from pathlib import Path

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    while len(ids := list(grid.get_node_ids())) < int(rc["nodes"]):
        time.sleep(0.2)
    if float(rc["poll-interval"]) > 0:
        from fedopt.flower.polling import PollingGrid

        grid = PollingGrid(grid, float(rc["poll-interval"]))
    seconds = []
    for _ in range(int(rc["exchanges"])):
        t = time.perf_counter()
        msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in ids]
        replies = list(grid.send_and_receive(msgs, timeout=120))
        seconds.append(time.perf_counter() - t)
        assert len(replies) == len(ids)
    if rc["out"]:
        Path(str(rc["out"])).write_text(json.dumps({"exchange_seconds": seconds}))
