"""The claims rows 2a, 2b and 4a-4c on the global metric from the figure parts that
``benchmarks/gpu_paper_check.sh`` runs side by side (each part one ``fedopt experiment`` of one
or two schemes), finished or cut by its time limit.

A finished part is read from its CSV; a cut one from the checkpoints its runs in flight left
in ``runs/<group>/<scheme>/`` (the rounds they reached, every ``checkpoint_every``). Schemes are
compared over the rounds all of them reached, and the table says how many that is. Several
seeds are averaged round by round. A checkpoint that is damaged is skipped with a line on
stderr.

    python benchmarks/gpu_claims.py /tmp/r [--target 0.8 --window 5 --final-window 20]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from fedopt.errors import StateFileError
from fedopt.experiments.training import rounds_to_converge
from fedopt.fl.checkpoint import CHECKPOINT, load_checkpoint

Curve = dict[str, list[float]]


def _part_curves(part: Path, fig: str) -> dict[tuple[str, int, int], Curve]:
    """{(scheme, K, seed): curve} of one part: its CSV when it finished, else the checkpoints
    its runs in flight left (a damaged one is skipped with a line on stderr)."""
    out: dict[tuple[str, int, int], Curve] = {}
    d = part / fig
    table = d / ("fig4.csv" if fig == "fig4" else "fig2_curves.csv")
    if table.is_file():
        for r in csv.DictReader(table.open()):
            K = int(r["K"]) if fig == "fig2" else 0  # Fig. 4 has one K
            c = out.setdefault((r["scheme"], K, int(r["seed"])), {"global_accuracy": [], "energy": []})
            if fig == "fig4":
                c["global_accuracy"].append(float(r["global_accuracy"]))
                c["energy"].append(float(r["energy"]))
            else:  # Fig. 2's curves hold the figure's metric (global_accuracy in fig2_paper)
                c["global_accuracy"].append(float(r["accuracy"]))
        return out
    for ckpt in sorted(d.glob(f"runs/*/*/{CHECKPOINT}")):  # a part cut by its time limit
        try:
            state = load_checkpoint(ckpt.parent)
            cfg, rows = state["config"], state["rows"]
            key = (ckpt.parent.name, int(cfg["K"]) if fig == "fig2" else 0, int(cfg["seed"]))
            out[key] = {"global_accuracy": [float(r["global_accuracy"]) for r in rows],
                        "energy": [float(r["energy"]) for r in rows]}
        except (StateFileError, KeyError, TypeError, ValueError) as exc:
            detail = exc if isinstance(exc, StateFileError) else f"not a run's checkpoint ({exc!r})"
            print(f"gpu_claims: skipped {ckpt}: {detail}", file=sys.stderr)
    return out


def curves(root: Path, fig: str) -> dict[tuple[str, int], Curve]:
    """{(scheme, K): curve} over every part of ``fig`` (K = 0 for Fig. 4, which has one),
    each the mean over seeds, round by round, over the rounds every seed reached."""
    per_seed: dict[tuple[str, int, int], Curve] = {}
    for part in sorted(root.glob(f"{fig}?")):
        per_seed.update(_part_curves(part, fig))
    out: dict[tuple[str, int], Curve] = {}
    for scheme, K in sorted({(s, K) for s, K, _ in per_seed}):
        runs = [c for (s, k, _), c in per_seed.items() if (s, k) == (scheme, K)]
        T = min(len(c["global_accuracy"]) for c in runs)
        out[(scheme, K)] = {name: np.mean([c[name][:T] for c in runs], axis=0).tolist()
                            for name in ("global_accuracy", "energy") if all(c[name] for c in runs)}
    return out


def fig4_rows(c: dict, final_window: int) -> list[str]:
    have = {s for s, _ in c}
    if "proposed" not in have:
        return ["| 4a-4c | — | proposed has no rounds yet |"]
    T = min(len(v["global_accuracy"]) for v in c.values())

    def final(s: str) -> float:
        return float(np.nanmean(c[(s, 0)]["global_accuracy"][max(0, T - final_window):T]))

    p = final("proposed")
    rows = []
    for tag, other, what in (("4a", "one_shot", "proposed − one-shot"),
                             ("4b", "greedy", "proposed − greedy")):
        if other in have:
            rows.append(f"| {tag} | {what}: {100 * (p - final(other)):+.1f} points "
                        f"({p:.3f} vs {final(other):.3f}) | rounds 1-{T}, last {final_window} |")
    if "energy" in have:
        e = [float(np.sum(c[(s, 0)]["energy"][:T])) for s in ("energy", "proposed")]
        rows.append(f"| 4c | energy constraint: {100 * (final('energy') - p):+.1f} points "
                    f"({final('energy'):.3f} vs {p:.3f}) for {100 * (1 - e[0] / e[1]):.1f} % less "
                    f"energy | rounds 1-{T} |")
    return rows


def fig2_rows(c: dict, target: float, window: int) -> list[str]:
    rows = []
    Ks = sorted({K for _, K in c})
    conv = {}
    for K in Ks:
        T = min(len(v["global_accuracy"]) for (s, k), v in c.items() if k == K)
        for (s, k), v in c.items():
            if k == K:
                conv[(s, K)] = (rounds_to_converge(v["global_accuracy"][:T], target, window), T)
    prop = [(K, *conv[("proposed", K)]) for K in Ks if ("proposed", K) in conv]
    rows.append("| 2a | Algorithm 2's rounds to " + f"{target} by K: " + ", ".join(
        f"K = {K}: {n:g}" + (f" (not reached in {T})" if math.isinf(n) else "")
        for K, n, T in prop) + " | needs several K |")
    for K in Ks:
        if ("proposed", K) not in conv:
            continue
        na, T = conv[("proposed", K)]
        for s in ("fedlora", "hetlora", "flexlora"):
            if (s, K) in conv:
                nb = conv[(s, K)][0]
                pct = (100 * (1 - min(na, T) / min(nb, T))) if not (math.isinf(na)
                                                                      and math.isinf(nb)) else math.nan
                rows.append(f"| 2b | K = {K}: Algorithm 2 {na:g} vs {s} {nb:g} rounds "
                            f"({pct:.1f} % fewer; inf: not reached) | rounds 1-{T} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--final-window", type=int, default=20)
    a = ap.parse_args()
    if not a.root.is_dir():
        ap.error(f"{a.root} is not a folder of figure parts (fig4a, fig2a, ...)")  # exit 2
    print("| claim | global metric (uniform ensemble on the test split) | over |\n|---|---|---|")
    for line in (fig2_rows(curves(a.root, "fig2"), a.target, a.window)
                 + fig4_rows(curves(a.root, "fig4"), a.final_window)):
        print(line)


if __name__ == "__main__":
    main()
