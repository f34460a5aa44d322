"""fedopt inside Flower (the ``flower`` extra): a Message-API strategy that runs the round
allocator, and a ClientApp helper that trains the requested modules with a TrainingBackend.

``import fedopt`` never imports this package (nor flwr).
"""

from .client import FedOptClient, make_client_app
from .records import pack_modules, unpack_modules
from .strategy import ChannelState, FedOptStrategy, NodeTable

__all__ = ["ChannelState", "FedOptClient", "FedOptStrategy", "NodeTable", "make_client_app",
           "pack_modules", "unpack_modules"]
