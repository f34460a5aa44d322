"""The claims rows 2a, 2b and 4a-4c on the global metric from the figure parts that
``benchmarks/gpu_paper_check.sh`` runs side by side (each part one ``fedopt experiment`` of one
or two schemes), finished or cut by its time limit.

A finished part is read from its CSV; a cut one from the checkpoints its runs in flight left
in ``runs/<group>/<scheme>/`` (the rounds they reached, every ``checkpoint_every``). Schemes are
compared over the rounds all of them reached, and the table says how many that is.

    python benchmarks/gpu_claims.py /tmp/r [--target 0.8 --window 5 --final-window 20]
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from fedopt import safestate
from fedopt.experiments.training import rounds_to_converge
from fedopt.fl.checkpoint import CHECKPOINT, KIND


def curves(root: Path, fig: str) -> dict[tuple[str, int], dict[str, list[float]]]:
    """{(scheme, K): {"global_accuracy": [...], "energy": [...]}} over every part of ``fig``
    (K = 0 for Fig. 4, which has one)."""
    out: dict[tuple[str, int], dict[str, list[float]]] = {}
    for part in sorted(root.glob(f"{fig}?")):
        d = part / fig
        table = d / ("fig4.csv" if fig == "fig4" else "fig2_curves.csv")
        if fig == "fig4" and table.is_file():
            for r in csv.DictReader(table.open()):
                c = out.setdefault((r["scheme"], 0), {"global_accuracy": [], "energy": []})
                c["global_accuracy"].append(float(r["global_accuracy"]))
                c["energy"].append(float(r["energy"]))
            continue
        if fig == "fig2" and table.is_file():  # its curves hold the figure's metric
            for r in csv.DictReader(table.open()):
                c = out.setdefault((r["scheme"], int(r["K"])), {"global_accuracy": [], "energy": []})
                c["global_accuracy"].append(float(r["accuracy"]))
            continue
        for ckpt in sorted(d.glob(f"runs/*/*/{CHECKPOINT}")):  # a part cut by its time limit
            state = safestate.loads(ckpt.read_bytes(), KIND)
            K = int(state["config"]["K"]) if fig == "fig2" else 0  # Fig. 4 has one K
            rows = state["rows"]
            out[(ckpt.parent.name, K)] = {"global_accuracy": [r["global_accuracy"] for r in rows],
                                          "energy": [r["energy"] for r in rows]}
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
