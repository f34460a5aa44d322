"""A Flower run's results folder, whichever engine ran it (Ray simulation or deployment).

``config.yaml`` (the fedopt run config), ``metrics.csv`` (one row per round: what the
allocator planned, what arrived, the ensemble evaluation (3)), ``summary.json`` and
``params.npz`` (the final modules θ_m^T, keys ``<m>.<name>`` as in
:func:`~fedopt.flower.records.pack_modules`). In deployment the ServerApp runs in its own
process, so this folder is how ``fedopt flower deploy`` gets the run back.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Params

__all__ = ["summarize", "write_results", "read_params", "read_rows"]


def _nanmean(values) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def summarize(run, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The run's one-line facts: rounds, K, M, seed, policy, energy, final loss / accuracy (3),
    mean participation and success rate; ``extra`` (timings) appended."""
    final = rows[-1] if rows else {}
    return {
        "rounds": len(rows), "K": run.system.K, "M": run.system.M, "seed": run.seed,
        "policy": run.policy, "energy_total": float(sum(r["energy"] for r in rows)),
        "final_loss": final.get("loss"), "final_accuracy": final.get("accuracy"),
        "mean_participation": _nanmean([r["participation"] for r in rows]),
        "mean_success_rate": _nanmean([r["success_rate"] for r in rows]),
        **extra,
    }


def write_results(folder: str | Path, run, rows: list[dict[str, Any]], summary: dict[str, Any],
                  params: list[Params] | None = None) -> Path:
    """Write the four files (atomically each); ``params=None`` leaves out ``params.npz``."""
    from ..fl.metrics import write_csv, write_json
    from ..runfolder import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", run.to_yaml())
    write_csv(rows, folder / "metrics.csv")
    write_json(summary, folder / "summary.json")
    if params is not None:
        buf = io.BytesIO()
        np.savez(buf, **{f"{m}.{k}": np.asarray(v) for m, p in enumerate(params) for k, v in p.items()})
        atomic_write_bytes(folder / "params.npz", buf.getvalue())
    return folder


def read_params(folder: str | Path) -> list[Params]:
    """The final modules from ``params.npz`` (list index = module m)."""
    with np.load(Path(folder) / "params.npz", allow_pickle=False) as data:
        out: dict[int, Params] = {}
        for key in data.files:
            m, _, name = key.partition(".")
            out.setdefault(int(m), {})[name] = data[key]
    return [out[m] for m in sorted(out)]


def read_rows(folder: str | Path) -> list[dict[str, float]]:
    """``metrics.csv`` back as rows of floats (empty cells: NaN)."""
    import csv

    with open(Path(folder) / "metrics.csv", newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(fh)]
