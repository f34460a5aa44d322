"""Canonical subproblem instances (``../shared/instances/README.md``).

Two frozen dataclasses hold the subproblems that every solver works on (the per-round
problem (7) is :class:`fedopt.round_instance.RoundInstance`, also read by :func:`load_instance`):

* :class:`BandwidthInstance`, eq. (16) after MODEL.md's substitutions::

      min_b  Σ_n ( -w_n exp(-a_n b_n) + c_n / b_n )
      s.t.   Σ_n b_n <= budget,   b_min_n <= b_n <= b_max_n

* :class:`PowerInstance`, eq. (21) for one UE::

      min_p  Σ_m W_m (1 - exp(-A_m / p - kappa p^(-2/alpha))) + C p
      s.t.   p_min <= p <= p_max

:class:`PowerBatch` stacks K power instances (padded with W = 0) so the allocator
solves all UEs in one vectorised call. Builders map a system state, a decision x
and powers p to these forms, and a solution back to per-pair b or per-UE p.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InfeasibleError, InstanceError

if TYPE_CHECKING:
    from .round_instance import RoundInstance

__all__ = [
    "BandwidthInstance",
    "PowerInstance",
    "PowerBatch",
    "load_instance",
    "bandwidth_instance",
    "power_batch",
    "pairs_of",
]


def _is_number(v: Any) -> bool:
    """A real number: int or float (Python or numpy), but not a bool or a string."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _array(name: str, value: Any, n: int | None = None, of: str = "w") -> np.ndarray:
    """A flat list (or numeric array) of finite numbers, of length ``n`` (that of ``of``)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise InstanceError(f"'{name}' must hold numbers, got an array of {value.dtype}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if not _is_number(v):
                raise InstanceError(f"'{name}[{i}]' is {v!r}; every value must be a number")
    else:
        raise InstanceError(f"'{name}' must be a list of numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InstanceError(f"'{name}' must be a list of numbers") from None
    if arr.ndim != 1:
        raise InstanceError(f"'{name}' must be a flat list, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InstanceError(f"'{name}' has length {arr.shape[0]}, expected {n} (the length of "
                            f"'{of}')")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InstanceError(f"'{name}[{bad[0]}]' is {arr[bad[0]]}; every value must be finite")
    return arr


def _scalar(name: str, value: Any) -> float:
    if not _is_number(value):
        raise InstanceError(f"'{name}' must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise InstanceError(f"'{name}' = {value!r} is too large") from None
    if not math.isfinite(v):
        raise InstanceError(f"'{name}' is {v}; it must be finite")
    return v


def _nonneg(name: str, arr: np.ndarray) -> None:
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise InstanceError(f"'{name}[{bad[0]}]' = {arr[bad[0]]:g} is negative; it must be >= 0")


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=float, copy=True)
    arr.setflags(write=False)
    return arr


class JsonInstance:
    """JSON in and out for the canonical instances: a subclass supplies ``to_dict`` and
    ``from_dict``."""

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict):
        raise NotImplementedError

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path):
        return cls.from_dict(_read_json(text_or_path))


@dataclass(frozen=True, eq=False)
class BandwidthInstance(JsonInstance):
    """Bandwidth subproblem (16) in canonical form. Arrays have shape (N,).

    ``w`` = ω_k Γ_n e^{-κ_k p_k^{-2/α}}, ``a`` = a_k / p_k, ``c`` = ρ p_k S_m / (B log2(1+θ)),
    all as in MODEL.md (16). The constant Σ ω_k Γ_n is dropped.
    """

    w: np.ndarray
    a: np.ndarray
    c: np.ndarray
    b_min: np.ndarray
    b_max: np.ndarray
    budget: float = 1.0
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        w = _array("w", self.w)
        n = w.shape[0]
        a = _array("a", self.a, n)
        c = _array("c", self.c, n)
        b_min = _array("b_min", self.b_min, n)
        b_max = _array("b_max", self.b_max, n) if self.b_max is not None else np.ones(n)
        budget = _scalar("budget", self.budget)
        for name, arr in (("w", w), ("a", a), ("c", c)):
            _nonneg(name, arr)
        bad = np.flatnonzero(b_min <= 0)
        if bad.size:
            raise InstanceError(f"'b_min[{bad[0]}]' = {b_min[bad[0]]:g}; every b_min must be > 0")
        bad = np.flatnonzero(b_min < 1e-100)  # c/b² in f' and f'' would overflow or lose digits
        if bad.size:
            raise InstanceError(f"'b_min[{bad[0]}]' = {b_min[bad[0]]:g} is too small; "
                                f"values from 1e-100 only")
        bad = np.flatnonzero(b_min > b_max)
        if bad.size:
            i = bad[0]
            raise InstanceError(f"'b_min[{i}]' = {b_min[i]:g} exceeds 'b_max[{i}]' = {b_max[i]:g}")
        if budget <= 0:
            raise InstanceError(f"'budget' = {budget:g}; it must be > 0")
        # magnitudes whose terms or sums would overflow a float: refused (solvers rescale
        # anything representable, see solve_bandwidth)
        with np.errstate(over="ignore"):
            term = np.maximum(w, c / b_min)
        if w.size and not float(np.max(term)) * w.size <= 1e300:
            k = int(np.argmax(term))
            raise InstanceError(
                f"'w[{k}]' = {w[k]:g}, 'c[{k}]' = {c[k]:g}: the objective's terms would overflow; "
                f"rescale w and c together (their ratio is what matters)")
        bad = np.flatnonzero(a > 1e150)  # a² in f'' would overflow
        if bad.size:
            raise InstanceError(f"'a[{bad[0]}]' = {a[bad[0]]:g} is too large; values up to 1e150 "
                                f"only (e^(-a·b) is 0 there anyway)")
        if b_max.size and float(np.max(b_max)) > 1e300:
            raise InstanceError(f"'b_max' holds {float(np.max(b_max)):g}; values up to 1e300 only")
        # one rule for the budget: exact (fsum) feasibility, no slack
        total = math.fsum(b_min.tolist())
        if total > budget:
            raise InfeasibleError(
                f"infeasible: sum(b_min) = {total!r} exceeds 'budget' = {budget!r} "
                f"by {total - budget:.3g}"
            )
        for name, arr in (("w", w), ("a", a), ("c", c), ("b_min", b_min), ("b_max", b_max)):
            object.__setattr__(self, name, _readonly(arr))
        object.__setattr__(self, "budget", budget)

    @property
    def n(self) -> int:
        return int(self.w.shape[0])

    def terms(self, b: np.ndarray) -> np.ndarray:
        """Per-pair f_n(b_n) = -w_n e^{-a_n b_n} + c_n / b_n, eq. (16). Shape (N,)."""
        b = np.asarray(b, dtype=float)
        return -self.w * np.exp(-self.a * b) + self.c / b

    def objective(self, b: np.ndarray) -> float:
        """Objective of (16) in canonical form, summed with Neumaier-accurate fsum."""
        return math.fsum(self.terms(b))

    def violation(self, b: np.ndarray) -> float:
        """Largest violation of the bounds or the budget (0 when exactly feasible)."""
        b = np.asarray(b, dtype=float)
        if b.shape != self.w.shape or not np.all(np.isfinite(b)):
            return math.inf
        return float(
            max(
                0.0,
                np.max(self.b_min - b, initial=0.0),
                np.max(b - self.b_max, initial=0.0),
                math.fsum(b.tolist()) - self.budget,  # tolist: the same floats, faster
            )
        )

    def to_dict(self) -> dict:
        return {
            "problem": "bandwidth",
            "w": self.w.tolist(),
            "a": self.a.tolist(),
            "c": self.c.tolist(),
            "b_min": self.b_min.tolist(),
            "b_max": self.b_max.tolist(),
            "budget": self.budget,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BandwidthInstance:
        if not isinstance(data, dict):
            raise InstanceError("a bandwidth instance must be a JSON object")
        for key in ("w", "a", "c", "b_min"):
            if key not in data:
                raise InstanceError(f"missing key '{key}' in bandwidth instance")
        b_max = data.get("b_max")
        if b_max is None:
            b_max = np.ones(len(np.atleast_1d(data["w"])))
        return cls(
            w=data["w"], a=data["a"], c=data["c"], b_min=data["b_min"], b_max=b_max,
            budget=data.get("budget", 1.0),
        )



@dataclass(frozen=True, eq=False)
class PowerInstance(JsonInstance):
    """One UE's power subproblem (21) in canonical form. ``W``, ``A`` have shape (M_k,).

    ``W_m`` = ω_k Γ_{k,m}, ``A_m`` = a_k b_{k,m}, ``C`` = ρ Σ_m S_m / (b_{k,m} B log2(1+θ)).
    """

    W: np.ndarray
    A: np.ndarray
    kappa: float
    alpha: float
    C: float
    p_min: float
    p_max: float

    def __post_init__(self) -> None:
        W = _array("W", self.W)
        A = _array("A", self.A, W.shape[0])
        _nonneg("W", W)
        _nonneg("A", A)
        kappa = _scalar("kappa", self.kappa)
        alpha = _scalar("alpha", self.alpha)
        C = _scalar("C", self.C)
        p_min = _scalar("p_min", self.p_min)
        p_max = _scalar("p_max", self.p_max)
        if kappa < 0:
            raise InstanceError(f"'kappa' = {kappa:g} is negative; it must be >= 0")
        if C < 0:
            raise InstanceError(f"'C' = {C:g} is negative; it must be >= 0")
        if alpha <= 2:
            raise InstanceError(f"'alpha' = {alpha:g}; the path-loss exponent must be > 2")
        if p_min <= 0:
            raise InstanceError(f"'p_min' = {p_min:g}; it must be > 0")
        if p_min > p_max:
            raise InstanceError(f"'p_min' = {p_min:g} exceeds 'p_max' = {p_max:g}")
        if not math.fsum(W.tolist()) + C * p_max <= 1e300:  # (21) would overflow a float
            raise InstanceError(f"'W' sums to {math.fsum(W.tolist()):g} and 'C'·'p_max' is "
                                f"{C * p_max:g}: the objective would overflow; rescale W and C")
        object.__setattr__(self, "W", _readonly(W))
        object.__setattr__(self, "A", _readonly(A))
        for name, v in (("kappa", kappa), ("alpha", alpha), ("C", C), ("p_min", p_min),
                        ("p_max", p_max)):
            object.__setattr__(self, name, v)

    def objective(self, p: float) -> float:
        """Objective of (21): Σ_m W_m (1 - q_m(p)) + C p."""
        p = float(p)
        with np.errstate(over="ignore"):  # u = inf is q = 0, exactly right
            u = self.A / p + self.kappa * p ** (-2.0 / self.alpha)
        # 1 − q = −expm1(−u): exact where q ≈ 1 (1 − q computed directly loses every digit)
        return math.fsum((self.W * -np.expm1(-u)).tolist()) + self.C * p

    def violation(self, p: float) -> float:
        p = float(p)
        if not math.isfinite(p):
            return math.inf
        return max(0.0, self.p_min - p, p - self.p_max)

    def to_dict(self) -> dict:
        return {
            "problem": "power",
            "W": self.W.tolist(),
            "A": self.A.tolist(),
            "kappa": self.kappa,
            "alpha": self.alpha,
            "C": self.C,
            "p_min": self.p_min,
            "p_max": self.p_max,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PowerInstance:
        if not isinstance(data, dict):
            raise InstanceError("a power instance must be a JSON object")
        for key in ("W", "A", "kappa", "alpha", "C", "p_min", "p_max"):
            if key not in data:
                raise InstanceError(f"missing key '{key}' in power instance")
        return cls(**{k: data[k] for k in ("W", "A", "kappa", "alpha", "C", "p_min", "p_max")})



@dataclass(frozen=True, eq=False)
class PowerBatch:
    """K power instances (21) stacked for one vectorised solve.

    ``W``, ``A`` have shape (K, M); a zero ``W`` marks an unused slot. ``kappa`` and ``C`` have
    shape (K,). All UEs share ``alpha``, ``p_min`` and ``p_max``.
    """

    W: np.ndarray
    A: np.ndarray
    kappa: np.ndarray
    C: np.ndarray
    alpha: float
    p_min: float
    p_max: float

    def __post_init__(self) -> None:
        W = np.atleast_2d(np.asarray(self.W, dtype=float))
        A = np.atleast_2d(np.asarray(self.A, dtype=float))
        kappa = np.atleast_1d(np.asarray(self.kappa, dtype=float))
        C = np.atleast_1d(np.asarray(self.C, dtype=float))
        K = W.shape[0]
        if A.shape != W.shape or kappa.shape != (K,) or C.shape != (K,):
            raise InstanceError(
                f"power batch shapes disagree: W {W.shape}, A {A.shape}, kappa {kappa.shape}, C {C.shape}"
            )
        for name, arr in (("W", W), ("A", A), ("kappa", kappa), ("C", C)):
            if not np.all(np.isfinite(arr)):
                raise InstanceError(f"'{name}' contains NaN or inf")
            if np.any(arr < 0):
                raise InstanceError(f"'{name}' has a negative entry; it must be >= 0")
        if not (0 < self.p_min <= self.p_max):
            raise InstanceError(f"need 0 < p_min <= p_max, got {self.p_min:g}, {self.p_max:g}")
        if self.alpha <= 2:
            raise InstanceError(f"'alpha' = {self.alpha:g}; the path-loss exponent must be > 2")
        for name, arr in (("W", W), ("A", A), ("kappa", kappa), ("C", C)):
            object.__setattr__(self, name, _readonly(arr))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "p_min", float(self.p_min))
        object.__setattr__(self, "p_max", float(self.p_max))

    @property
    def k(self) -> int:
        return int(self.W.shape[0])

    def objective(self, p: np.ndarray) -> np.ndarray:
        """Per-UE objective of (21), shape (K,)."""
        p = np.asarray(p, dtype=float)[:, None]
        with np.errstate(over="ignore"):  # u = inf is q = 0, exactly right
            u = self.A / p + self.kappa[:, None] * p ** (-2.0 / self.alpha)
        return (self.W * -np.expm1(-u)).sum(axis=1) + self.C * p[:, 0]  # 1 − q = −expm1(−u)

    def instance(self, k: int) -> PowerInstance:
        """UE k's problem alone (its used slots only)."""
        used = self.W[k] > 0
        return PowerInstance(self.W[k][used], self.A[k][used], self.kappa[k], self.alpha,
                             self.C[k], self.p_min, self.p_max)

    @classmethod
    def stack(cls, instances: list[PowerInstance]) -> PowerBatch:
        if not instances:
            raise InstanceError("an empty list of power instances")
        m = max(len(i.W) for i in instances)
        W = np.zeros((len(instances), m))
        A = np.zeros((len(instances), m))
        for k, inst in enumerate(instances):
            W[k, : len(inst.W)] = inst.W
            A[k, : len(inst.A)] = inst.A
        first = instances[0]
        return cls(W, A, [i.kappa for i in instances], [i.C for i in instances], first.alpha,
                   first.p_min, first.p_max)


