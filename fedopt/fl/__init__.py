"""The federated fine-tuning runtime: the round engine, its drivers' shared set-up,
aggregation (1), checkpoints and metrics."""

from .aggregation import aggregate_round, aggregation_weights
from .config import RUN_KEYS, RunConfig
from .round import RoundEngine
from .runtime import Simulation, simulate
from .setup import RunSetup, build_run, make_engine

__all__ = ["RUN_KEYS", "RoundEngine", "RunConfig", "RunSetup", "Simulation", "aggregate_round",
           "aggregation_weights", "build_run", "make_engine", "simulate"]
