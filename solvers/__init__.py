"""The paper's algorithms, our certified global methods and exact-solver adapters for the
bandwidth (16) and power (21) subproblems, behind one result type, :class:`Solution`.

* :func:`solve_bandwidth` — methods ``auto``/``global``, ``lambertw``, ``alg1``, ``scip``,
  ``ipopt``, ``cvxpy``.
* :func:`solve_power`, :func:`solve_power_batch` — methods ``auto``/``global``, ``ipopt``,
  ``bounded``, ``scip``, ``max``.
* :func:`fedopt.solvers.round.solve_round` — the per-round problem (7): ``auto`` (the
  certified global method), ``bcd`` (Algorithm 2's block coordinate descent), ``joint`` (a
  local search over x) and ``scip`` (the MINLP).
"""

from ._solution import STATUSES, Solution, relative_gap
from .bandwidth import BANDWIDTH_METHODS, solve_bandwidth
from .power import POWER_METHODS, solve_power, solve_power_batch

__all__ = [
    "BANDWIDTH_METHODS",
    "POWER_METHODS",
    "STATUSES",
    "Solution",
    "relative_gap",
    "solve_bandwidth",
    "solve_power",
    "solve_power_batch",
]
