"""Training-run plumbing shared by Figs. 2 and 4: schemes × seeds through the runtime.

A figure's runs come in *groups* (Fig. 2: one K and seed; Fig. 4: one seed), whose schemes run
one after another in one process, so they share the seed's data split and the LoRA backend's
frozen-prefix cache. :func:`run_groups` runs the groups, in ``jobs`` worker processes if asked,
and stores each finished group as ``<out>/runs/<tag>.json``: with ``resume`` a restarted
figure reuses the groups whose stored config matches, so a long lora run that is interrupted
loses at most the groups in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_config", "run_one", "run_groups", "rounds_to_converge", "smoothed"]


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


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _store_key(task: tuple) -> str:
    # a progress flag in a dict argument does not change the result
    args = [{k: v for k, v in a.items() if k != "progress"} if isinstance(a, dict) else a
            for a in task[1:]]
    return hashlib.sha1(json.dumps(args, sort_keys=True, default=_jsonable).encode()).hexdigest()


def run_groups(func: Callable[..., dict], tasks: list[tuple], store: Path, *, jobs: int = 1,
               resume: bool = False, bar=None) -> dict[str, dict]:
    """Run ``func(*task[1:])`` for every task ``(tag, *args)`` and return {tag: result}.

    ``func`` must be a module-level function (workers pickle it) that returns a JSON-able
    dict. Each result is written to ``store/<tag>.json`` with a hash of its arguments; with
    ``resume`` a stored result whose hash matches is loaded instead of recomputed. ``jobs`` > 1
    runs the groups in that many spawned processes (set the backend's ``threads`` so that
    jobs × threads fits the cores)."""
    from ..errors import StateFileError
    from ..runfolder import atomic_write_text, remove_stale_temporaries

    for task in tasks:  # before any work: a result could never be stored there
        path = store / f"{task[0]}.json"
        if path.exists() and not path.is_file():
            raise StateFileError(f"stored run {path} is not a file; remove it or use --overwrite")
    store.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(store)
    out: dict[str, dict] = {}
    todo = []
    for task in tasks:
        path = store / f"{task[0]}.json"
        if resume and path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}  # unreadable or hand-edited into invalid JSON: run it again
            if isinstance(data, dict) and data.get("key") == _store_key(task) and "result" in data:
                out[task[0]] = data["result"]
                if bar is not None:
                    bar.update(1)
                continue
        todo.append(task)

    def keep(task, result):
        text = json.dumps({"key": _store_key(task), "result": result}, default=_jsonable)
        atomic_write_text(store / f"{task[0]}.json", text)  # a kill never leaves a half file
        out[task[0]] = json.loads(text)["result"]  # as a resumed run would see it
        if bar is not None:
            bar.update(1)

    if jobs <= 1 or len(todo) <= 1:
        for task in todo:
            keep(task, func(*task[1:]))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(func, *task[1:]): task for task in todo}
            for fut in as_completed(futures):
                keep(futures[fut], fut.result())
    return out


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
