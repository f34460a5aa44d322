"""Fig. 5: communication energy of Algorithm 2's (p, b) step, adaptive power (21) against
maximum power p = P_max, versus the channel quality (SNR in dB) and versus ρ.

The paper: adaptive power saves energy, the saving shrinks as the channel worsens, and a
larger ρ lowers the communication overhead.

Set-up (ours): round 0 of the configured run (K = 100 at the paper's scale) with every
pair's Γ measured by the backend; x schedules ⌈βK⌉ UEs (:func:`~.rounds.floor_schedule`);
for each point the allocator's block coordinate descent (Algorithm 2, step 2) runs twice on
the same x, with ``power_method`` = ``auto`` (the certified global solver of (21)) and
``max`` (with the BCD's grid start and basin escapes off, which would otherwise move p off P_max). The SNR is the cell-edge SNR of the whole band at P_max,
SNR = P_max g(R) / (B N₀), so it is swept through N₀. Reported: Σ E^com over the scheduled
pairs (4), the risk term Φ, the mean success probability q (15) and the round objective.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

from ..runfolder import atomic_write_text
from .common import band, markdown_table, mean_std, out_dir, seed_list, write_config, write_rows
from .rounds import floor_schedule, measured_round

__all__ = ["run_fig5", "edge_snr_db", "n0_for_snr"]

POWER = {"adaptive": None, "max": "max"}


def edge_snr_db(cfg) -> float:
    from ..channel import path_gain

    return 10 * math.log10(cfg.P_max * float(path_gain(cfg, cfg.radius)) / (cfg.B * cfg.N0))


def n0_for_snr(cfg, snr_db: float) -> float:
    from ..channel import path_gain

    return cfg.P_max * float(path_gain(cfg, cfg.radius)) / (cfg.B * 10 ** (snr_db / 10))


def _evaluate(alloc, sys_, x, power):
    alloc.power_method = POWER[power]
    # the BCD's grid start and basin escapes set p on a grid whatever power_method says;
    # max power must stay at P_max, so they are off for it
    saved = {k: getattr(alloc, k) for k in ("escapes", "grid_start") if hasattr(alloc, k)}
    if power == "max":
        for k in saved:
            setattr(alloc, k, type(saved[k])(0))
    try:
        p, b, obj, it, _ = alloc.bcd(sys_, x)
    finally:
        for k, v in saved.items():
            setattr(alloc, k, v)
    if power == "max" and not np.allclose(p[x.any(axis=1)], sys_.P_max):
        raise RuntimeError("max-power BCD moved p off P_max")
    bx = np.where(x, b, 1.0)
    e_com = float(np.sum(np.where(x, sys_.E_com(p, bx), 0.0)))
    q = sys_.q(p, bx)[x]
    phi = obj - sys_.rho * (e_com + float(np.sum(np.where(x, sys_.E_cmp, 0.0))))
    on = x.any(axis=1)
    return {"energy_communication": e_com, "objective": obj, "phi": phi,
            "mean_q": float(np.mean(q)), "mean_power_W": float(np.mean(p[on])),
            "bcd_iterations": it}


def run_fig5(cfg: dict, out, *, backend: str = "synthetic", seeds: int | None = None,
             progress: bool = True) -> dict:
    from ..channel import noise_coefficient
    from ..fl.config import RunConfig

    d = out_dir(out, "fig5")
    seeds_ = seed_list(cfg, seeds)
    snrs = [float(s) for s in cfg["snr_db"]]
    rhos = [float(r) for r in cfg["rho"]]
    snr_rhos = [float(r) for r in cfg["snr_rho"]]
    rows = []
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds_) * (len(snrs) + len(rhos)), desc="fig5", unit="point")
    default_snr = math.nan
    for seed in seeds_:
        run = RunConfig.from_dict({**cfg["run"], "backend": backend, "seed": seed,
                                   "checkpoint_every": 0})
        sim, state, sys_ = measured_round(run)
        default_snr = edge_snr_db(run.system)
        x = floor_schedule(sys_.b_min, run.system.beta, np.random.default_rng([seed, 5]))
        alloc = sim.allocator
        for snr in snrs:
            a = noise_coefficient(run.system.replace(N0=n0_for_snr(run.system, snr)), sim.pop.d)
            for rho in snr_rhos:
                s2 = dataclasses.replace(sys_, a=a, rho=rho)
                for power in POWER:
                    rows.append({"seed": seed, "sweep": "snr", "snr_db": snr, "rho": rho,
                                 "power": power, **_evaluate(alloc, s2, x, power)})
            if bar is not None:
                bar.update(1)
        for rho in rhos:
            s2 = dataclasses.replace(sys_, rho=rho)
            for power in POWER:
                rows.append({"seed": seed, "sweep": "rho", "snr_db": default_snr, "rho": rho,
                             "power": power, **_evaluate(alloc, s2, x, power)})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    write_rows(rows, d / "fig5.csv")
    summary = _summarise(rows, snrs, rhos, seeds_)
    summary["default_edge_snr_db"] = default_snr
    summary["seconds"] = time.perf_counter() - t0
    _plot(rows, snrs, rhos, seeds_, d)
    (d / "fig5.md").write_text(_markdown(summary))
    atomic_write_text(d / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_config(cfg, d, {"backend": backend, "seeds": seeds_,
                          "default_edge_snr_db": default_snr})
    return summary


def _saving(rows, key, value, sweep):
    """Per seed: 1 − E_adaptive / E_max at one sweep point; (mean, std) over seeds."""
    out = []
    for s in sorted({r["seed"] for r in rows}):
        pick = {r["power"]: r["energy_communication"] for r in rows
                if r["seed"] == s and r["sweep"] == sweep and r[key] == value}
        if pick.get("max", 0) > 0:
            out.append(1.0 - pick["adaptive"] / pick["max"])
    return mean_std(out)


def _summarise(rows, snrs, rhos, seeds):
    def stat_in(sub, key, value, power, field):
        return mean_std([r[field] for r in sub if r[key] == value and r["power"] == power])

    def stat(sweep, key, value, power, field):
        return mean_std([r[field] for r in rows if r["sweep"] == sweep and r[key] == value
                         and r["power"] == power])

    snr = {}
    for rho in sorted({r["rho"] for r in rows if r["sweep"] == "snr"}):
        sub = [r for r in rows if r["sweep"] == "snr" and r["rho"] == rho]
        snr[f"{rho:g}"] = {f"{v:g}": {
            "saving": _saving(sub, "snr_db", v, "snr"),
            "E_adaptive": stat_in(sub, "snr_db", v, "adaptive", "energy_communication"),
            "E_max": stat_in(sub, "snr_db", v, "max", "energy_communication"),
            "q_adaptive": stat_in(sub, "snr_db", v, "adaptive", "mean_q"),
            "q_max": stat_in(sub, "snr_db", v, "max", "mean_q")} for v in snrs}
    rho = {f"{v:g}": {"saving": _saving(rows, "rho", v, "rho"),
                      "E_adaptive": stat("rho", "rho", v, "adaptive", "energy_communication"),
                      "E_max": stat("rho", "rho", v, "max", "energy_communication"),
                      "q_adaptive": stat("rho", "rho", v, "adaptive", "mean_q")} for v in rhos}
    return {"seeds": seeds, "snr": snr, "rho": rho}


def _plot(rows, snrs, rhos, seeds, d):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    snr_rhos = sorted({r["rho"] for r in rows if r["sweep"] == "snr"})
    for i, rho in enumerate(snr_rhos):
        for power, style in (("adaptive", dict(marker="o")), ("max", dict(marker="s", ls="--"))):
            label = (f"adaptive (21), ρ={rho:g}" if power == "adaptive"
                     else f"P_max, ρ={rho:g}")
            Y = np.array([[next(r["energy_communication"] for r in rows if r["seed"] == s
                                and r["sweep"] == "snr" and r["snr_db"] == v
                                and r["power"] == power and r["rho"] == rho)
                           for v in snrs] for s in seeds])
            band(ax1, snrs, Y, label, color=colors[i % len(colors)], **style)
    for power, style in (("adaptive", dict(marker="o")), ("max", dict(marker="s", ls="--"))):
        label = "adaptive power (21)" if power == "adaptive" else "max power p = P_max"
        Y = np.array([[next(r["energy_communication"] for r in rows if r["seed"] == s
                            and r["sweep"] == "rho" and r["rho"] == v and r["power"] == power)
                       for v in rhos] for s in seeds])
        band(ax2, rhos, Y, label, **style)
    ax1.set_xlabel("cell-edge SNR at P_max, whole band [dB]")
    ax1.set_ylabel("communication energy per round [J]")
    ax1.set_yscale("log")
    ax1.set_title("(a) vs channel quality")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("energy-efficiency coefficient ρ")
    ax2.set_ylabel("communication energy per round [J]")
    ax2.set_title("(b) vs ρ")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Fig. 5 — communication energy ({len(seeds)} seeds, mean ± std)")
    fig.tight_layout()
    fig.savefig(d / "fig5.png", dpi=120)
    plt.close(fig)


def _markdown(s) -> str:
    rows = [[rho, v, x["E_adaptive"][0], x["E_max"][0], 100 * x["saving"][0],
             100 * x["saving"][1], x["q_adaptive"][0], x["q_max"][0]]
            for rho, per in s["snr"].items() for v, x in per.items()]
    out = ["# Fig. 5 — communication energy, adaptive vs max power\n",
           f"Seeds {s['seeds']}; default cell-edge SNR {s.get('default_edge_snr_db', math.nan):.1f} dB.\n",
           markdown_table(["ρ", "SNR [dB]", "E adaptive [J]", "E max [J]", "saving %", "± std",
                           "q adaptive", "q max"], rows)]
    rows = [[v, x["E_adaptive"][0], x["E_max"][0], 100 * x["saving"][0], 100 * x["saving"][1],
             x["q_adaptive"][0]] for v, x in s["rho"].items()]
    out.append("\n" + markdown_table(["ρ", "E adaptive [J]", "E max [J]", "saving %", "± std",
                                      "q adaptive"], rows))
    return "\n".join(out)
