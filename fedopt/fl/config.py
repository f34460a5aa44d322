"""The run configuration: one flat ``key: value`` namespace for a simulation.

A YAML file and ``--set key=value`` strings share one namespace. Each key is either a
:class:`~fedopt.config.SystemConfig` key (MODEL.md's parameters), a run key (:data:`RUN_KEYS`)
or an option of the chosen training backend (its ``OPTIONS``). Unknown keys raise a one-line
:class:`ConfigError` with a close-match hint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backends import backend_options
from ..config import (
    SystemConfig,
    _default_ranks,
    check_number,
    load_yaml,
    parse_overrides,
    suggest_key,
)
from ..errors import ConfigError

__all__ = ["RunConfig", "RUN_KEYS", "KNOWN_POLICIES", "NORMALIZE", "resume_conflicts"]

NORMALIZE = ("received", "subscribed")
STEP_SIZES = ("fixed", "inverse_L")


def _known_policies() -> tuple[str, ...]:
    try:
        from ..online import POLICIES
    except ImportError:  # the switching layer is optional for config checks
        return ("primal_dual", "lyapunov", "greedy", "one_shot", "hindsight")
    return tuple(POLICIES)


KNOWN_POLICIES = _known_policies()

MAX_MOBILITY_STEP = 1e5  # [m] a round; far beyond any cell (its radius is ~178 m by default)

# run key -> (default, help)
RUN_KEYS: dict[str, tuple[Any, str]] = {
    "rounds": (200, "T, the number of rounds"),
    "policy": ("primal_dual", "switching policy: " + ", ".join(KNOWN_POLICIES)),
    "power_method": (None, "power solver for (21); None: the allocator's default"),
    "bandwidth_method": (None, "bandwidth solver for (16); None: the allocator's default"),
    "backend": ("synthetic", "training backend: synthetic or lora"),
    "normalize": ("received", "aggregation (1) over the 'received' or 'subscribed' uploads"),
    "step_size": ("fixed", "local step size: 'fixed' (the system key lr) or 'inverse_L' (1/L)"),
    "checkpoint_every": (10, "write a checkpoint every N rounds (0: never)"),
    "mobility_step": (0.0, "UE random-walk step per round [m]"),
    "probe_fraction": (1.0, "share of pairs probed for (loss, ||grad||^2) each round"),
    "eval_every": (1, "evaluate the ensembles (3) every N rounds (and at the end)"),
    "target_accuracy": (0.0, "report the first round the accuracy reaches this (0: off)"),
    "seed": (0, "seeds the population, the backend, the channel draws and the policy"),
    "data_dir": (None, "the backend's data folder (must exist if given)"),
}


@dataclass(frozen=True)
class RunConfig:
    """A resolved simulation config: run keys, backend options and the system."""

    system: SystemConfig = field(default_factory=SystemConfig)
    rounds: int = 200
    policy: str = "primal_dual"
    power_method: str | None = None
    bandwidth_method: str | None = None
    backend: str = "synthetic"
    normalize: str = "received"
    step_size: str = "fixed"
    checkpoint_every: int = 10
    mobility_step: float = 0.0
    probe_fraction: float = 1.0
    eval_every: int = 1
    target_accuracy: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    backend_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the numeric run keys: one check (SystemConfig's) for type, finiteness and range
        for key, lo, hi, integer in (("rounds", 1, None, True), ("checkpoint_every", 0, None, True),
                                     ("eval_every", 1, None, True), ("seed", 0, 2**63 - 1, True),
                                     ("mobility_step", 0.0, MAX_MOBILITY_STEP, False),
                                     ("probe_fraction", 0.0, 1.0, False),
                                     ("target_accuracy", 0.0, 1.0, False)):
            object.__setattr__(self, key, check_number(key, getattr(self, key), lo=lo, hi=hi,
                                                       integer=integer))
        for key, known in (("policy", KNOWN_POLICIES), ("normalize", NORMALIZE),
                           ("step_size", STEP_SIZES)):
            v = getattr(self, key)
            if not isinstance(v, str) or v not in known:  # [1] or {} is not a name (nor hashable)
                hint = suggest_key(str(v), list(known))
                raise ConfigError(f"{key}: unknown value '{v}'{hint} (known: {', '.join(known)})")
        if not isinstance(self.backend, str):
            raise ConfigError(f"backend: expected a name, got {self.backend!r}")
        defaults = backend_options(self.backend)  # unknown backend -> ConfigError
        defaults.pop("data_dir", None)
        options = {**defaults, **self.backend_options}
        for key, default in defaults.items():
            options[key] = _check_option(key, options[key], default)
        object.__setattr__(self, "backend_options", options)
        for key in ("power_method", "bandwidth_method", "data_dir"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"{key}: expected a name, got {v!r}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ConfigError(f"data_dir: directory '{self.data_dir}' does not exist")

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Split one flat dict into system keys, run keys and backend options (validated)."""
        data = dict(data)
        backend = str(data.get("backend", RUN_KEYS["backend"][0]))
        options = backend_options(backend)
        system_names = SystemConfig.field_names()
        known = list(RUN_KEYS) + system_names + list(options)
        system: dict[str, Any] = {}
        run: dict[str, Any] = {}
        opts: dict[str, Any] = {}
        for key, value in data.items():
            if key in RUN_KEYS:
                run[key] = value
            elif key in system_names:
                system[key] = value
            elif key in options:
                opts[key] = value
            else:
                raise ConfigError(f"unknown key '{key}'{suggest_key(key, known)}")
        if "data_dir" in opts:  # a backend that reads data_dir itself gets the run's value
            run.setdefault("data_dir", opts.pop("data_dir"))
        return cls(system=SystemConfig.from_dict(system), backend_options=opts, **run)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None,
             base: dict[str, Any] | None = None) -> RunConfig:
        """``base`` dict, then the YAML file, then the ``key=value`` overrides (later wins).

        An override of M without ranks resets the ranks to M's default, as SystemConfig does.
        """
        data = dict(base or {})
        if path is not None:
            data = merge(data, load_yaml(path))
        return cls.from_dict(merge(data, parse_overrides(overrides or [])))

    # --- output ---------------------------------------------------------------------------

    def to_flat_dict(self) -> dict[str, Any]:
        """Every key of the resolved config, one flat namespace (what config.yaml holds)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name not in ("system", "backend_options"):
                out[f.name] = getattr(self, f.name)
        out.update(self.backend_options)
        out.update(self.system.to_dict())
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_flat_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with keys of the flat namespace changed (validated)."""
        return type(self).from_dict(merge(self.to_flat_dict(), changes))

    def backend_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.backend_options)
        if "data_dir" in backend_options(self.backend):
            kwargs["data_dir"] = self.data_dir
        return kwargs


def _check_option(key: str, value: Any, default: Any) -> Any:
    """A backend option has its default's type: a bool stays a bool, a string a string, a
    number a finite number >= 0 (an integer count >= 1 where the default is one; 0 is a value
    only where the default uses it, "off"). A None default (auto) accepts anything."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(default, int):
        return check_number(key, value, lo=1 if default >= 1 else 0, integer=True)
    if isinstance(default, float):
        return check_number(key, value, lo=0.0)
    return value


def resume_conflicts(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys, sorted, on which two flat configs differ, except ``rounds``: T only ends
    the loop and schedules the last evaluation, so it is the one key a resume may change
    (to extend a run, or to cut one that has not yet got that far)."""
    return [k for k in sorted(set(saved) | set(now))
            if k != "rounds" and saved.get(k, _MISSING) != now.get(k, _MISSING)]


_MISSING = object()


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; a change of M alone resets the ranks to M's default."""
    out = dict(base)
    if "M" in changes and "ranks" not in changes and "ranks" in out:
        try:
            out["ranks"] = list(_default_ranks(int(changes["M"])))
        except (TypeError, ValueError):
            pass  # SystemConfig reports the bad M
    out.update(changes)
    return out
