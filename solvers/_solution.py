"""One result type and one status vocabulary for every solver (DESIGN.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Solution", "STATUSES", "TINY", "relative_gap"]

#: The status vocabulary shared by all methods.
STATUSES = ("optimal", "locally_optimal", "feasible", "time_limit", "infeasible", "error")

#: Denominator floor of the relative gap, (objective - bound) / max(|objective|, TINY).
TINY = 1e-300


def relative_gap(objective: float, bound: float | None) -> float | None:
    """(objective - bound) / max(|objective|, TINY); ``None`` without a bound."""
    if bound is None or objective is None or not math.isfinite(objective):
        return None
    if not math.isfinite(bound):
        return math.inf
    return max(0.0, objective - bound) / max(abs(objective), TINY)


@dataclass(frozen=True)
class Solution:
    """Result of a bandwidth (16) or power (21) solve, in the spirit of ``OptimizeResult``.

    Attributes
    ----------
    x : b with shape (N,) for bandwidth; p (a float) for one UE's power; p with shape (K,)
        for a batch.
    objective : the canonical objective at ``x`` re-evaluated exactly (fsum), or ``nan``.
    status : one of :data:`STATUSES`. ``optimal`` only with a certified gap <= tol.
    method : the method that produced ``x``.
    iterations : the method's own iteration count (nodes, Newton steps, bisection steps).
    seconds : wall time of the solve.
    bound : a certified lower bound on the optimum, or ``None``.
    gap : (objective - bound) / max(|objective|, TINY), or ``None``.
    extras : method-specific data (ν, stationary points, native solver status, ...).
    """

    x: Any
    objective: float
    status: str
    method: str
    iterations: int = 0
    seconds: float = 0.0
    bound: float | None = None
    gap: float | None = None
    extras: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {STATUSES}")

    @property
    def b(self) -> np.ndarray:
        """Alias of ``x`` for bandwidth solutions."""
        return self.x

    @property
    def p(self) -> Any:
        """Alias of ``x`` for power solutions."""
        return self.x

    def to_dict(self, alias: str | None = None) -> dict:
        """JSON-ready dict with the keys the CLI promises (plus ``alias`` for x)."""
        x = np.asarray(self.x, dtype=float)
        xs = x.tolist()
        out = {
            "objective": _num(self.objective),
            "x": xs,
        }
        if alias:
            out[alias] = xs
        out.update(
            status=self.status,
            method=self.method,
            iterations=int(self.iterations),
            seconds=float(self.seconds),
            bound=_num(self.bound),
            gap=_num(self.gap),
        )
        return out


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
