"""Fig. 4: test accuracy against the round for the switching schemes (QNLI in the paper).

Schemes (:mod:`fedopt.baselines`): the proposed primal-dual switching (Algorithm 2), greedy
(the round slice of (8a) alone), one-shot (switch once, then keep the assignment) and the
proposed switching with the long-term energy budget Ē_k of (7) ("w/ energy constraints").

The paper: the proposed method beats one-shot and greedy, and the energy constraint costs a
little accuracy. Ē_k (ours) is ``budget_fraction`` × the proposed run's mean energy per UE
and round on the same seed, so the constraint binds by construction.

Accuracy is the ω-weighted mean of the UEs' ensemble accuracies (3) on their own test
splits; "final" is the mean over the last ``final_window`` rounds.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ..runfolder import atomic_write_text
from .common import band, markdown_table, mean_std, out_dir, seed_list, write_config, write_rows
from .training import group_misfit, run_config, run_groups, run_one

__all__ = ["run_fig4"]

LABELS = {"proposed": "proposed (Alg. 2)", "greedy": "greedy", "one_shot": "one-shot",
          "energy": "w/ energy constraints"}


def _seed_runs(cfg: dict, backend: str, seed: int, schemes: list[str], extra: dict, *,
               folder: Path, resume: bool) -> dict:
    """One seed's schemes, in one process (they share its data split and prefix cache); each
    run checkpoints into ``folder/<scheme>`` (:func:`~.training.run_groups`)."""
    base = run_config(cfg, backend, seed, **extra)
    runs: dict[str, dict] = {}
    budget = None
    for name in schemes:
        run = base
        if name == "energy":
            if "proposed" not in runs:
                runs["proposed"] = run_one("proposed", base, folder / "proposed", resume)
            budget = float(cfg["budget_fraction"]) * float(np.mean(runs["proposed"]["energy"])) / base.system.K
            run = base.replace(energy_budget=budget)
        if name not in runs:
            runs[name] = run_one(name, run, folder / name, resume)
    return {"runs": runs, "budget": budget}


def _seed_misfit(result, schemes: list[str]) -> str | None:
    """Why a stored seed group is not what :func:`_seed_runs` returns, or None."""
    if not isinstance(result, dict) or set(result) != {"runs", "budget"}:
        return "result is not a mapping of 'runs' and 'budget'"
    budget = result["budget"]
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))):
        return "result.budget is not a number or null"
    return group_misfit(result["runs"], schemes, "result.runs")


def run_fig4(cfg: dict, out, *, backend: str = "synthetic", seeds: int | None = None,
             progress: bool = True, jobs: int = 1, resume: bool = False) -> dict:
    d = out_dir(out, "fig4")
    seeds_ = seed_list(cfg, seeds)
    schemes = list(cfg["schemes"])
    extra = {}
    if backend == "lora":
        extra = {"task": cfg.get("lora_task", "qnli")}
        if not progress:
            extra["progress"] = False  # the backend's prefix-cache bars too
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds_), desc="fig4", unit="seed")
    runs_cfg = {"run": cfg["run"], "budget_fraction": cfg["budget_fraction"]}
    tasks = [(f"seed{seed}", runs_cfg, backend, seed, schemes, extra) for seed in seeds_]
    done = run_groups(_seed_runs, tasks, d / "runs", jobs=jobs, resume=resume, bar=bar,
                      check=lambda result: _seed_misfit(result, schemes))
    if bar is not None:
        bar.close()
    runs: dict[tuple[str, int], dict] = {}
    budgets = {}
    for seed in seeds_:
        group = done[f"seed{seed}"]
        for name, r in group["runs"].items():
            runs[(name, seed)] = r
        if group["budget"] is not None:
            budgets[seed] = group["budget"]
    T = len(next(iter(runs.values()))["accuracy"])
    rows = []
    for (name, seed), r in runs.items():
        if name not in schemes:
            continue
        for t in range(T):
            rows.append({"scheme": name, "seed": seed, "round": t + 1,
                         "accuracy": r["accuracy"][t], "global_accuracy": r["global_accuracy"][t],
                         "energy": r["energy"][t], "subscriptions": r["subscriptions"][t],
                         "received": r["received"][t]})
    write_rows(rows, d / "fig4.csv")
    summary = _summarise(runs, schemes, seeds_, int(cfg["final_window"]))
    summary["energy_budget_per_ue_round_J"] = budgets
    summary["seconds"] = time.perf_counter() - t0
    _plot(runs, schemes, seeds_, T, d, backend)
    (d / "fig4.md").write_text(_markdown(summary, schemes))
    atomic_write_text(d / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_config(cfg, d, {"backend": backend, "seeds": seeds_, **extra})
    return summary


def _final(acc, window):
    a = np.asarray(acc, float)[-window:]
    return float(np.nanmean(a))


def _summarise(runs, schemes, seeds, window):
    per = {}
    for name in schemes:
        fin = [_final(runs[(name, s)]["accuracy"], window) for s in seeds]
        energy = [float(np.sum(runs[(name, s)]["energy"])) for s in seeds]
        per[name] = {"final_accuracy": mean_std(fin), "energy_total_J": mean_std(energy),
                     "final_per_seed": fin}

    def diff(a, b):  # per-seed paired difference in accuracy points
        if a not in per or b not in per:
            return (math.nan, math.nan)
        return mean_std([100 * (x - y) for x, y in zip(per[a]["final_per_seed"],
                                                      per[b]["final_per_seed"])])

    def esave(a, b):
        if a not in per or b not in per:
            return (math.nan, math.nan)
        return mean_std([100 * (1 - float(np.sum(runs[(a, s)]["energy"])) /
                                float(np.sum(runs[(b, s)]["energy"]))) for s in seeds])

    return {"seeds": seeds, "final_window": window, "schemes": per,
            "gain_vs_one_shot_pts": diff("proposed", "one_shot"),
            "gain_vs_greedy_pts": diff("proposed", "greedy"),
            "energy_constraint_cost_pts": diff("proposed", "energy"),
            "energy_constraint_saving_pct": esave("energy", "proposed")}


def _plot(runs, schemes, seeds, T, d, backend):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, T + 1)
    for name in schemes:
        Y = np.array([runs[(name, s)]["accuracy"] for s in seeds], float)
        band(ax, x, Y, LABELS.get(name, name))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (ω-weighted UE ensembles (3))")
    ax.set_title(f"Fig. 4 — switching schemes ({backend}, {len(seeds)} seeds, mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "fig4.png", dpi=120)
    plt.close(fig)


def _markdown(s, schemes) -> str:
    rows = [[LABELS.get(n, n), 100 * s["schemes"][n]["final_accuracy"][0],
             100 * s["schemes"][n]["final_accuracy"][1], s["schemes"][n]["energy_total_J"][0]]
            for n in schemes]
    out = ["# Fig. 4 — accuracy of the switching schemes\n",
           f"Seeds {s['seeds']}; final accuracy = mean of the last {s['final_window']} rounds.\n",
           markdown_table(["scheme", "final accuracy %", "± std", "total energy [J]"], rows)]
    out.append("\n" + markdown_table(["comparison", "mean", "± std"], [
        ["proposed − one-shot [pts]", *s["gain_vs_one_shot_pts"]],
        ["proposed − greedy [pts]", *s["gain_vs_greedy_pts"]],
        ["proposed − w/ energy constraints [pts]", *s["energy_constraint_cost_pts"]],
        ["energy saved by the constraint [%]", *s["energy_constraint_saving_pct"]],
    ]))
    return "\n".join(out)
