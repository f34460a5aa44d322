"""The ClientApp: node ``partition-id`` is UE k; it trains the modules the strategy sends."""

from pathlib import Path

from fedopt.flower.sim import client_app_from_context

HERE = Path(__file__).resolve().parents[1]

app = client_app_from_context(root=HERE)
