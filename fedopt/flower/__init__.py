"""fedopt inside Flower (the ``flower`` extra): a Message-API strategy that runs the round
allocator, a ClientApp helper that trains the requested modules with a TrainingBackend, one
that wraps a user's own torch ``train(model, data)`` (``train_app``), and a loopback
deployment (``fedopt.flower.deploy``).

``import fedopt`` never imports this package (nor flwr).
"""

from .client import FedOptClient, make_client_app, train_app
from .records import pack_modules, unpack_modules
from .strategy import ChannelState, FedOptStrategy, NodeTable

__all__ = ["ChannelState", "FedOptClient", "FedOptStrategy", "NodeTable", "make_client_app",
           "pack_modules", "train_app", "unpack_modules"]
