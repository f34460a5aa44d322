"""Shared plumbing of the figure experiments: config files, output folder, tables, bands.

An experiment's config is a flat YAML dict (``experiments/configs/<fig>.yaml``): run keys of
:class:`fedopt.fl.config.RunConfig` (system keys, backend options) under ``run:`` and the
experiment's own keys (sweeps, seeds) at the top level. ``quick:`` holds the overrides of
``--quick``. The resolved config is written next to the results as ``config.yaml``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import load_yaml
from ..errors import ConfigError

__all__ = ["CONFIG_DIR", "load_experiment", "write_rows", "markdown_table", "mean_std",
           "band", "seed_list"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _packaged_default(fig: str) -> dict[str, Any]:
    from .defaults import DEFAULTS

    return DEFAULTS[fig]


def load_experiment(fig: str, path: str | Path | None = None, quick: bool = False,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment config: the packaged defaults, then ``path`` (or the repo's
    experiments/configs/<fig>.yaml when present), then ``quick:``, then ``overrides``."""
    cfg = _deep_copy(_packaged_default(fig))
    file = Path(path) if path is not None else CONFIG_DIR / f"{fig}.yaml"
    if path is not None and not file.is_file():
        raise ConfigError(f"--config: file '{path}' does not exist")
    if file.is_file():
        cfg = _merge(cfg, load_yaml(file))  # UTF-8, duplicate keys, one-line errors
    if quick:
        cfg = _merge(cfg, cfg.get("quick", {}))
    cfg.pop("quick", None)
    if overrides:
        cfg = _merge(cfg, overrides)
    unknown = set(cfg) - set(_packaged_default(fig)) - {"quick"}
    if unknown:
        raise ConfigError(f"{fig}: unknown key '{sorted(unknown)[0]}'")
    return cfg


def _deep_copy(d: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(d))


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if k == "run" and isinstance(v, dict):
            out["run"] = {**out.get("run", {}), **v}
        else:
            out[k] = v
    return out


def seed_list(cfg: dict, seeds: int | None) -> list[int]:
    n = int(seeds if seeds is not None else cfg["seeds"])
    if n < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {n}")
    return list(range(int(cfg.get("first_seed", 0)), int(cfg.get("first_seed", 0)) + n))


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k, "")) for k in keys})


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(float(v)) else f"{float(v):.6g}"
    return v


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            v = float(v)
            if math.isnan(v):
                return "–"
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def band(ax, x, Y, label: str, **kw) -> None:
    """Mean line with a ±1 std band over the rows of Y (seeds × points)."""
    Y = np.asarray(Y, dtype=float)
    with np.errstate(invalid="ignore"):
        m = np.nanmean(Y, axis=0)
        s = np.nanstd(Y, axis=0, ddof=1) if Y.shape[0] > 1 else np.zeros_like(m)
    line = ax.plot(x, m, label=label, **kw)[0]
    ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, linewidth=0)


def out_dir(out: str | Path, fig: str) -> Path:
    d = Path(out) / fig
    d.mkdir(parents=True, exist_ok=True)
    return d


def _git_revision() -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev or None


def write_config(cfg: dict, d: Path, extra: dict | None = None) -> None:
    """config.yaml: the experiment config, what was resolved at run time and the git commit."""
    data = dict(cfg)
    data["resolved"] = {**(extra or {}), "git_commit": _git_revision()}
    (d / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
