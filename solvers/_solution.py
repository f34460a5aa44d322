"""One result type and one status vocabulary for every solver (DESIGN.md)."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RoundPoint", "Solution", "STATUSES", "TINY", "TOLERANCES", "certify", "check_options", "quiet",
           "refuted", "relative_gap"]

#: The status vocabulary shared by all methods.
STATUSES = ("optimal", "locally_optimal", "feasible", "time_limit", "infeasible", "error")

#: Denominator floor of the relative gap, (objective - bound) / max(|objective|, TINY).
TINY = 1e-300

EPS = float(np.finfo(float).eps)


#: What a certificate met: ``relative`` — the certified gap (rounding included) is within
#: ``tol`` of |objective|, the status is ``optimal``; ``rounding`` — it is within ``tol`` of the
#: size of the objective's terms but not of |objective| (the terms cancel and float arithmetic
#: cannot certify ``tol`` relative), the status stays ``feasible``.
TOLERANCES = ("relative", "rounding")


def relative_gap(objective: float, bound: float | None) -> float | None:
    """(objective - bound) / max(|objective|, TINY); ``None`` without a bound."""
    if bound is None or objective is None or not math.isfinite(objective):
        return None
    if not math.isfinite(bound):
        return math.inf
    return max(0.0, objective - bound) / max(abs(objective), TINY)


def quiet(solve):
    """Solver trouble is a status, not a warning: a solve runs with numpy's floating-point
    warnings off and Python's RuntimeWarning/UserWarning silenced (overflow at extreme
    magnitudes is handled explicitly, and a library's "may be inaccurate" ends in the
    status), so a command prints one line at most."""

    @functools.wraps(solve)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            return solve(*args, **kwargs)

    return wrapper


def refuted(bound: float | None, probes: np.ndarray, tol: float) -> bool:
    """True when a feasible probe's objective lies below an external solver's claimed bound
    by more than tol (relative): the bound is then no certificate (SCIP at extreme
    magnitudes claimed one that a feasible point beat)."""
    if bound is None or not math.isfinite(bound) or probes.size == 0:
        return False
    best = float(np.min(probes))
    return best < bound - tol * max(abs(bound), abs(best), TINY)


def check_options(tol, time_limit) -> None:
    """The solver options every method shares: tol in (0, 1), a finite time_limit >= 0.
    A wrong type is a ``TypeError``, a wrong value an ``InstanceError`` (a ``ValueError``)."""
    from .._checks import real
    from ..errors import InstanceError

    if real("tol", tol, 0.0, strict=True) >= 1.0:
        raise InstanceError(f"tol: must be < 1, got {tol!r}")
    real("time_limit", time_limit, 0.0)


def certify(objective: float, bound: float | None, rounding: float, scale: float, tol: float,
            status: str, exact_bound: bool = True
            ) -> tuple[str, float | None, float | None, str | None]:
    """The one rule that turns a point and a bound into a label.

    ``objective`` is the float value at the point, ``rounding`` a bound on its evaluation
    error, ``bound`` a certified lower bound (its own rounding already subtracted), ``scale``
    the size of the objective's terms (Σ|parts|). The certified gap covers the rounding:
    ``gap_abs = objective + rounding − bound``. Returns (status, gap, gap_abs, tolerance):
    ``optimal`` only when ``gap_abs <= tol·max(|objective|, TINY)`` and the method's own
    status allows it; a bound above the objective by more than the rounding is not a
    certificate but a bug, and gives ``error`` (``exact_bound=False`` for an external
    solver's bound, which holds only to that solver's own tolerances: it is then clipped).
    """
    if bound is None or objective is None or not math.isfinite(objective):
        return ("feasible" if status == "optimal" else status), None, None, None
    if not math.isfinite(bound):
        return ("feasible" if status == "optimal" else status), math.inf, math.inf, None
    gap_abs = objective + rounding - bound
    if gap_abs < -(rounding + 4 * EPS * abs(objective)) and exact_bound:
        return "error", None, None, None
    gap_abs = max(gap_abs, 0.0)
    gap = gap_abs / max(abs(objective), TINY)
    tolerance = None
    if gap <= tol:
        tolerance = "relative"
    elif gap_abs <= tol * max(scale, TINY):
        tolerance = "rounding"
    if tolerance == "relative" and status in ("optimal", "locally_optimal", "feasible"):
        status = "optimal"
    elif status == "optimal":
        status = "feasible"
    return status, gap, gap_abs, tolerance


@dataclass(frozen=True)
class RoundPoint:
    """One round's decision, the ``x`` of a round :class:`Solution` (``solve_round``).

    x (K, M) int8 in {0, 1}; p (K,) [W] in [P_min, P_max] (a UE with no scheduled pair keeps
    its start value, which does not enter (7)); b (K, M) bandwidth fractions, 0 where x = 0.
    """

    x: np.ndarray
    p: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class Solution:
    """Result of a bandwidth (16), power (21) or round (7) solve, in the spirit of ``OptimizeResult``.

    Attributes
    ----------
    x : b with shape (N,) for bandwidth; p (a float) for one UE's power; p with shape (K,)
        for a batch; a :class:`~fedopt.solvers.round.RoundPoint` (x, p, b) for a round (7).
    objective : the canonical objective at ``x`` re-evaluated exactly (fsum), or ``nan``.
    status : one of :data:`STATUSES`. ``optimal`` only with a certified gap <= tol.
    method : the method that produced ``x``.
    iterations : the method's own iteration count (nodes, Newton steps, bisection steps).
    seconds : wall time of the solve.
    bound : a certified lower bound on the optimum, or ``None``.
    gap : the certified relative gap, (objective + rounding − bound) / max(|objective|, TINY),
        or ``None``; it covers the float rounding of the objective itself.
    gap_abs : the same gap in the objective's units, or ``None``.
    tolerance : what the certificate met (:data:`TOLERANCES`): ``"relative"`` (gap <= tol;
        the status is then ``optimal``), ``"rounding"`` (gap_abs <= tol·Σ|terms|: optimal as
        far as float arithmetic can tell, but the terms cancel, so ``feasible``), or ``None``.
    extras : method-specific data (ν, stationary points, native solver status, the rounding
        allowance ``rounding`` and the term size ``scale``, ...).
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
    gap_abs: float | None = None
    tolerance: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {STATUSES}")
        if self.tolerance is not None and self.tolerance not in TOLERANCES:
            raise ValueError(f"unknown tolerance {self.tolerance!r}; expected one of {TOLERANCES}")

    @property
    def b(self) -> np.ndarray:
        """Alias of ``x`` for bandwidth solutions."""
        return self.x

    @property
    def p(self) -> Any:
        """Alias of ``x`` for power solutions."""
        return self.x

    def to_dict(self, alias: str | None = None) -> dict:
        """JSON-ready dict with the keys the CLI promises (plus ``alias`` for x).

        A round solution's x (a :class:`~fedopt.solvers.round.RoundPoint`) is the object
        ``{"x": K×M 0/1, "p": (K,), "b": K×M}`` of nested lists."""
        if isinstance(self.x, RoundPoint):
            xs = {"x": np.asarray(self.x.x, dtype=int).tolist(),
                  "p": np.asarray(self.x.p, dtype=float).tolist(),
                  "b": np.asarray(self.x.b, dtype=float).tolist()}
        else:
            xs = np.asarray(self.x, dtype=float).tolist()
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
            gap_abs=_num(self.gap_abs),
            tolerance=self.tolerance,
        )
        return out


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
