"""Per-round metrics: the CSV, the summary and the PNG plots of a run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..runfolder import atomic_write_text

__all__ = ["write_csv", "summarize", "write_json", "plot_run", "rounds_to_target",
           "EnsembleEvaluation"]


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    if not rows:
        return
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in keys})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def write_json(data: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, json.dumps(_plain(data), indent=2, sort_keys=False) + "\n")


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return None if math.isnan(v) else v
    return v


def rounds_to_target(rows: list[dict[str, Any]], target: float, key: str = "accuracy") -> int | None:
    """The first round (1-based count of rounds run) whose ``key`` reaches ``target``."""
    for r in rows:
        v = r.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v >= target:
            return int(r["round"]) + 1
    return None


def _module_keys(rows: list[dict[str, Any]], prefix: str) -> list[str]:
    """The per-module columns ``prefix + m`` any row has, by m."""
    found = {k for r in rows for k in r if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return sorted(found, key=lambda k: int(k[len(prefix):]))


def summarize(rows: list[dict[str, Any]], participation: np.ndarray, target: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json: final and best accuracy, energy totals, rates; deterministic (no timings)."""
    last = rows[-1]
    evals = [r for r in rows if not math.isnan(r["accuracy"])]
    e_cmp = float(sum(r["energy_computation"] for r in rows))
    e_com = float(sum(r["energy_communication"] for r in rows))
    out: dict[str, Any] = {
        "rounds": len(rows),
        "final_accuracy": last["accuracy"],
        "final_global_accuracy": last["global_accuracy"],
        "final_loss": last["loss"],
        "best_accuracy": max((r["accuracy"] for r in evals), default=float("nan")),
        "energy_total": e_cmp + e_com,
        "energy_computation": e_cmp,
        "energy_communication": e_com,
        "mean_success_rate": float(np.nanmean([r["success_rate"] for r in rows])),
        "mean_participation": float(np.mean([r["participation"] for r in rows])),
        "mean_bandwidth": float(np.mean([r["bandwidth"] for r in rows])),
        "participation_per_ue_min": float(participation.min()) if participation.size else 0.0,
        "participation_per_ue_mean": float(participation.mean()) if participation.size else 0.0,
        "mean_phi": float(np.mean([r["phi"] for r in rows])),
        "mean_rho_energy": float(np.mean([r["rho_energy"] for r in rows])),
    }
    mods = _module_keys(rows, "module_accuracy_")
    if mods and mods[0] in last:  # each module alone at the last evaluation
        out["final_module_accuracy"] = [last[k] for k in mods]
        out["final_module_top_share"] = [last[k.replace("accuracy", "top_share")] for k in mods]
    subs = _module_keys(rows, "subscriptions_")
    if subs and all(k in r for r in rows for k in subs):  # per round, over the whole run
        out["module_mean_subscriptions"] = [float(np.mean([r[k] for r in rows])) for k in subs]
        out["module_mean_received"] = [
            float(np.mean([r[k.replace("subscriptions", "received")] for r in rows])) for k in subs]
    if target > 0:
        out["target_accuracy"] = target
        out["rounds_to_target"] = rounds_to_target(rows, target)
    out.update(extra or {})
    return out


def plot_run(rows: list[dict[str, Any]], folder: str | Path, title: str = "",
             bound: dict[str, Any] | None = None) -> list[Path]:
    """accuracy.png, energy.png, participation.png (and bound.png) against the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    t = np.array([r["round"] for r in rows]) + 1
    col = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]
           if isinstance(rows[0][k], (int, float, np.floating, np.integer))}
    paths = []

    def save(fig, name):
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = ~np.isnan(col["accuracy"])
    ax.plot(t[ok], col["accuracy"][ok], label="per-UE ensemble (3), ω-weighted")
    ax.plot(t[ok], col["global_accuracy"][ok], label="global test set, all modules", ls="--")
    for k in _module_keys(rows, "module_accuracy_"):  # a collapsed module shows as a flat line
        v = np.array([r.get(k, np.nan) for r in rows], dtype=float)
        ax.plot(t[~np.isnan(v)], v[~np.isnan(v)], lw=0.8, alpha=0.6,
                label=f"module {k.rsplit('_', 1)[1]} alone, global test set")
    ax.set(xlabel="round", ylabel="test accuracy", title=f"Accuracy {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, np.cumsum(col["energy_computation"]), label="computation")
    ax.plot(t, np.cumsum(col["energy_communication"]), label="communication")
    ax.plot(t, np.cumsum(col["energy"]), label="total", color="k")
    ax.set(xlabel="round", ylabel="cumulative energy [J]", title=f"Energy (4) {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "energy.png")

    subs = _module_keys(rows, "subscriptions_")
    fig, axes = plt.subplots(2 if subs else 1, 1, figsize=(6, 6.5 if subs else 4), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(t, col["participation"], label="UEs with ≥ 1 module")
    ax.plot(t, col["success_rate"], label="upload success rate", alpha=0.8)
    ax.plot(t, col["bandwidth"], label="bandwidth used Σb", alpha=0.8)
    ax.set(xlabel="" if subs else "round", ylabel="fraction", ylim=(0, 1.05),
           title=f"Participation {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend()
    if subs:  # a module with one or two subscribers is trained on their data alone
        ax = axes[1, 0]
        for k in subs:
            m = k.rsplit("_", 1)[1]
            sub = np.array([r.get(k, np.nan) for r in rows], dtype=float)
            rec = np.array([r.get(f"received_{m}", np.nan) for r in rows], dtype=float)
            line, = ax.plot(t, sub, label=f"module {m}: subscribers")
            ax.plot(t, rec, ls=":", color=line.get_color(), label=f"module {m}: received")
        ax.set(xlabel="round", ylabel="UEs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    save(fig, "participation.png")

    if bound is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        gap = np.asarray(bound["gap"])
        bnd = np.asarray(bound["bound"])
        tb = np.arange(gap.shape[0])
        for m in range(gap.shape[1]):
            line, = ax.semilogy(tb, np.maximum(gap[:, m], 1e-16), label=f"measured gap, module {m}")
            ax.semilogy(tb, bnd[:, m], ls="--", color=line.get_color(), label=f"bound (6), module {m}")
        ax.set(xlabel="round", ylabel="F(θ_m^t) − F*", title="Theorem 1: bound vs measured gap")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        save(fig, "bound.png")
    return paths


class EnsembleEvaluation:
    """A round observer (:class:`fedopt.fl.round.RoundObserver`): after every ``every``-th
    round and the last one, the backend scores every UE's ensemble (3) at θ^{t+1} and the
    row gets ``accuracy``, ``global_accuracy``, ``loss`` and ``global_loss``, and per module
    m ``module_accuracy_m`` and ``module_top_share_m`` (it alone on the global test set)."""

    def __init__(self, backend, every: int, rounds: int) -> None:
        self.backend, self.every, self.rounds = backend, int(every), int(rounds)

    def on_plan(self, engine, plan) -> None:
        pass

    def on_complete(self, engine, plan, params, row: dict[str, Any]) -> None:
        t = plan.t
        if (t + 1) % self.every and t + 1 != self.rounds:
            return
        ev = self.backend.evaluate(params, engine.book.ensembles)
        row.update(accuracy=ev.accuracy, global_accuracy=ev.global_accuracy, loss=ev.loss,
                   global_loss=ev.global_loss)
        for m, (a, share) in enumerate(zip(ev.module_accuracy, ev.module_top_share)):
            row[f"module_accuracy_{m}"], row[f"module_top_share_{m}"] = float(a), float(share)