def _read_json(text_or_path: str | Path) -> dict:
    text = str(text_or_path)
    if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
        from .files import read_text

        text = read_text(text_or_path, "instance", InstanceError)
    where = "" if text_or_path is text else f"{text_or_path}: "
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InstanceError(f"{where}not valid JSON: {exc.msg} at line {exc.lineno} column "
                            f"{exc.colno}") from None
    except RecursionError:
        raise InstanceError(f"{where}JSON nested too deeply") from None
    except InstanceError as exc:  # a duplicate key or a NaN token, found while parsing
        raise InstanceError(f"{where}{exc}") from None
    if not isinstance(data, dict):
        raise InstanceError("an instance must be a JSON object")
    return data


def _no_duplicates(pairs: list) -> dict:
    """A JSON object with a key given twice is refused (json keeps the last one silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise InstanceError(f"duplicate key '{key}' in the instance JSON")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise InstanceError(f"'{name}' is not allowed; every value must be finite")


def load_instance(text_or_path: str | Path, problem: str | None = None
                  ) -> BandwidthInstance | PowerInstance | RoundInstance:
    """Read a canonical instance from a JSON file or string; ``problem`` checks its kind
    (``bandwidth``, ``power`` or ``round``: :class:`fedopt.round_instance.RoundInstance`)."""
    data = _read_json(text_or_path)
    kind = data.get("problem", problem)
    if problem is not None and kind != problem:
        raise InstanceError(f"'problem' is {kind!r}, expected {problem!r}")
    if kind == "bandwidth":
        return BandwidthInstance.from_dict(data)
    if kind == "power":
        return PowerInstance.from_dict(data)
    if kind == "round":
        from .round_instance import RoundInstance

        return RoundInstance.from_dict(data)
    raise InstanceError(f"'problem' must be 'bandwidth', 'power' or 'round', got {kind!r}")


# --- builders from a system state -------------------------------------------------------------


def pairs_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (k, m) of the scheduled pairs x_{k,m} = 1, row-major. Each has shape (N,)."""
    x = np.asarray(x)
    return np.nonzero(x > 0.5)


