"""``fedopt validate online``: the online guarantees of (8)-(12), measured.

Runs T rounds of stochastic costs u^t from the system model (mobility, block fading, drifting
Δ and Γ: :func:`fedopt.online.scenarios.cost_sequence`) for each policy and reports, for each
horizon T, the cumulative regret against the ``hindsight`` LP of the first T rounds, the
long-term participation violation max_k(β − mean_t 1ᵀx_k^t)₊ and, for the energy variant,
the energy violation max_k(mean_t E_k^t − Ē)₊. Writes a CSV and a PNG.

Target module for ``fedopt validate``: ``add_parser(p)`` fills a parser, ``run(args)`` runs.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ._types import name_list, nonneg_float, output_dir, positive_int, positive_int_list, writing

DEFAULT_POLICIES = "primal_dual,lyapunov,greedy,one_shot"



def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML system config (default: MODEL.md's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key")
    p.add_argument("--T", type=positive_int_list, default=[50, 200, 800],
                   help="horizons (default 50,200,800)")
    p.add_argument("--K", type=positive_int, default=20, help="UEs (default 20)")
    p.add_argument("--policies", type=name_list, default=DEFAULT_POLICIES,
                   help=f"default {DEFAULT_POLICIES}")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="independent cost sequences (default 3)")
    p.add_argument("--energy-budget", type=nonneg_float, default=None,
                   help="E_bar [J/round] of the energy variant; default: 1.2 x beta x the mean "
                        "cheapest-module energy of the hungriest UE; 0 skips the variant")
    p.add_argument("--solver", default="highs", choices=["highs", "clarabel"],
                   help="LP solver of the hindsight benchmark")
    p.add_argument("--out", type=output_dir, default="results/validate_online",
                   help="folder for the CSV and PNG")
    p.add_argument("--no-plot", action="store_true")


def _policy_run(policy, seq, T, energy_aware):
    from ..online import record_outcome

    u, E, F = seq["costs"], seq["energy"], seq["feasible"]
    K, M = u.shape[1:]
    state = policy.init(K, M)
    xs = np.zeros((T, K, M), np.int8)
    for t in range(T):
        x, state = policy.update(u[t], F[t], t, state, energy=E[t] if energy_aware else None)
        state = record_outcome(state, x, E[t])
        xs[t] = x
    return xs


def _check_budget(budget: float, seqs: list, horizons: list[int], beta: float) -> None:
    """--energy-budget below what the participation floor needs makes the hindsight LP
    infeasible: refuse it before any run. A UE's least energy for beta T module-rounds over
    T rounds is the sum of its beta T cheapest feasible (round, module) energies (fractional)."""
    for seed, seq in enumerate(seqs):
        E = np.where(seq["feasible"], seq["energy"], np.inf)
        for T in horizons:
            e = np.sort(E[:T].transpose(1, 0, 2).reshape(E.shape[1], -1), axis=1)  # (K, T M)
            need = beta * T
            whole = int(need)
            with np.errstate(invalid="ignore"):
                least = e[:, :whole].sum(axis=1) + (need - whole) * (
                    e[:, whole] if whole < e.shape[1] else 0.0)
            worst = float(np.max(least)) / T
            if worst > budget * (1 + 1e-9):
                raise ConfigError(
                    f"--energy-budget: {budget:g} J/round is below the {worst:.3g} J/round the "
                    f"participation floor beta = {beta:g} needs (T = {T}, seed {seed}); "
                    "the hindsight LP would be infeasible")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..config import SystemConfig, load_yaml, parse_overrides
    from ..online import POLICIES, make_policy, solve_hindsight
    from ..online.scenarios import cost_sequence

    data = load_yaml(args.config) if args.config is not None else {}
    cfg = SystemConfig.from_dict({**data, "K": args.K, **parse_overrides(args.set)})
    names = args.policies
    for n in names:
        if n not in POLICIES or n == "hindsight":
            raise ConfigError(f"--policies: unknown policy {n!r}; known: "
                              f"{', '.join(k for k in POLICIES if k != 'hindsight')}")
    Tmax = max(args.T)
    out = Path(args.out)
    rows = []
    energy_names = [n for n in names if n in ("primal_dual", "lyapunov")]
    total = args.seeds * len(args.T) * (1 + len(names) + (1 + len(energy_names)))
    seqs = [cost_sequence(cfg, Tmax, seed) for seed in range(args.seeds)]
    if args.energy_budget:
        _check_budget(args.energy_budget, seqs, args.T, cfg.beta)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=total, desc="validate online", unit="run") as bar:
        for seed in range(args.seeds):
            seq = seqs[seed]
            u, E, F = seq["costs"], seq["energy"], seq["feasible"]
            Ebar = args.energy_budget
            if Ebar is None:
                cheapest = np.where(F, E, np.inf).min(axis=2).mean(axis=0)
                Ebar = float(1.2 * cfg.beta * cheapest.max())
            runs = {n: _policy_run(make_policy(n, cfg.beta, cfg.M_max, seed=seed), seq, Tmax, False)
                    for n in names}
            eruns = {}
            if Ebar > 0:
                eruns = {n: _policy_run(make_policy(n, cfg.beta, cfg.M_max, seed=seed,
                                                    energy_budget=Ebar), seq, Tmax, True)
                         for n in energy_names}
            for T in args.T:
                variants = [("plain", runs, 0.0)] + ([("energy", eruns, Ebar)] if eruns else [])
                for variant, rr, budget in variants:
                    hs = solve_hindsight(u[:T], F[:T], cfg.beta, cfg.M_max, energy=E[:T],
                                         energy_budget=budget, solver=args.solver)
                    bar.update()
                    if not math.isfinite(hs.objective):
                        raise ConfigError(f"hindsight LP is {hs.status} at T = {T} ({variant})")
                    for n, xs in rr.items():
                        x = xs[:T]
                        cost = float((u[:T] * x).sum())
                        part = x.sum(axis=2).mean(axis=0)
                        spent = (E[:T] * x).sum(axis=2).mean(axis=0)
                        rows.append(dict(
                            variant=variant, policy=n, seed=seed, T=T, cost=cost,
                            hindsight=hs.total, regret=cost - hs.total,
                            regret_per_T=(cost - hs.total) / T,
                            participation_violation=float(np.max(np.maximum(cfg.beta - part, 0))),
                            mean_participation=float(part.mean()),
                            energy_budget=budget,
                            energy_violation=float(np.max(np.maximum(spent - budget, 0)))
                            if budget > 0 else float("nan"),
                        ))
                        bar.update()
    keys = list(rows[0])
    with writing(out / "validate_online.csv"), open(out / "validate_online.csv", "w",
                                                    newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    table = _summary(rows, args.T)
    print(f"K = {cfg.K}, M = {cfg.M}, M_max = {cfg.M_max}, beta = {cfg.beta:g}, "
          f"{args.seeds} cost sequence(s); means over seeds (regret vs the hindsight LP)")
    print(table)
    with writing(out / "validate_online.txt"):
        (out / "validate_online.txt").write_text(table + "\n")
    if not args.no_plot:
        with writing(out / "validate_online.png"):
            _plot(rows, args.T, out / "validate_online.png")
    print(f"wrote {out / 'validate_online.csv'}" + ("" if args.no_plot else f" and {out / 'validate_online.png'}"))
    return 0


def _mean(rows, key):
    v = [r[key] for r in rows]
    return float(np.mean(v)) if v else float("nan")


def _summary(rows, Ts) -> str:
    head = f"{'variant':8} {'policy':12} {'T':>5} {'regret/T':>11} {'part. viol.':>11} {'mean part.':>10} {'energy viol.':>12}"
    lines = [head, "-" * len(head)]
    groups = sorted({(r["variant"], r["policy"]) for r in rows}, key=lambda g: (g[0] != "plain", g))
    for variant, pol in groups:
        for T in Ts:
            sel = [r for r in rows if r["variant"] == variant and r["policy"] == pol and r["T"] == T]
            ev = _mean(sel, "energy_violation")
            lines.append(f"{variant:8} {pol:12} {T:5d} {_mean(sel, 'regret_per_T'):11.3e} "
                         f"{_mean(sel, 'participation_violation'):11.4f} "
                         f"{_mean(sel, 'mean_participation'):10.3f} "
                         f"{'-' if math.isnan(ev) else f'{ev:.4g}':>12}")
    return "\n".join(lines)


def _plot(rows, Ts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["variant"], r["policy"]) for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for variant, pol in groups:
        sel = lambda T, v=variant, p=pol: [r for r in rows if r["variant"] == v and r["policy"] == p and r["T"] == T]  # noqa: E731
        style = "-o" if variant == "plain" else "--s"
        label = f"{pol} ({variant})"
        axes[0].plot(Ts, [_mean(sel(T), "regret_per_T") for T in Ts], style, label=label)
        axes[1].plot(Ts, [_mean(sel(T), "participation_violation") for T in Ts], style, label=label)
        if variant == "energy":
            axes[2].plot(Ts, [_mean(sel(T), "energy_violation") for T in Ts], style, label=label)
    axes[0].set_ylabel("regret / T vs hindsight LP")
    axes[1].set_ylabel(r"max$_k$ ($\beta$ − mean$_t$ 1ᵀx)$_+$")
    axes[1].axhline(0.02, color="grey", lw=0.8, ls=":")
    axes[2].set_ylabel(r"max$_k$ (mean$_t$ E$_k$ − Ē)$_+$ [J]")
    axes[0].set_yscale("symlog", linthresh=1e-3)  # one_shot's regret dwarfs the others
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(Ts)
        ax.set_xticklabels([str(T) for T in Ts])
        ax.minorticks_off()
        ax.set_xlabel("horizon T (rounds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Online switching (8)-(12): regret and long-term violations", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
