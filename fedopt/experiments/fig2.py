"""Fig. 2: rounds to converge against the number of UEs K, for Algorithm 2 and the baselines
FedLoRA [4], full-parameter fine-tuning, HetLoRA [6] and FlexLoRA [7] (SST-2 in the paper).

The paper: the rounds to converge first fall, then rise with K (more UEs bring more data but
share the band), and Algorithm 2 converges faster than every baseline.

Convergence (ours): the first round at which the trailing ``window``-round mean of the test
accuracy (``metric``: ``accuracy``, the ω-weighted per-UE ensembles (3), or
``global_accuracy``, the uniform ensemble of all modules on the whole test split) reaches
``target``; a run that never does is censored at its length T and shown as
T (marked in the table). Full-parameter fine-tuning stretches each round over n deadline
slots (:func:`fedopt.baselines.full_parameter`), so panel (b) counts deadline slots
(rounds × n), the wall-clock cost of the same progress.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..runfolder import atomic_write_text
from .common import markdown_table, mean_std, out_dir, seed_list, write_config, write_rows
from .training import group_misfit, rounds_to_converge, run_config, run_groups, run_one

__all__ = ["run_fig2"]

METRICS = {"accuracy": "per-UE ensemble accuracy (3)", "global_accuracy": "global test accuracy"}

LABELS = {"proposed": "Algorithm 2", "fedlora": "FedLoRA [4]", "full": "full-parameter",
          "hetlora": "HetLoRA [6]", "flexlora": "FlexLoRA [7]"}


def _group_runs(cfg: dict, backend: str, K: int, seed: int, schemes: list[str], extra: dict, *,
                folder: Path, resume: bool) -> dict:
    """One (K, seed)'s schemes, in one process (they share its data split and prefix cache);
    each run checkpoints into ``folder/<scheme>`` (:func:`~.training.run_groups`)."""
    base = run_config(cfg, backend, seed, K=K, **extra)
    return {name: run_one(name, base, folder / name, resume) for name in schemes}


def run_fig2(cfg: dict, out, *, backend: str = "synthetic", seeds: int | None = None,
             progress: bool = True, jobs: int = 1, resume: bool = False) -> dict:
    d = out_dir(out, "fig2")
    seeds_ = seed_list(cfg, seeds)
    Ks = [int(k) for k in cfg["K"]]
    schemes = list(cfg["schemes"])
    if backend != "synthetic" and "full" in schemes:
        schemes.remove("full")  # the LoRA backend trains LoRA modules only (see baselines)
    extra = {"task": cfg.get("lora_task", "sst2")} if backend == "lora" else {}
    if backend == "lora" and not progress:
        extra["progress"] = False  # the backend's prefix-cache bars too
    target, window = float(cfg["target"]), int(cfg["window"])
    metric = str(cfg.get("metric", "accuracy"))
    if metric not in METRICS:
        raise ConfigError(f"metric: must be one of {', '.join(METRICS)}, got {metric!r}")
    rows, curves = [], {}
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds_) * len(Ks), desc="fig2", unit="group")
    runs_cfg = {"run": cfg["run"]}  # what the runs depend on (target etc. do not)
    tasks = [(f"K{K}_seed{seed}", runs_cfg, backend, K, seed, schemes, extra)
             for K in Ks for seed in seeds_]
    done = run_groups(_group_runs, tasks, d / "runs", jobs=jobs, resume=resume, bar=bar,
                      check=lambda result: group_misfit(result, schemes))
    if bar is not None:
        bar.close()
    for K in Ks:
        for seed in seeds_:
            for name in schemes:
                r = done[f"K{K}_seed{seed}"][name]
                T = len(r["accuracy"])
                n = rounds_to_converge(r[metric], target, window)
                slots = r["slots_per_round"]
                rows.append({
                    "K": K, "seed": seed, "scheme": name, "rounds_to_converge": n,
                    "censored": not math.isfinite(n), "rounds_run": T,
                    "slots_per_round": slots, "slots_to_converge": n * slots,
                    "final_accuracy": float(np.nanmean(r[metric][-window:])),
                    "final_ue_accuracy": float(np.nanmean(r["accuracy"][-window:])),
                    "final_global_accuracy": float(np.nanmean(r["global_accuracy"][-window:])),
                    "energy_total_J": float(np.sum(r["energy"])),
                    "mean_received": float(np.mean(r["received"])),
                })
                curves[(K, seed, name)] = r[metric]
    write_rows(rows, d / "fig2.csv")
    write_rows([{"K": K, "seed": s, "scheme": n, "round": t + 1, "accuracy": a}
                for (K, s, n), acc in curves.items() for t, a in enumerate(acc)],
               d / "fig2_curves.csv")
    summary = _summarise(rows, Ks, schemes, seeds_, target, window)
    summary["metric"] = metric
    summary["seconds"] = time.perf_counter() - t0
    _plot(rows, curves, Ks, schemes, seeds_, target, d, backend, METRICS[metric])
    (d / "fig2.md").write_text(_markdown(summary, Ks, schemes))
    atomic_write_text(d / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_config(cfg, d, {"backend": backend, "seeds": seeds_, **extra})
    return summary


def _censored_at(rows):
    return [r["rounds_run"] if r["censored"] else r["rounds_to_converge"] for r in rows]


def _summarise(rows, Ks, schemes, seeds, target, window):
    table = {}
    for name in schemes:
        table[name] = {}
        for K in Ks:
            sel = [r for r in rows if r["scheme"] == name and r["K"] == K]
            table[name][str(K)] = {
                "rounds": mean_std(_censored_at(sel)),
                "censored": int(sum(r["censored"] for r in sel)),
                "slots": mean_std([c * r["slots_per_round"] for c, r in zip(_censored_at(sel), sel)]),
                "final_accuracy": mean_std([r["final_accuracy"] for r in sel]),
            }
    speedup = {}
    for name in schemes:
        if name == "proposed":
            continue
        vals = []
        for K in Ks:
            for s in seeds:
                a = [r for r in rows if r["scheme"] == "proposed" and r["K"] == K and r["seed"] == s]
                b = [r for r in rows if r["scheme"] == name and r["K"] == K and r["seed"] == s]
                if a and b:
                    ra, rb = _censored_at(a)[0], _censored_at(b)[0]
                    vals.append(100 * (1 - ra / rb))
        speedup[name] = mean_std(vals)  # % fewer rounds for Algorithm 2 (censored: a bound)
    return {"seeds": seeds, "target": target, "window": window, "table": table,
            "proposed_fewer_rounds_pct": speedup}


def _plot(rows, curves, Ks, schemes, seeds, target, d, backend, metric_label="test accuracy"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    markers = dict(zip(schemes, "osD^v<>"))
    for key, ax, title in (("rounds", axes[0], "(a) rounds to converge"),
                           ("slots", axes[1], "(b) deadline slots to converge")):
        for name in schemes:
            m, s = [], []
            for K in Ks:
                sel = [r for r in rows if r["scheme"] == name and r["K"] == K]
                v = _censored_at(sel)
                if key == "slots":
                    v = [c * r["slots_per_round"] for c, r in zip(v, sel)]
                mm, ss = mean_std(v)
                m.append(mm)
                s.append(ss)
            ax.errorbar(Ks, m, yerr=s, marker=markers[name], capsize=3, label=LABELS.get(name, name))
        ax.set_xlabel("number of UEs K")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"rounds until {metric_label} ≥ {target:g} (censored at T)")
    axes[1].set_ylabel("deadline slots (T_max each)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    K = Ks[-1]
    for name in schemes:
        Y = np.array([curves[(K, s, name)] for s in seeds], float)
        mean = np.nanmean(Y, axis=0)
        axes[2].plot(np.arange(1, Y.shape[1] + 1), mean, label=LABELS.get(name, name))
    axes[2].axhline(target, color="k", ls=":", lw=1)
    axes[2].set_xlabel("round")
    axes[2].set_ylabel(metric_label)
    axes[2].set_title(f"(c) accuracy at K = {K} (mean of {len(seeds)} seeds)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Fig. 2 — convergence vs K ({backend}; error bars: ±1 std over seeds)")
    fig.tight_layout()
    fig.savefig(d / "fig2.png", dpi=120)
    plt.close(fig)


def _markdown(s, Ks, schemes) -> str:
    head = ["scheme"] + [f"K={K}" for K in Ks]
    rows = []
    for name in schemes:
        cells = [LABELS.get(name, name)]
        for K in Ks:
            v = s["table"][name][str(K)]
            c = f"{v['rounds'][0]:.1f} ± {v['rounds'][1]:.1f}"
            if v["censored"]:
                c += f" ({v['censored']} censored)"
            cells.append(c)
        rows.append(cells)
    acc = [[LABELS.get(n, n)] + [f"{100 * s['table'][n][str(K)]['final_accuracy'][0]:.1f}"
                                 for K in Ks] for n in schemes]
    sp = [[LABELS.get(n, n), *v] for n, v in s["proposed_fewer_rounds_pct"].items()]
    return "\n".join([
        "# Fig. 2 — rounds to converge vs K\n",
        f"Seeds {s['seeds']}; converged = trailing {s['window']}-round mean of the "
        f"{METRICS[s.get('metric', 'accuracy')]} ≥ "
        f"{s['target']:g}; censored runs count as their length T.\n",
        markdown_table(head, rows), "\nFinal accuracy (%):\n", markdown_table(head, acc),
        "\nAlgorithm 2's fewer rounds than each baseline (%, paired by seed and K):\n",
        markdown_table(["baseline", "mean %", "± std"], sp)])
