"""Training-run plumbing shared by Figs. 2 and 4: schemes × seeds through the runtime.

A figure's runs come in *groups* (Fig. 2: one K and seed; Fig. 4: one seed), whose schemes run
one after another in one process, so they share the seed's data split and the LoRA backend's
frozen-prefix cache. :func:`run_groups` runs the groups, in ``jobs`` worker processes if asked,
and stores each finished group as ``<out>/runs/<tag>.json``: with ``resume`` a restarted
figure reuses the groups whose stored config matches. While a group runs, each of its runs
checkpoints into ``<out>/runs/<tag>/<scheme>/`` every ``checkpoint_every`` rounds (the run
config's key, 10 by default), and a resumed figure continues those runs from there: an
interrupted figure loses at most ``checkpoint_every`` rounds of each run in flight. The
folder is removed once its group is stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_config", "run_one", "run_groups", "rounds_to_converge", "smoothed"]


def run_config(cfg: dict, backend: str, seed: int, **changes: Any):
    from ..fl.config import RunConfig

    return RunConfig.from_dict({**cfg["run"], **changes, "backend": backend, "seed": seed})


def run_one(scheme: str, run, folder: Path | None = None, resume: bool = False) -> dict[str, Any]:
    """One scheme's run: its per-round accuracy, energy and the runtime's summary. With
    ``folder`` the run checkpoints there (and continues from its checkpoint with ``resume``)."""
    from ..baselines import run_scheme

    s = run_scheme(scheme, run, folder, resume=resume, outputs=False)  # checkpoints only
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


_CURVES = ("accuracy", "global_accuracy", "energy", "received", "subscriptions")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run_misfit(r: Any, where: str) -> str | None:
    """Why ``r`` is not one scheme's stored run (:func:`run_one`'s curves, equally long lists
    of numbers, and ``slots_per_round``), or None."""
    if not isinstance(r, dict):
        return f"{where} is {type(r).__name__}, not a mapping"
    lengths = set()
    for key in _CURVES:
        v = r.get(key)
        if not isinstance(v, list) or not v or not all(_number(x) for x in v):
            return f"{where}.{key} is not a non-empty list of numbers"
        lengths.add(len(v))
    if len(lengths) != 1:
        return f"{where}'s curves have different lengths"
    if not _number(r.get("slots_per_round")):
        return f"{where}.slots_per_round is not a number"
    return None


def group_misfit(runs: Any, schemes: list[str], where: str = "result") -> str | None:
    """Why ``runs`` is not ``{scheme: run}`` for every scheme of ``schemes``, or None."""
    if not isinstance(runs, dict):
        return f"{where} is {type(runs).__name__ if runs is not None else 'null'}, not a mapping"
    for name in schemes:
        if name not in runs:
            return f"{where} has no run of {name!r}"
    for name, r in runs.items():
        why = run_misfit(r, f"{where}.{name}")
        if why:
            return why
    if len({len(r["accuracy"]) for r in runs.values()}) > 1:
        return f"{where}'s runs have different lengths"
    return None


def _read_store(path: Path, key: str, check: Callable[[Any], str | None] | None):
    """(result, None) for a stored group of this ``key``; (None, None) for one of other
    arguments (a changed config: run again, as documented); (None, why) for a damaged one."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # json.JSONDecodeError: empty, truncated, hand-edited
        return None, f"not valid JSON: {str(exc).splitlines()[0][:80]}"
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) or "result" not in data:
        return None, "not a stored group (no 'key' and 'result')"
    if data["key"] != key:
        return None, None
    why = check(data["result"]) if check is not None else None
    if why:
        return None, why
    return data["result"], None


def run_groups(func: Callable[..., dict], tasks: list[tuple], store: Path, *, jobs: int = 1,
               resume: bool = False, bar=None,
               check: Callable[[Any], str | None] | None = None) -> dict[str, dict]:
    """Run ``func(*task[1:], folder=store/<tag>, resume=resume)`` for every task
    ``(tag, *args)`` and return {tag: result}.

    ``func`` must be a module-level function (workers pickle it) that returns a JSON-able
    dict; ``folder`` is where its runs keep their checkpoints (removed once the result is
    stored). Each result is written to ``store/<tag>.json`` with a hash of its arguments; with
    ``resume`` a stored result whose hash matches is loaded instead of recomputed; one that
    cannot be read, is not JSON or fails ``check`` (why it is not a result, or None) is
    damaged: it is recomputed after one warning line on stderr naming the file. ``jobs`` > 1
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
            result, why = _read_store(path, _store_key(task), check)
            if why:  # a cache of results: said once, then computed again (never a traceback)
                print(f"fedopt experiment: warning: stored run {path} is damaged ({why}); "
                      f"it is recomputed", file=sys.stderr)
            elif result is not None:
                out[task[0]] = result
                _remove_runs(store / task[0])  # a kill between storing and removing
                if bar is not None:
                    bar.update(1)
                continue
        todo.append(task)

    def keep(task, result):
        text = json.dumps({"key": _store_key(task), "result": result}, default=_jsonable)
        atomic_write_text(store / f"{task[0]}.json", text)  # a kill never leaves a half file
        _remove_runs(store / task[0])
        out[task[0]] = json.loads(text)["result"]  # as a resumed run would see it
        if bar is not None:
            bar.update(1)

    if jobs <= 1 or len(todo) <= 1:
        for task in todo:
            keep(task, func(*task[1:], folder=store / task[0], resume=resume))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(func, *task[1:], folder=store / task[0], resume=resume): task
                       for task in todo}
            for fut in as_completed(futures):
                keep(futures[fut], fut.result())
    return out


def _remove_runs(folder: Path) -> None:
    """Remove a stored group's run folders (their checkpoints are of no further use)."""
    import shutil

    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)


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
