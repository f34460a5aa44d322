"""``fedopt experiment fig2|fig3|fig4|fig5``: reproduce one of the paper's figures.

Each writes CSV, PNG, a markdown table (``<fig>.md``), ``summary.json`` and the resolved
``config.yaml`` into ``OUT/<fig>/``. ``--quick`` runs the CI scale: seconds on the synthetic
backend, about 2 minutes for fig4 on ``--backend lora`` (2 cores; measured 103 s).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import ConfigError
from ..files import check_output_dir
from ._types import cpu_count, output_dir, positive_int

FIGURES = {
    "fig2": ("fedopt.experiments.fig2", "run_fig2", "rounds to converge vs K, with the baselines"),
    "fig3": ("fedopt.experiments.fig3", "run_fig3", "Algorithm 1: iterations vs ε, latency vs N0"),
    "fig4": ("fedopt.experiments.fig4", "run_fig4", "accuracy vs round for the switching schemes"),
    "fig5": ("fedopt.experiments.fig5", "run_fig5", "communication energy vs SNR and ρ"),
}


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("figure", choices=sorted(FIGURES), help="which figure: " + "; ".join(
        f"{k}: {v[2]}" for k, v in FIGURES.items()))
    p.add_argument("--backend", default="synthetic", choices=["synthetic", "lora"],
                   help="training backend (default synthetic)")
    p.add_argument("--quick", action="store_true",
                   help="the CI scale: seconds on the synthetic backend; on --backend lora "
                        "about 2 minutes on 2 cores (fig4)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="number of seeds (default: config)")
    p.add_argument("--config", default=None,
                   help="experiment YAML (default: experiments/configs/<fig>.yaml if present)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run key of the experiment (e.g. K=50, rounds=100)")
    p.add_argument("--out", type=output_dir, default="results",
                   help="output root; files go to OUT/<fig>/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=cpu_count, default=1,
                   help="fig2/fig4: run groups of runs (a seed, or a K and seed) in N processes, "
                        "at most os.cpu_count()")
    p.add_argument("--resume", action="store_true",
                   help="fig2/fig4: reuse the finished groups stored in OUT/<fig>/runs/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in OUT/<fig>/ (removed first); without it "
                        "(or --resume) such a folder is refused")


def run(args: argparse.Namespace) -> int:
    from ..config import parse_overrides
    from ..experiments.common import load_experiment
    from ..fl.config import RunConfig

    module, func, _ = FIGURES[args.figure]
    check_output_dir(Path(args.out) / args.figure, "--out")  # the figure's folder, not just OUT
    cfg = load_experiment(args.figure, args.config, quick=args.quick)
    if args.set:
        cfg["run"] = {**cfg["run"], **parse_overrides(args.set)}
    # the run keys are checked here, before the figure creates its folders
    RunConfig.from_dict({**cfg["run"], "backend": args.backend})
    kw = {}
    if args.figure in ("fig2", "fig4"):
        kw = {"jobs": args.jobs, "resume": args.resume}
    elif args.jobs != 1 or args.resume:
        raise ConfigError(f"--jobs/--resume: only fig2 and fig4 run groups of training runs, not {args.figure}")
    if args.resume and args.overwrite:
        raise ConfigError("--overwrite: give --resume or --overwrite, not both")
    if not args.resume:  # before any work: never write over a figure's results by accident
        from ..runfolder import prepare_out

        prepare_out(Path(args.out) / args.figure, overwrite=args.overwrite,
                    resume_hint="--resume" if args.figure in ("fig2", "fig4") else None)
    fn = getattr(importlib.import_module(module), func)
    summary = fn(cfg, Path(args.out), backend=args.backend, seeds=args.seeds,
                 progress=not args.no_progress, **kw)
    d = Path(args.out) / args.figure
    print((d / f"{args.figure}.md").read_text())
    print(f"wrote {d}/ ({', '.join(sorted(p.name for p in d.iterdir()))})")
    if summary.get("seconds") is not None:
        print(f"time: {summary['seconds']:.1f} s")
    return 0
