"""The ClientApp: node ``partition-id`` is UE k; it trains the modules the strategy sends."""

from flwr.app import Context

from fedopt.flower.client import FedOptClient, make_client_app
from fedopt.flower.sim import client_fn_for

from .run import run_of


def client_fn(context: Context) -> FedOptClient:
    return client_fn_for(run_of(context)[0])(context)


app = make_client_app(client_fn)
