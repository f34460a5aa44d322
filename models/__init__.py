"""Declarative formulations (Pyomo / CVXPY) of MODEL.md's problems; ``fedopt.solvers`` solves them."""

from .bandwidth import bandwidth_model as bandwidth_model  # (16)
from .power import power_model as power_model  # (21)
