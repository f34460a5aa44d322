"""Training-run plumbing shared by Figs. 2 and 4: schemes × seeds through the runtime."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["run_config", "run_one", "rounds_to_converge", "smoothed"]


def run_config(cfg: dict, backend: str, seed: int, **changes: Any):
    from ..fl.config import RunConfig

    return RunConfig.from_dict({**cfg["run"], **changes, "backend": backend, "seed": seed,
                                "checkpoint_every": 0})


def run_one(scheme: str, run, **kw) -> dict[str, Any]:
    """One scheme's run: its per-round accuracy, energy and the runtime's summary."""
    from ..baselines import run_scheme

    s = run_scheme(scheme, run, **kw)
    rows = s.pop("rows")
    s["accuracy"] = [r["accuracy"] for r in rows]
    s["global_accuracy"] = [r["global_accuracy"] for r in rows]
    s["energy"] = [r["energy"] for r in rows]
    s["received"] = [r["received"] for r in rows]
    s["subscriptions"] = [r["subscriptions"] for r in rows]
    return s


def smoothed(acc, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` evaluated rounds (NaN rounds skipped)."""
    a = np.asarray(acc, dtype=float)
    out = np.full_like(a, np.nan)
    for t in range(a.shape[0]):
        seg = a[max(0, t - window + 1): t + 1]
        seg = seg[np.isfinite(seg)]
        if seg.size:
            out[t] = seg.mean()
    return out


def rounds_to_converge(acc, target: float, window: int) -> float:
    """The first round (1-based) whose trailing ``window``-round mean accuracy reaches
    ``target``; ``inf`` when the run never does (censored at its length)."""
    sm = smoothed(acc, window)
    hit = np.flatnonzero(sm >= target)
    return float(hit[0] + 1) if hit.size else math.inf
