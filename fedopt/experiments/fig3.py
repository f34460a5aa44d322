"""Fig. 3: Algorithm 1's convergence and the transmission latency across channel regimes.

(a) Tier-2 iterations of Algorithm 1 against the tolerance ε: the paper says they grow as
    O(log 1/ε). We fit iterations = c₀ + c₁ log₁₀(1/ε) and report c₁ (bisection halves the
    ν interval per iteration, so c₁ → log₂ 10 ≈ 3.32 once the budget binds) and R².
(b) The mean transmission delay τ = S_m / (b B log₂(1+θ)) of (13) over the scheduled pairs
    against the noise density N₀ (the channel regime), for Algorithm 1 (``alg1``), our
    certified global method (``global``) and SCIP (``scip``) on the same instances; the
    table adds each method's objective gap to the best certified bound and its time.

Instances (ours): round 0 of the configured run (K = 100 at the paper's scale), every pair's
Γ measured by the backend at θ^0, ⌈βK⌉ UEs scheduled on random feasible modules
(:func:`~.rounds.floor_schedule`) at p = P_max; N₀ only changes a_k of (15).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

from ..errors import ConfigError
from ..runfolder import atomic_write_text
from .common import band, markdown_table, mean_std, out_dir, seed_list, write_config, write_rows
from .rounds import floor_schedule, measured_round

__all__ = ["run_fig3"]


def _instance(sys_, x, p, a):
    from ..instances import bandwidth_instance

    return bandwidth_instance(x=x, p=p, omega=sys_.omega, Gamma=sys_.Gamma, a=a,
                              kappa=sys_.kappa, S=sys_.S, b_min=sys_.b_min, rho=sys_.rho,
                              B=sys_.B, theta=sys_.theta, alpha=sys_.alpha)


def _latency(sys_, inst, b) -> tuple[float, float]:
    k, m = inst.meta["pairs"]
    tau = sys_.S[m] / (np.asarray(b, float) * sys_.B * math.log2(1 + sys_.theta))
    return float(np.mean(tau)), float(np.max(tau))


def run_fig3(cfg: dict, out, *, backend: str = "synthetic", seeds: int | None = None,
             progress: bool = True) -> dict:
    from ..channel import noise_coefficient
    from ..fl.config import RunConfig
    from ..solvers import solve_bandwidth
    from ..units import parse_quantity

    d = out_dir(out, "fig3")
    eps_list = [float(e) for e in cfg["eps"]]
    n0_list = [parse_quantity(v, "psd") if isinstance(v, str) else float(v)
               for v in cfg["N0"]]
    methods = list(cfg["methods"])
    bad = [m for m in methods if m not in ("alg1", "global", "scip", "lambertw", "ipopt")]
    if bad:
        raise ConfigError(f"fig3.methods: unknown method '{bad[0]}'")
    rhos = [float(r) for r in cfg["rho"]]
    scip_rho = [float(r) for r in cfg.get("scip_rho", rhos)]  # SCIP is slow where (16) is nonconvex
    seeds_ = seed_list(cfg, seeds)
    it_rows, lat_rows = [], []
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds_) * len(n0_list) * len(rhos), desc="fig3", unit="instance")
    for seed in seeds_:
        run = RunConfig.from_dict({**cfg["run"], "backend": backend, "seed": seed,
                                   "checkpoint_every": 0})
        sim, state, sys_ = measured_round(run)
        rng = np.random.default_rng([seed, 3])
        x = floor_schedule(sys_.b_min, run.system.beta, rng)
        p = np.full(sim.pop.K, run.system.P_max)
        base = _instance(sys_, x, p, sys_.a)
        nu_max = float(np.max(base.c / base.b_min**2))  # Algorithm 1's initial ν bracket
        for eps in eps_list:
            sol = solve_bandwidth(base, method="alg1", eps=eps)
            nu, it = sol.extras["nu"], sol.iterations
            it_rows.append({"seed": seed, "eps": eps, "iterations": it, "pairs": base.n,
                            "nu": nu, "nu_max": nu_max})
        for rho, n0 in [(r, n) for r in rhos for n in n0_list]:
            a = noise_coefficient(run.system.replace(N0=n0), sim.pop.d)
            inst = _instance(dataclasses.replace(sys_, rho=rho), x, p, a)
            sols = {m: solve_bandwidth(inst, method=m, time_limit=float(cfg["time_limit"]))
                    for m in methods if m != "scip" or rho in scip_rho}
            bounds = [s.bound for s in sols.values() if s.bound is not None
                      and s.status == "optimal"]
            best_bound = max(bounds) if bounds else math.nan
            for m, s in sols.items():
                ok = s.status not in ("error", "infeasible") and np.all(np.isfinite(s.x))
                mean_tau, max_tau = _latency(sys_, inst, s.x) if ok else (math.nan, math.nan)
                gap = ((s.objective - best_bound) / max(abs(s.objective), 1e-300)
                       if ok and math.isfinite(best_bound) else math.nan)
                lat_rows.append({
                    "seed": seed, "rho": rho, "N0_dBm_Hz": 10 * math.log10(n0 * 1e3), "method": m,
                    "status": s.status, "objective": s.objective, "gap_to_bound": gap,
                    "mean_latency_s": mean_tau, "max_latency_s": max_tau,
                    "bandwidth_used": float(np.sum(s.x)) if ok else math.nan,
                    "iterations": s.iterations, "seconds": s.seconds, "pairs": inst.n,
                })
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    write_rows(it_rows, d / "fig3_iterations.csv")
    write_rows(lat_rows, d / "fig3_latency.csv")
    summary = _summarise(it_rows, lat_rows, eps_list, methods, seeds_)
    summary["seconds"] = time.perf_counter() - t0
    _plot(it_rows, lat_rows, eps_list, methods, seeds_, d)
    (d / "fig3.md").write_text(_markdown(summary, methods))
    atomic_write_text(d / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_config(cfg, d, {"backend": backend, "seeds": seeds_})
    return summary


def _summarise(it_rows, lat_rows, eps_list, methods, seeds):
    le = np.log10(1.0 / np.array([r["eps"] for r in it_rows]))
    its = np.array([r["iterations"] for r in it_rows], float)
    A = np.stack([np.ones_like(le), le], axis=1)
    coef, *_ = np.linalg.lstsq(A, its, rcond=None)
    pred = A @ coef
    ss = float(np.sum((its - its.mean()) ** 2))
    r2 = 1.0 - float(np.sum((its - pred) ** 2)) / ss if ss > 0 else math.nan
    per_eps = {f"{e:g}": mean_std([r["iterations"] for r in it_rows if r["eps"] == e])
               for e in eps_list}
    n0s = sorted({r["N0_dBm_Hz"] for r in lat_rows})
    per = {}
    rhos = sorted({r["rho"] for r in lat_rows})
    for m, rho in [(m, r) for m in methods for r in rhos]:
        per[f"{m}@rho={rho:g}"] = {}
        for n0 in n0s:
            rows = [r for r in lat_rows if r["method"] == m and r["N0_dBm_Hz"] == n0
                    and r["rho"] == rho]
            per[f"{m}@rho={rho:g}"][f"{n0:g}"] = {
                "mean_latency_s": mean_std([r["mean_latency_s"] for r in rows]),
                "gap_to_bound": mean_std([r["gap_to_bound"] for r in rows]),
                "max_gap": float(np.nanmax([r["gap_to_bound"] for r in rows]))
                if any(np.isfinite(r["gap_to_bound"]) for r in rows) else math.nan,
                "seconds": mean_std([r["seconds"] for r in rows]),
                "statuses": sorted({r["status"] for r in rows}),
            }
    return {"seeds": seeds, "slope_iterations_per_decade": float(coef[1]),
            "intercept": float(coef[0]), "r2": r2, "iterations_per_eps": per_eps,
            "pairs": int(np.mean([r["pairs"] for r in it_rows])), "regimes": per}


def _plot(it_rows, lat_rows, eps_list, methods, seeds, d):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.log10(1.0 / np.array(eps_list))
    Y = np.array([[next(r["iterations"] for r in it_rows if r["seed"] == s and r["eps"] == e)
                   for e in eps_list] for s in seeds], float)
    band(ax1, x, Y, "Algorithm 1 (tier-2 iterations)", marker="o")
    coef = np.polyfit(np.repeat(x[None, :], len(seeds), 0).ravel(), Y.ravel(), 1)
    ax1.plot(x, np.polyval(coef, x), "k--", lw=1,
             label=f"fit {coef[1]:.1f} + {coef[0]:.2f}·log10(1/ε)")
    ax1.set_xlabel("log10(1/ε)")
    ax1.set_ylabel("iterations to converge")
    ax1.set_title("(a) Algorithm 1: iterations vs tolerance")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    n0s = sorted({r["N0_dBm_Hz"] for r in lat_rows})
    styles = {"alg1": dict(marker="o"), "global": dict(marker="s", ls="--"),
              "scip": dict(marker="x", ls=":"), "lambertw": dict(marker="^"),
              "ipopt": dict(marker="v")}
    rhos = sorted({r["rho"] for r in lat_rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = {"alg1": "Alg. 1", "global": "global", "scip": "SCIP"}
    for i, rho in enumerate(rhos):
        for m in methods:
            Y = np.array([[next((r["mean_latency_s"] for r in lat_rows if r["seed"] == s
                                 and r["method"] == m and r["N0_dBm_Hz"] == n
                                 and r["rho"] == rho), math.nan)
                           for n in n0s] for s in seeds], float)
            style = dict(styles.get(m, {}), color=colors[i % len(colors)])
            if m != "alg1":
                style.update(ls="none", fillstyle="none", markersize=8)
            if np.isfinite(Y).any():  # the seeds' spread (their populations) is in fig3.md
                ax2.plot(n0s, np.nanmean(Y, axis=0), label=f"{names.get(m, m)}, ρ={rho:g}",
                         **style)
    ax2.set_xlabel("noise density N0 [dBm/Hz]")
    ax2.set_ylabel("mean transmission latency τ [s] (mean over seeds)")
    ax2.set_title("(b) latency vs channel regime")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Fig. 3 — Algorithm 1 ({len(seeds)} seeds, mean ± std)")
    fig.tight_layout()
    fig.savefig(d / "fig3.png", dpi=120)
    plt.close(fig)


def _markdown(s, methods) -> str:
    out = ["# Fig. 3 — Algorithm 1\n",
           f"Seeds {s['seeds']}; {s['pairs']} scheduled pairs per instance.\n",
           f"Iterations ≈ {s['intercept']:.2f} + {s['slope_iterations_per_decade']:.2f}·"
           f"log10(1/ε), R² = {s['r2']:.3f}.\n"]
    out.append(markdown_table(["ε", "iterations (mean)", "std"],
                              [[e, v[0], v[1]] for e, v in s["iterations_per_eps"].items()]))
    rows = []
    for key in s["regimes"]:
        m, rho = key.split("@rho=")
        for n0, v in s["regimes"][key].items():
            if not v["statuses"]:  # not run at this ρ (scip_rho)
                continue
            rows.append([m, rho, n0, v["mean_latency_s"][0], v["mean_latency_s"][1],
                         v["gap_to_bound"][0], v["max_gap"], v["seconds"][0],
                         ",".join(v["statuses"])])
    out.append("\n" + markdown_table(["method", "ρ", "N0 [dBm/Hz]", "latency [s]", "std",
                                      "mean gap", "max gap", "seconds", "status"], rows))
    return "\n".join(out)
