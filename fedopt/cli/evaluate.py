"""``fedopt evaluate``: score a LoRA run's saved modules on its own test split or any
GLUE-format TSV.

    fedopt evaluate results/qnli_lora                 # the run's own held-back test split
    fedopt evaluate results/sst2_lora --tsv ../shared/data/glue/SST-2/dev.tsv
    fedopt evaluate results/sst2_lora --tsv my_test.tsv --json

The run folder holds ``lora/m{i}/`` (peft adapters), ``lora/ensembles.json`` (each UE's
subscribed modules) and ``lora/backend.json`` (model, options, the split's seed). Inference is
the ensemble (3): the mean of the modules' logits. ``accuracy`` is the global ensemble (all
modules); per UE, the ensemble of its own modules reweighted to its label distribution; and
each module alone. Without ``--tsv`` the run's test split is rebuilt as the run built it (for
QNLI, whose dev.tsv is split 70/30, the held-back 30 %), so the numbers are the run's last
evaluation. A TSV that shares rows with a run's training part of a split dev.tsv is scored,
with a warning that says how many.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written with backend=lora")
    p.add_argument("--tsv", metavar="FILE", default=None,
                   help="GLUE-format TSV with a header and a 'label' column (default: the run's "
                        "own test split, rebuilt from its backend.json)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="GLUE root for the run's own split (default: the run's, else "
                        "$FEDOPT_DATA, else ../shared/data/glue)")
    p.add_argument("--model", metavar="PATH", default=None,
                   help="the foundation model (default: the one the run used)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; the device "
                        "the run trained on does not matter (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="a malformed TSV row (wrong number of fields) is an error, not skipped")


def run(args) -> int:
    from ..backends.base import ONE_CLASS
    from ..backends.glue import read_tsv, splits_dev
    from ..backends.lora import (
        LoraBackend,
        check_device,
        check_run_params,
        ensemble_scores,
        load_run_modules,
        run_test_split,
    )
    from ..files import check_input_file

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is not a directory")
    if args.tsv is not None:  # missing, a folder, a FIFO, a device, too large: one line
        check_input_file(Path(args.tsv), "--tsv")
    meta, specs, params, ensembles = load_run_modules(run_dir)  # checked, before the model loads
    task, data_dir = meta["options"]["task"], args.data_dir or meta["options"].get("data_dir")
    if args.tsv is None:  # the run's own test split, exactly as its evaluations scored it
        _, rows, note = run_test_split(meta["options"], data_dir)
        source = f"the run's test split ({note})"
    else:
        tsv = Path(args.tsv)
        rows = read_tsv(tsv, task, strict=args.strict)  # a bad TSV fails here too
        source = str(tsv)
        if rows.skipped:  # said, never silent: n below counts only the rows that were read
            print(f"fedopt evaluate: warning: --tsv: skipped {len(rows.skipped)} malformed row(s) "
                  f"of {tsv} (first: line {rows.skipped[0]}); --strict makes this an error",
                  file=sys.stderr)
        if splits_dev(task, data_dir):  # e.g. QNLI: the run trained on 70 % of this dev.tsv
            train, _, _ = run_test_split(meta["options"], data_dir)
            seen = set(zip(train.text_a, train.text_b or [""] * len(train)))
            n_seen = sum(pair in seen for pair in zip(rows.text_a, rows.text_b or [""] * len(rows)))
            if n_seen:
                print(f"fedopt evaluate: warning: --tsv: {n_seen} of its {len(rows)} rows are in "
                      f"the run's training part of {task}'s split dev.tsv, so its accuracy is "
                      f"not a test accuracy; leave out --tsv to score the run's held-back test "
                      f"split", file=sys.stderr)
    options = {k: v for k, v in meta["options"].items() if k != "model"}
    # a run trained on a GPU is scored wherever the user is: the saved device is not reused
    options["device"] = check_device(args.device)
    options["progress"] = not args.quiet and not args.json
    backend = LoraBackend.for_inference(args.model or meta["model"], options, meta["label_dist"],
                                        meta["data_sizes"], log=lambda msg: None)
    backend.init_modules(specs)
    check_run_params(backend, params, run_dir)
    data = backend.data_for(rows, "tsv" if args.tsv else "test")
    logits = backend.module_logits(params, data)
    sizes = np.asarray(meta["data_sizes"], float)
    ev = ensemble_scores(logits, data.labels, ensembles, backend.label_dist, sizes / sizes.sum())
    single = [float(a) for a in ev.module_accuracy]  # each module alone
    out = {"tsv": args.tsv, "data": source, "n": int(data.labels.size),
           "accuracy": ev.global_accuracy, "loss": ev.global_loss, "ue_weighted_accuracy": ev.accuracy,
           "ue_accuracy": [float(a) for a in ev.ue_accuracy], "module_accuracy": single,
           "module_top_share": [float(s) for s in ev.module_top_share],
           "skipped_rows": len(rows.skipped)}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{source}: {out['n']} examples, {len(params)} modules, {len(ev.ue_accuracy)} UEs")
    print(f"global ensemble accuracy   {ev.global_accuracy:.4f}  (loss {ev.global_loss:.4f})")
    print(f"per-UE ensembles, ω-mean   {ev.accuracy:.4f}  "
          f"(min {ev.ue_accuracy.min():.4f}, max {ev.ue_accuracy.max():.4f})")
    print("single modules             " + "  ".join(
        f"m{m} {a:.4f}" + (" (predicts one class)" if share >= ONE_CLASS else "")
        for m, (a, share) in enumerate(zip(single, ev.module_top_share))))
    return 0
