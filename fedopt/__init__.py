"""fedopt: optimization modeling for switching-based federated fine-tuning over wireless networks.

The system model of MODEL.md (channel, energy, population), the canonical subproblems
(instances), the paper's solvers and exact references (``fedopt.solvers``), the online
switching layer and round allocator, and a runtime with training backends.
"""

from . import channel, energy, instances
from .allocator import Allocation, RoundAllocator, RoundState
from .config import SystemConfig
from .errors import ConfigError, FedoptError, InfeasibleError, InstanceError
from .instances import BandwidthInstance, PowerBatch, PowerInstance, load_instance
from .population import Population, draw_population

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "RoundAllocator",
    "RoundState",
    "BandwidthInstance",
    "ConfigError",
    "FedoptError",
    "InfeasibleError",
    "InstanceError",
    "Population",
    "PowerBatch",
    "PowerInstance",
    "SystemConfig",
    "channel",
    "draw_population",
    "energy",
    "instances",
    "load_instance",
]
