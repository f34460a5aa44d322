"""System configuration: every MODEL.md parameter in one frozen dataclass, in SI units.

Load it from YAML (:meth:`SystemConfig.from_yaml`) or a dict, and override single keys with
``key=value`` strings as the CLI's ``--set`` does. Values may carry units where users write
them (see :data:`UNITS`); a bare number is SI. Validation raises :class:`ConfigError` whose
one-line message names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError
from .files import read_text
from .units import parse_quantity

__all__ = ["SystemConfig", "ConfigError", "UNITS", "parse_overrides", "suggest_key",
           "check_number", "load_yaml", "parse_yaml"]

_N0_DEFAULT = 10 ** (-174 / 10) * 1e-3  # -174 dBm/Hz in W/Hz

# key -> dimension; string values of these keys may carry the units in fedopt.units
UNITS: dict[str, str] = {
    "f_c": "frequency",
    "B": "frequency",
    "f_min": "frequency",
    "f_max": "frequency",
    "N0": "psd",
    "P_max": "power",
    "P_min": "power",
    "p_I": "power",
    "theta": "ratio",
    "T_max": "time",
    "cell_radius": "length",
    "d_min": "length",
    "gnb_density": "density",
}

# The bounds of SystemConfig's numeric fields, in one place; a field not listed is >= 0.
# (lower, strict): a value must be > lower (strict) or >= lower.
_LOWER: dict[str, tuple[float, bool]] = {
    "alpha": (2.0, True),  # the path-loss exponent; (15) needs alpha > 2
    **{k: (1, False) for k in ("K", "M", "M_max", "params_per_rank", "bits_per_param",
                               "local_steps", "batch", "data_min", "data_max")},
    **{k: (0.0, True) for k in ("f_c", "theta", "gnb_density", "B", "P_max", "P_min", "f_min",
                                "f_max", "c_min", "c_max", "s_bits", "T_max", "alpha_dir")},
}
# Upper bounds keep sizes within arrays and floats (ranks 4·2^m for M modules, S_m = r_m x
# params x bits); beyond them numpy overflows or allocates without end.
_UPPER: dict[str, float] = {"M": 64, "M_max": 64}
MAX_INTEGER = 2**31 - 1  # any integer key (counts, sizes, rounds)
MAX_RANK = 2**16


def _default_ranks(M: int) -> tuple[int, ...]:
    """Ranks when only M is given: (8,) for a single module (FedLoRA), else 4, 8, 16, ... (ours)."""
    return (8,) if M == 1 else tuple(4 * 2**i for i in range(M))


@dataclass(frozen=True)
class SystemConfig:
    """Every parameter of MODEL.md with its default (MODEL.md, "Defaults"). SI units throughout."""

    # population and modules
    K: int = 100  # UEs
    M: int = 3  # LoRA modules
    M_max: int = 2  # modules a UE may subscribe to per round, (7b)
    ranks: tuple[int, ...] = (4, 8, 16)  # r_m
    module_size: str = "nominal"  # "nominal" (9216 r_m params) or "backend" (the backend's count)
    params_per_rank: int = 9216  # nominal MiniLM-L6 shape: 2 targets x 6 layers x 2 x 384
    bits_per_param: int = 16  # fp16 uploads
    phi_per_rank: float = 1 / 64  # phi_m = 1 + r_m * phi_per_rank (relative compute cost, ours)
    # wireless, (2) and (15)
    f_c: float = 2.4e9  # carrier frequency [Hz]
    alpha: float = 3.5  # path-loss exponent (> 2)
    theta: float = 1.0  # SINR threshold (linear; "0 dB")
    gnb_density: float = 1e-5  # PPP density lambda [1/m^2]
    p_I: float = 0.1  # interferer power [W]
    B: float = 20e6  # total bandwidth [Hz]
    N0: float = _N0_DEFAULT  # noise PSD [W/Hz]
    P_max: float = 0.2  # [W]
    P_min: float = 1e-3  # [W]
    cell_radius: float = 0.0  # [m]; 0 means 1/sqrt(pi lambda), the mean Voronoi radius
    d_min: float = 10.0  # closest UE to the gNB [m] (ours)
    # computation and energy, (4) and (13)
    f_min: float = 1e9  # CPU/GPU frequency range [Hz]
    f_max: float = 2e9
    zeta: float = 1e-28  # effective switched capacitance
    c_min: float = 500.0  # cycles per bit range
    c_max: float = 1500.0
    local_steps: int = 5  # I
    batch: int = 8  # local batch; D_k^t = I * batch samples a round
    s_bits: float = 2048.0  # bits per training sample
    T_max: float = 5.0  # round deadline [s]
    # data
    data_min: int = 200  # local dataset size range |D_k| (ours)
    data_max: int = 1000
    alpha_dir: float = 0.5  # Dirichlet label skew
    # objective and online layer, (7)-(12)
    rho: float = 1e-3  # energy-efficiency coefficient, calibrated per scheduled pair (MODEL-NOTES.md)
    beta: float = 0.3  # long-term participation floor (7f)
    energy_budget: float = 0.0  # E_bar_k [J/round]; 0 means no energy constraint
    lr: float = 0.05  # eta in Gamma = (eta / 2) ||grad||^2

    def __post_init__(self) -> None:
        ranks = self.ranks
        if isinstance(ranks, (numbers.Real, str)):
            ranks = (ranks,)
        object.__setattr__(self, "ranks", _coerce("ranks", list(ranks)))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("ranks", "module_size"):
                continue
            if isinstance(v, str):  # units accepted in the constructor too: "200 mW"
                v = _coerce(f.name, v)
            lo, strict = _LOWER.get(f.name, (0.0, False))
            v = check_number(f.name, v, lo=lo, strict=strict, hi=_UPPER.get(f.name),
                             integer=f.type in ("int", int))
            object.__setattr__(self, f.name, v)
        self._check()

    def _check(self) -> None:
        """The checks that relate several keys (one key's own range: :data:`_LOWER`)."""
        if len(self.ranks) != self.M:
            raise ConfigError(f"ranks: has {len(self.ranks)} entries but M = {self.M}")
        if any(not 1 <= r <= MAX_RANK for r in self.ranks):
            raise ConfigError(f"ranks: every rank must be in [1, {MAX_RANK}], got {list(self.ranks)}")
        if self.M_max > self.M:
            raise ConfigError(f"M_max: {self.M_max} exceeds M = {self.M}")
        if self.module_size not in ("nominal", "backend"):
            raise ConfigError(f"module_size: must be 'nominal' or 'backend', got {self.module_size!r}")
        if self.P_min > self.P_max:
            raise ConfigError(f"P_min: {self.P_min:g} W exceeds P_max = {self.P_max:g} W")
        for lo, hi in (("f_min", "f_max"), ("c_min", "c_max"), ("data_min", "data_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"{lo}: {getattr(self, lo):g} exceeds {hi} = {getattr(self, hi):g}")
        if self.beta > self.M_max:
            raise ConfigError(f"beta: {self.beta:g} exceeds M_max = {self.M_max}")
        if self.d_min >= self.radius:
            raise ConfigError(f"d_min: {self.d_min:g} m is not inside the cell radius {self.radius:g} m")
        if self.module_size == "nominal":
            with np.errstate(all="ignore"):
                load = self.expected_bandwidth_load()
            if not load <= 1.0:  # NaN too (extreme magnitudes overflow to inf - inf)
                raise ConfigError(
                    f"beta: the expected sum of b_min over scheduled pairs is {load:.3g} > 1 "
                    f"(the bandwidth budget); lower beta, K or the ranks, or raise B or T_max"
                )

    # --- derived quantities --------------------------------------------------------------

    @property
    def radius(self) -> float:
        """Cell radius [m]: ``cell_radius`` or the mean Voronoi radius 1/sqrt(pi lambda)."""
        return self.cell_radius or 1.0 / math.sqrt(math.pi * self.gnb_density)

    @property
    def samples_per_round(self) -> int:
        """D_k^t = I x local batch."""
        return int(self.local_steps * self.batch)

    @property
    def spectral_efficiency(self) -> float:
        """log2(1 + theta): fixed-rate transmission at the threshold (MODEL.md (13))."""
        return math.log2(1.0 + self.theta)

    def nominal_module_bits(self) -> np.ndarray:
        """S_m = n_params(m) * bits_per_param with the nominal 9216 r_m parameters. Shape (M,)."""
        return np.asarray(self.ranks, float) * self.params_per_rank * self.bits_per_param

    def phi(self) -> np.ndarray:
        """phi_m = 1 + r_m / 64 (ours): module m's relative compute cost. Shape (M,)."""
        return 1.0 + np.asarray(self.ranks, float) * self.phi_per_rank

    def expected_bandwidth_load(self, n_samples: int = 4096) -> float:
        """Expected Σ b_min of one round's scheduled pairs under the defaults' population.

        The participation floor (7f) schedules beta * K UE-module pairs a round on average; each
        module is equally likely. E[b_min] is taken over f_k ~ U[f_min, f_max] and c_k ~
        U[c_min, c_max] on a fixed quasi-grid (deterministic). Pairs that miss the deadline
        outright cannot be scheduled and are excluded.
        """
        from .energy import compute_time, min_bandwidth

        u = (np.arange(n_samples) + 0.5) / n_samples
        f = self.f_min + (self.f_max - self.f_min) * u
        c = self.c_min + (self.c_max - self.c_min) * np.roll(u, n_samples // 3)
        t_cmp = compute_time(self, self.phi()[None, :], c[:, None], self.samples_per_round, f[:, None])
        bmin = min_bandwidth(self, self.nominal_module_bits()[None, :], t_cmp)
        feasible = np.isfinite(bmin)
        if not feasible.any():
            return math.inf
        return float(self.beta * self.K * bmin[feasible].mean())

    # --- I/O ----------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> SystemConfig:
        """Build from a dict (e.g. parsed YAML); unknown keys raise with a close-match hint."""
        merged = dict(data or {})
        merged.update(overrides)
        names = cls.field_names()
        kwargs: dict[str, Any] = {}
        for key, value in merged.items():
            if key not in names:
                raise ConfigError(f"unknown key '{key}'{suggest_key(key, names)}")
            kwargs[key] = _coerce(key, value)
        if "M" in kwargs:  # checked before M sizes the default ranks
            kwargs["M"] = check_number("M", kwargs["M"], lo=1, hi=_UPPER["M"], integer=True)
        if "M" in kwargs and "ranks" not in kwargs:
            kwargs["ranks"] = _default_ranks(int(kwargs["M"]))
        if "M" in kwargs and "M_max" not in kwargs:  # M = 1 (FedLoRA) implies M_max = 1
            kwargs["M_max"] = min(cls.M_max, int(kwargs["M"]))
        if "ranks" in kwargs and "M" not in kwargs:
            r = kwargs["ranks"]
            kwargs["M"] = len(r) if isinstance(r, (list, tuple)) else 1
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> SystemConfig:
        return cls.from_dict({**load_yaml(path), **parse_overrides(overrides or [])})

    def replace(self, **changes: Any) -> SystemConfig:
        """A copy with some keys changed (validated, units accepted)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def with_overrides(self, overrides: list[str]) -> SystemConfig:
        """Apply CLI ``key=value`` strings."""
        changes = parse_overrides(overrides)
        if "M" in changes:
            m = check_number("M", _coerce("M", changes["M"]), lo=1, hi=_UPPER["M"], integer=True)
            changes.setdefault("ranks", _default_ranks(m))
            changes.setdefault("M_max", min(type(self).M_max, m))
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ranks"] = list(self.ranks)
        return d

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def check_number(key: str, value: Any, *, lo: float | None = None, strict: bool = False,
                 hi: float | None = None, integer: bool = False) -> int | float:
    """The one check of a numeric config value (system keys and run keys alike, from YAML,
    --set or code): a real number, not a bool or a string; finite; an integer if ``integer``
    (at most :data:`MAX_INTEGER` unless ``hi`` says otherwise); >= ``lo`` (> with ``strict``) and <= ``hi``. Returns it as
    an int or a float; anything else is a one-line :class:`ConfigError` naming ``key``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):  # YAML 1.1 reads 5e-1 (no dot) as a string: one parser for all
        try:
            value = parse_quantity(value, None)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}: expected {kind}, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}: expected {kind}, got {value!r}")
    if isinstance(value, numbers.Integral) and integer:
        v: int | float = int(value)  # exact: no float() of a huge integer (OverflowError)
    else:
        try:
            v = float(value)
        except OverflowError:  # an integer beyond 1.8e308
            raise ConfigError(f"{key}: must be finite, got an integer of {len(str(value))} "
                              "digits") from None
        if math.isnan(v):
            raise ConfigError(f"{key}: NaN is not a valid value")
        if math.isinf(v):
            raise ConfigError(f"{key}: must be finite, got {v}")
        if integer:
            if not v.is_integer():
                raise ConfigError(f"{key}: must be an integer, got {v:g}")
            v = int(v)
    if integer and hi is None:
        hi = MAX_INTEGER
    def show(x: float) -> str:
        if integer:
            text = str(int(x))
            return text if len(text) <= 20 else f"an integer of {len(text)} digits"
        return f"{x:g}"

    if lo is not None and (v <= lo if strict else v < lo):
        raise ConfigError(f"{key}: must be {'>' if strict else '>='} {show(lo)}, got {show(v)}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: must be <= {show(hi)}, got {show(v)}")
    return v


def _coerce(key: str, value: Any) -> Any:
    if key == "ranks":
        if isinstance(value, str):
            raw, text = value, value.strip()
            if text.startswith("[") != text.endswith("]"):
                raise ConfigError(f"ranks: unbalanced brackets in {value!r}")
            text = text.removeprefix("[").removesuffix("]")
            if "[" in text or "]" in text:
                raise ConfigError(f"ranks: expected a flat list of integers, got {value!r}")
            value = [v.strip() for v in text.split(",")] if text.strip() else []
            if any(not v for v in value):
                raise ConfigError(f"ranks: empty entry in {raw!r}")
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)) or len(value) > _UPPER["M"]:
            raise ConfigError(f"ranks: expected a list of at most {_UPPER['M']} integers, "
                              f"got {value!r}")
        out = []
        for v in value:
            if isinstance(v, str):
                try:
                    v = parse_quantity(v, None)
                except ValueError as exc:
                    raise ConfigError(f"ranks: {exc}") from None
            out.append(check_number("ranks", v, lo=1, hi=MAX_RANK, integer=True))
        return tuple(out)
    if key == "module_size":
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact; check_number bounds it (float() of a huge int overflows)
    try:
        v = parse_quantity(value, UNITS.get(key))
    except (ValueError, OverflowError) as exc:  # "1e400 dBm" overflows 10 ** (v / 10)
        raise ConfigError(f"{key}: {exc}") from None
    if isinstance(v, float) and math.isnan(v) and "nan" not in str(value).lower():
        # the unit conversion of a huge value (1e400 dBm: inf - inf) is not a NaN the user wrote
        raise ConfigError(f"{key}: {value!r} is too large (not a finite value)")
    return v


def suggest_key(key: Any, names: list[str]) -> str:
    key = str(key)  # a YAML key may be a number, a date, null
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    if not close:
        close = [n for n in names if n.lower() == key.lower()]
    return f"; did you mean '{close[0]}'?" if close else ""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars or lists (``ranks=[4,8]``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[key] = raw if value is None else value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error
    (the plain loader silently keeps the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if dup:
                raise ConfigError(f"duplicate key '{key}' at line {key_node.start_mark.line + 1}")
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python data (safe types only); an error is one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def load_yaml(path: str | Path, what: str = "--config") -> dict[str, Any]:
    """A flat YAML config file as a dict; every problem is one :class:`ConfigError` line."""
    path = Path(path)
    data = parse_yaml(read_text(path, what), f"{what}: {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path}: the top level must be a mapping of key: value")
    return data
