"""``fedopt simulate``: run switching-based federated fine-tuning (the runtime, fedopt.fl).

    fedopt simulate --config experiments/configs/quick.yaml --set rounds=50 --out results/quick
    fedopt simulate --resume results/quick              # continue a killed run
    fedopt simulate --resume results/quick --set rounds=80   # extend a run to 80 rounds
    fedopt simulate --config experiments/configs/bound_check.yaml --out results/bound --bound
    fedopt simulate --config experiments/configs/quick.yaml --out results/quick --compare-fedlora

Writes config.yaml (resolved), metrics.csv, summary.json and accuracy / energy /
participation PNGs (and bound.png with --bound) to the output folder. A folder that already
holds a run is refused before any work unless ``--overwrite`` (which removes that run's files)
is given; ``--resume DIR`` continues it from ``DIR/checkpoint.npz``, and with ``--set
rounds=N`` (the one key a resume may change) extends a run, finished or not, to N rounds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ._types import output_dir


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (one flat key: value namespace)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (repeatable), e.g. --set rounds=50 --set policy=greedy")
    p.add_argument("--out", metavar="DIR", type=output_dir, help="output folder")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its last checkpoint (same config; "
                        "--set rounds=N extends it to N rounds)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out DIR (its files are removed first); "
                        "without it such a folder is refused")
    p.add_argument("--bound", action="store_true",
                   help="evaluate Theorem 1 (5)-(6) and plot it beside the measured gap "
                        "(dense synthetic backend)")
    p.add_argument("--compare-fedlora", action="store_true",
                   help="also run FedLoRA (M = 1) on the same seed into DIR/fedlora and print "
                        "a three-line comparison")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _resolve(args) -> tuple:
    from ..fl.config import RunConfig, merge, resume_conflicts

    if args.resume:
        folder = Path(args.resume)
        if not (folder / "config.yaml").is_file():
            raise ConfigError(f"--resume: {folder} holds no config.yaml (not a run folder)")
        if args.out and Path(args.out).resolve() != folder.resolve():
            raise ConfigError("--resume: give either --out or --resume, or the same folder")
        from ..config import load_yaml

        saved = load_yaml(folder / "config.yaml", "--resume")
        if args.config:
            requested = RunConfig.load(args.config, args.overrides)
        else:
            requested = RunConfig.from_dict(merge(saved, _overrides(args.overrides)))
        saved_cfg, now_cfg = RunConfig.from_dict(saved).to_flat_dict(), requested.to_flat_dict()
        diff = resume_conflicts(saved_cfg, now_cfg)
        if diff:
            k = diff[0]
            raise ConfigError(f"--resume: {folder} was run with a different config "
                              f"({k}: {saved_cfg.get(k)!r} there, {now_cfg.get(k)!r} now; "
                              f"{len(diff)} key(s) differ; only rounds may change)")
        return requested, folder, True
    if not args.out:
        raise ConfigError("--out DIR is required (or --resume DIR)")
    return RunConfig.load(args.config, args.overrides), Path(args.out), False


def _overrides(items):
    from ..config import parse_overrides

    return parse_overrides(items)


def run(args) -> int:
    from ..fl.checkpoint import has_checkpoint
    from ..fl.runtime import simulate
    from ..runfolder import prepare_out

    cfg, out, resume = _resolve(args)
    if resume and args.overwrite:
        raise ConfigError("--overwrite: give --resume DIR or --overwrite --out DIR, not both")
    if resume and not has_checkpoint(out):
        raise ConfigError(f"--resume: {out} has no checkpoint yet")
    if not resume:  # before any work: never write over a run by accident
        prepare_out(out, overwrite=args.overwrite)
    summary = simulate(cfg, out, resume=resume, progress=not args.quiet, track_bound=args.bound)
    lines = [
        f"results in {out}/ (config.yaml, metrics.csv, summary.json, accuracy.png, energy.png, "
        f"participation.png{', bound.png' if args.bound else ''})",
        f"final accuracy: {summary['final_accuracy']:.3f} (per-UE ensembles, ω-weighted; "
        f"global test {summary['final_global_accuracy']:.3f}) after {summary['rounds']} rounds",
        f"total energy: {summary['energy_total']:.4g} J (computation "
        f"{summary['energy_computation']:.3g} J, communication {summary['energy_communication']:.3g} J)",
    ]
    if summary.get("final_module_accuracy"):
        from ..backends.base import ONE_CLASS

        lines.append("each module alone on the global test set: " + ", ".join(
            f"m{m} {a:.3f}" + (" (predicts one class)" if share >= ONE_CLASS else "")
            for m, (a, share) in enumerate(zip(summary["final_module_accuracy"],
                                               summary["final_module_top_share"]))))
    if summary.get("module_mean_subscriptions"):
        lines.append("subscribers a round, mean (received): " + ", ".join(
            f"m{m} {s:.1f} ({r:.1f})" for m, (s, r) in enumerate(zip(
                summary["module_mean_subscriptions"], summary["module_mean_received"]))))
    if args.bound and "bound" in summary:
        b = summary["bound"]
        lines.append(f"Theorem 1: max gap/bound ratio {b['max_ratio']:.3g} "
                     f"({'holds' if b['holds'] else 'VIOLATED'}) with mu={b['mu']:.3g}, "
                     f"L={b['L']:.3g}, xi1={b['xi1']:.3g}, xi2={b['xi2']:.3g}")
    if args.compare_fedlora:
        from ..baselines.schemes import SCHEMES  # FedLoRA [4]: one rank-8 module, M = 1
        from ..runfolder import atomic_write_text

        fl_cfg = cfg.replace(**SCHEMES["fedlora"].changes, beta=min(cfg.system.beta, 1.0))
        fl = simulate(fl_cfg, out / "fedlora", resume=resume and has_checkpoint(out / "fedlora"),
                      progress=not args.quiet)
        comparison = {"proposed": summary, "fedlora": fl, "seed": cfg.seed}
        atomic_write_text(out / "comparison.json",
                          json.dumps(comparison, indent=2, default=str) + "\n")
        lines.append(
            f"proposed ({cfg.policy}, M={summary['M']}) vs FedLoRA (M=1), seed {cfg.seed}: "
            f"accuracy {summary['final_accuracy']:.3f} vs {fl['final_accuracy']:.3f}, "
            f"energy {summary['energy_total']:.4g} J vs {fl['energy_total']:.4g} J "
            f"(FedLoRA results in {out / 'fedlora'}/)")
    print("\n".join(lines))
    return 0