def bandwidth_instance(
    *,
    x: np.ndarray,
    p: np.ndarray,
    omega: np.ndarray,
    Gamma: np.ndarray,
    a: np.ndarray,
    kappa: np.ndarray,
    S: np.ndarray,
    b_min: np.ndarray,
    rho: float,
    B: float,
    theta: float,
    alpha: float,
    b_max: float = 1.0,
    budget: float = 1.0,
) -> BandwidthInstance:
    """Build (16) from a round's state: x (K, M), p (K,), omega (K,), Gamma (K, M),
    a = a_k (K,), kappa = κ_k (K,), S (M,) bits, b_min (K, M).

    The instance's ``meta['pairs']`` holds the (k, m) index of each of its N terms, so
    :func:`BandwidthInstance` solutions map back with ``meta_to_matrix``.
    """
    k, m = pairs_of(x)
    p_k = np.asarray(p, dtype=float)[k]
    w = np.asarray(omega)[k] * np.asarray(Gamma)[k, m] * np.exp(
        -np.asarray(kappa)[k] * p_k ** (-2.0 / alpha)
    )
    a_n = np.asarray(a)[k] / p_k
    c = rho * p_k * np.asarray(S)[m] / (B * math.log2(1.0 + theta))
    inst = BandwidthInstance(w=w, a=a_n, c=c, b_min=np.asarray(b_min)[k, m],
                             b_max=np.full(k.shape, float(b_max)), budget=budget)
    inst.meta["pairs"] = (k, m)
    inst.meta["shape"] = np.shape(x)
    return inst


