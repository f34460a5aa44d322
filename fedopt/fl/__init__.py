"""The federated fine-tuning runtime: rounds, aggregation (1), checkpoints and metrics."""

from .aggregation import aggregate_round, aggregation_weights
from .config import RUN_KEYS, RunConfig
from .runtime import Simulation, simulate

__all__ = ["RUN_KEYS", "RunConfig", "Simulation", "aggregate_round", "aggregation_weights", "simulate"]
