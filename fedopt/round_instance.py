"""The canonical instance of the per-round problem (7) (``experiments/instances/README.md``).

:class:`RoundInstance` holds everything :func:`fedopt.solvers.round.solve_round` needs: the
coefficients of a :class:`fedopt.costs.RoundSystem` (K UEs, M modules), ``M_max`` (7b), the
participation floor and, optionally, a switching ``x`` for ``method="bcd"``. JSON in and out,
validated as the bandwidth and power instances are (:mod:`fedopt.instances`): every malformed
value is one :class:`~fedopt.errors.InstanceError` line that names the key and the index.

JSON keys, symbols and shapes (MODEL.md (4), (7), (13)-(15))::

    a        a_k      (K,)    noise coefficient of (15) (a known fade folded in), >= 0
    kappa    κ_k      (K,)    interference coefficient of (15), >= 0
    omega    ω_k      (K,)    UE weight, >= 0
    S        S_m      (M,)    module size [bit], >= 0
    b_min    b^min    (K, M)  deadline floor (13)-(14), > 0; null: the pair misses T_max (inf)
    E_cmp    E^cmp    (K, M)  computation energy (4) [J], >= 0
    Delta    Δ        (K, M)  switching mismatch of (7), >= 0
    Gamma    Γ        (K, M)  (η/2)‖∇F‖² of (7), >= 0
    rho      ρ                energy weight, >= 0
    B        B                band [Hz], > 0
    theta    θ                SINR threshold, > 0
    alpha    α                path-loss exponent, > 2
    P_min, P_max              power range [W], 0 < P_min <= P_max
    M_max                     modules per UE at most (7b), integer >= 1
    floor                     Σ x >= floor, integer >= 0 (optional, default 0)
    x        x        (K, M)  0/1 switching for "bcd" (optional; 0 where b_min is null)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .costs import RoundSystem
from .errors import InstanceError
from .instances import JsonInstance, _array, _is_number, _nonneg, _readonly, _scalar

__all__ = ["RoundInstance"]

_VECTORS = ("a", "kappa", "omega")  # (K,)
_MATRICES = ("b_min", "E_cmp", "Delta", "Gamma")  # (K, M)
_SCALARS = ("rho", "B", "theta", "alpha", "P_min", "P_max")
_REQUIRED = ("a", "kappa", "omega", "S", *_MATRICES, *_SCALARS, "M_max")


def _vector(name: str, value: Any, n: int | None, of: str) -> np.ndarray:
    """A flat list of finite numbers >= 0 of length ``n`` (the length of ``of``)."""
    arr = _array(name, value, n, of)
    _nonneg(name, arr)
    return arr


def _number(where: str, v: Any, allow_null: bool = False) -> float:
    """One array entry: a finite number >= 0 (null = inf where ``allow_null``)."""
    if v is None and allow_null:
        return math.inf
    if not _is_number(v):
        raise InstanceError(f"'{where}' is {v!r}; every value must be a number"
                            + (" or null" if allow_null else ""))
    f = _scalar(where, v)  # too large or not finite: one line
    if f < 0:
        raise InstanceError(f"'{where}' = {f:g} is negative; it must be >= 0")
    return f


def _matrix(name: str, value: Any, K: int, M: int, allow_null: bool = False) -> np.ndarray:
    """A K×M list of rows of finite numbers >= 0 (null -> inf where ``allow_null``)."""
    if isinstance(value, np.ndarray):
        value = np.where(np.isinf(value), None, value).tolist() if allow_null else value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InstanceError(f"'{name}' must be a list of K = {K} rows, got {type(value).__name__}")
    if len(value) != K:
        raise InstanceError(f"'{name}' has {len(value)} rows, expected K = {K} (the length of 'a')")
    out = np.empty((K, M))
    for k, row in enumerate(value):
        if not isinstance(row, (list, tuple)):
            raise InstanceError(f"'{name}[{k}]' must be a list of M = {M} numbers, got "
                                f"{type(row).__name__}")
        if len(row) != M:
            raise InstanceError(f"'{name}[{k}]' has length {len(row)}, expected M = {M} "
                                f"(the length of 'S')")
        for m, v in enumerate(row):
            out[k, m] = _number(f"{name}[{k}][{m}]", v, allow_null)
    return out


def _count(name: str, value: Any, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InstanceError(f"'{name}' must be an integer, got {value!r}")
    if value < lo:
        raise InstanceError(f"'{name}' = {value}; it must be an integer >= {lo}")
    return int(value)


@dataclass(frozen=True, eq=False)
class RoundInstance(JsonInstance):
    """One round of (7) in canonical form (keys, symbols and shapes: the module docstring).

    Arrays are read-only floats; ``b_min`` holds inf where a pair misses the deadline (null in
    JSON). ``x`` is None or an int8 (K, M) 0/1 array. :meth:`system` builds the
    :class:`~fedopt.costs.RoundSystem`; ``solve_round(inst.system(), inst.M_max,
    floor=inst.floor, x=inst.x, ...)`` solves it.
    """

    a: np.ndarray
    kappa: np.ndarray
    omega: np.ndarray
    S: np.ndarray
    b_min: np.ndarray
    E_cmp: np.ndarray
    Delta: np.ndarray
    Gamma: np.ndarray
    rho: float
    B: float
    theta: float
    alpha: float
    P_min: float
    P_max: float
    M_max: int
    floor: int = 0
    x: np.ndarray | None = None

    def __post_init__(self) -> None:
        a = _vector("a", self.a, None, "a")
        K = a.shape[0]
        if K == 0:
            raise InstanceError("'a' is empty; a round needs K >= 1 UEs")
        kappa = _vector("kappa", self.kappa, K, "a")
        omega = _vector("omega", self.omega, K, "a")
        S = _vector("S", self.S, None, "S")
        M = S.shape[0]
        if M == 0:
            raise InstanceError("'S' is empty; a round needs M >= 1 modules")
        b_min = _matrix("b_min", self.b_min, K, M, allow_null=True)
        bad = np.argwhere(b_min < 1e-100)  # (16) built from it refuses these (c/b² overflows)
        if bad.size:
            k, m = bad[0]
            raise InstanceError(f"'b_min[{k}][{m}]' = {b_min[k, m]:g}; every b_min must be "
                                f">= 1e-100 (null: the pair misses the deadline)")
        mats = {"b_min": b_min}
        for name in ("E_cmp", "Delta", "Gamma"):
            mats[name] = _matrix(name, getattr(self, name), K, M)
        sc = {name: _scalar(name, getattr(self, name)) for name in _SCALARS}
        for name in _SCALARS:
            if sc[name] < 0:
                raise InstanceError(f"'{name}' = {sc[name]:g} is negative; it must be >= 0")
        for name in ("B", "theta", "P_min"):
            if sc[name] <= 0:
                raise InstanceError(f"'{name}' = {sc[name]:g}; it must be > 0")
        if sc["alpha"] <= 2:
            raise InstanceError(f"'alpha' = {sc['alpha']:g}; the path-loss exponent must be > 2")
        if sc["P_min"] > sc["P_max"]:
            raise InstanceError(f"'P_min' = {sc['P_min']:g} exceeds 'P_max' = {sc['P_max']:g}")
        M_max = _count("M_max", self.M_max, 1)
        floor = _count("floor", self.floor, 0)
        x = None
        if self.x is not None:
            x = _matrix("x", self.x, K, M)
            bad = np.argwhere((x != 0) & (x != 1))
            if bad.size:
                k, m = bad[0]
                raise InstanceError(f"'x[{k}][{m}]' = {x[k, m]:g}; every x must be 0 or 1")
            bad = np.argwhere((x > 0) & ~np.isfinite(b_min))
            if bad.size:
                k, m = bad[0]
                raise InstanceError(f"'x[{k}][{m}]' = 1 on a pair that misses the deadline "
                                    f"('b_min[{k}][{m}]' is null)")
            x = x.astype(np.int8)
            x.setflags(write=False)
        for name, arr in (("a", a), ("kappa", kappa), ("omega", omega), ("S", S), *mats.items()):
            object.__setattr__(self, name, _readonly(arr))
        for name, v in sc.items():
            object.__setattr__(self, name, v)
        object.__setattr__(self, "M_max", M_max)
        object.__setattr__(self, "floor", floor)
        object.__setattr__(self, "x", x)

    @property
    def K(self) -> int:
        return int(self.a.shape[0])

    @property
    def M(self) -> int:
        return int(self.S.shape[0])

    def system(self) -> RoundSystem:
        """The round's coefficients as a :class:`~fedopt.costs.RoundSystem`."""
        return RoundSystem(**{f.name: getattr(self, f.name) for f in fields(RoundSystem)})

    @classmethod
    def from_system(cls, system: RoundSystem, M_max: int, floor: int = 0,
                    x=None) -> RoundInstance:
        """The instance of ``system`` (validated like a file)."""
        return cls(**{f.name: getattr(system, f.name) for f in fields(RoundSystem)},
                   M_max=M_max, floor=floor, x=x)

    def to_dict(self) -> dict:
        out: dict = {"problem": "round"}
        for name in ("a", "kappa", "omega", "S"):
            out[name] = getattr(self, name).tolist()
        out["b_min"] = [[v if math.isfinite(v) else None for v in row]
                        for row in self.b_min.tolist()]
        for name in ("E_cmp", "Delta", "Gamma"):
            out[name] = getattr(self, name).tolist()
        for name in _SCALARS:
            out[name] = getattr(self, name)
        out["M_max"] = self.M_max
        out["floor"] = self.floor
        if self.x is not None:
            out["x"] = self.x.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RoundInstance:
        if not isinstance(data, dict):
            raise InstanceError("a round instance must be a JSON object")
        for key in _REQUIRED:
            if key not in data:
                raise InstanceError(f"missing key '{key}' in round instance")
        return cls(**{k: data[k] for k in _REQUIRED}, floor=data.get("floor", 0),
                   x=data.get("x"))