def bandwidth_to_matrix(inst: BandwidthInstance, b: np.ndarray) -> np.ndarray:
    """Map a solution b (N,) of an instance built by :func:`bandwidth_instance` back to (K, M)."""
    k, m = inst.meta["pairs"]
    out = np.zeros(inst.meta["shape"])
    out[k, m] = b
    return out


def power_batch(
    *,
    x: np.ndarray,
    b: np.ndarray,
    omega: np.ndarray,
    Gamma: np.ndarray,
    a: np.ndarray,
    kappa: np.ndarray,
    S: np.ndarray,
    rho: float,
    B: float,
    theta: float,
    alpha: float,
    p_min: float,
    p_max: float,
) -> PowerBatch:
    """Build (21) for every UE from x (K, M), b (K, M), omega (K,), Gamma (K, M), a (K,),
    kappa (K,), S (M,). Unscheduled pairs get W = 0; a UE with no pair has C = 0."""
    x = np.asarray(x) > 0.5
    b = np.where(x, np.asarray(b, dtype=float), 1.0)
    W = np.where(x, np.asarray(omega)[:, None] * np.asarray(Gamma), 0.0)
    A = np.where(x, np.asarray(a)[:, None] * b, 0.0)
    C = rho * np.where(x, np.asarray(S)[None, :] / (b * B * math.log2(1.0 + theta)), 0.0).sum(1)
    return PowerBatch(W, A, kappa, C, alpha, p_min, p_max)
