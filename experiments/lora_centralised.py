"""The centralised ceiling of a federated LoRA run: its LoRA layout trained on all the data at once.

    .venv/bin/python experiments/lora_centralised.py --config experiments/configs/sst2_lora.yaml
    .venv/bin/python experiments/lora_centralised.py --config ... --data full --epochs 1
    .venv/bin/python experiments/lora_centralised.py --config ... --optimizer config --run-dir RUN

The config is a run config (``fedopt simulate --config``) or a lora experiment config
(``fedopt experiment figN --config``: its ``run:`` section, its ``lora_task`` and its largest K).
It fixes the layout: the model, the task and its test split, ``top_layers``,
``target_modules``, ``max_length``. One module of rank ``--rank`` (default: the median of the
config's ``ranks``) is trained by the backend's own ``local_update`` for one UE that holds

- ``--data pool`` (default): the union of the K UEs' Dirichlet partitions (same seed, same
  population), i.e. exactly the data the federated run trains on;
- ``--data full``: the task's whole training split (SST-2: train.tsv; QNLI here: the 70 % of
  dev that the backend trains on).

``--optimizer adamw`` (default; lr 5e-4, batch 32, its state kept over the whole run) is the
ceiling recipe; ``--optimizer config`` trains with the config's own local optimizer, lr and
batch. Length: ``--epochs`` (default 1) over the data, or ``--steps``, ``--examples``, or
``--run-dir`` (as many examples as the finished federated run trained one module on average:
Σ_t pairs_t · I · batch / M). The test split is the config's, scored after every
``--eval-every`` steps. ``--probe`` adds a logistic probe on frozen mean-pooled embeddings.
Prints one line per evaluation and writes ``--out`` (JSON) if given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CEILING = {"local_optimizer": "adamw", "optimizer_state": "keep", "lr": 5e-4, "batch": 32}


def _run_config(path: str, overrides: list[str]):
    """A run config, or the run of a ``figN*.yaml`` experiment config on the lora backend."""
    import re

    from fedopt.config import load_yaml, parse_overrides
    from fedopt.experiments.common import load_experiment
    from fedopt.fl.config import RunConfig, merge

    if not isinstance(load_yaml(path).get("run"), dict):
        return RunConfig.load(path, overrides)
    fig = re.match(r"fig\d", Path(path).name)
    exp = load_experiment(fig.group(0) if fig else "fig2", path)
    flat = {**exp["run"], "backend": "lora", "task": exp["lora_task"]}
    if isinstance(exp.get("K"), list):  # fig2 sweeps K: its largest
        flat["K"] = max(int(k) for k in exp["K"])
    return RunConfig.from_dict(merge(flat, parse_overrides(overrides)))


def _hold_all(fed, data: str) -> np.ndarray:
    """Make ``fed`` one UE holding ``data`` (pool | full); its training rows. Before init_modules,
    so the fast path's prefix cache covers exactly these rows."""
    from fedopt.backends.glue import load_task

    if data == "full":
        opts = fed.options
        train, _, _ = load_task(opts.task, opts.data_dir, seed=opts.seed, test_fraction=opts.test_fraction)
        fed.train = type(fed.train)(fed._tokenize(train), train.labels)
        rows = np.arange(len(train))
    else:
        rows = np.concatenate(fed._ue_rows)
    n = rows.size
    fed._ue_rows = [rows]
    fed._sizes = np.array([n])
    fed.num_ues = 1
    fed.label_dist = np.bincount(fed.train.labels[rows], minlength=fed.num_labels)[None, :] / n
    fed._rng = np.random.default_rng(12345)
    fed._order = [fed._rng.permutation(n)]
    fed._cursor = np.zeros(1, dtype=int)
    fed._probe_rows = [rows[:fed.options.probe_batch]]
    return rows


def _probe(fed, rows: np.ndarray) -> float:
    """Test accuracy of a logistic regression on frozen mean-pooled embeddings of ``rows``."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from fedopt.backends.lora_batched import pad_examples
    from fedopt.backends.lora_model import mean_pool

    def embed(data, idx):
        out = []
        with torch.no_grad():
            for s in range(0, len(idx), 128):
                batch = pad_examples([data.examples[i] for i in idx[s:s + 128]], fed.pad_id)
                h = fed.encoder(**batch).last_hidden_state
                out.append(mean_pool(h, batch["attention_mask"]).numpy())
        return np.concatenate(out)

    clf = LogisticRegression(C=10.0, max_iter=2000).fit(embed(fed.train, rows), fed.train.labels[rows])
    return float((clf.predict(embed(fed.test, np.arange(len(fed.test.examples)))) == fed.test.labels).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", choices=("pool", "full"), default="pool")
    ap.add_argument("--optimizer", choices=("adamw", "config"), default="adamw",
                    help="adamw: the ceiling recipe (lr 5e-4, batch 32, state kept); config: the config's")
    ap.add_argument("--lr", type=float, nargs="+", default=None, help="step size(s) (a sweep)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--rank", type=int, default=None, help="default: the median of the config's ranks")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--examples", type=int, default=0, help="training examples (steps = this / batch)")
    ap.add_argument("--run-dir", help="a finished federated run: match its examples per module")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between test evaluations (0: at the end)")
    ap.add_argument("--probe", action="store_true", help="also a logistic probe on frozen embeddings")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from fedopt.backends.base import ModuleSpec, PairBatch, weighted_mean_aggregate
    from fedopt.backends.lora import LoraBackend
    from fedopt.fl.config import RunConfig
    from fedopt.population import draw_population

    run = _run_config(args.config, args.overrides)
    recipe = dict(CEILING) if args.optimizer == "adamw" else {}
    if args.batch:
        recipe["batch"] = args.batch
    if recipe:
        run = run.replace(**recipe)
    cfg = run.system
    # the federated run's population and partition: same seeds, same split of the seed sequence
    pop_ss, backend_ss, _, _ = np.random.SeedSequence(run.seed).spawn(4)
    pop = draw_population(cfg.replace(module_size="nominal"), np.random.default_rng(pop_ss))
    fed = LoraBackend(cfg, pop, backend_ss, **run.backend_kwargs())
    runs_pairs = None
    if args.run_dir:
        import csv

        with open(Path(args.run_dir) / "metrics.csv") as fh:
            runs_pairs = sum(int(r["subscriptions"]) for r in csv.DictReader(fh))
    rows = _hold_all(fed, args.data)
    n = rows.size
    B = cfg.batch
    if args.examples:
        steps = args.examples // B
    elif args.steps:
        steps = args.steps
    elif runs_pairs is not None:
        saved = RunConfig.load(Path(args.run_dir) / "config.yaml").system
        steps = int(round(runs_pairs * saved.local_steps * saved.batch / saved.M / B))
    else:
        steps = math.ceil(args.epochs * n / B)
    rank = args.rank or int(np.median(cfg.ranks))
    init = fed.init_modules([ModuleSpec(0, rank)])[0]
    opt_name = run.backend_options.get("local_optimizer", "sgd")
    layout = (f"{run.backend_options.get('model') or 'all-MiniLM-L6-v2'}, LoRA r={rank} on the top "
              f"{fed.options.top_layers} of {fed.n_layers} blocks, {run.backend_options['task']}, "
              f"{fed.options.max_length} tokens")
    print(f"{layout}: {args.data} data, {n} training / {len(fed.test.examples)} test examples; "
          f"{opt_name}, batch {B}, {steps} steps = {steps * B / n:.2f} epochs", flush=True)

    rows_out = []
    pair = PairBatch(np.array([0]), np.array([0]))
    for lr in args.lr or [cfg.lr]:
        fed._cursor[:] = 0
        fed._order = [np.random.default_rng(12345).permutation(n)]
        params = {k: v.copy() for k, v in init.items()}
        chunk = args.eval_every or steps
        done, curve = 0, []
        t0 = time.perf_counter()
        with tqdm(total=steps, desc=f"lr {lr:g}", unit="step", disable=not fed.options.progress) as bar:
            while done < steps:
                k = min(chunk, steps - done)
                res = fed.local_update(pair, [params], k, lr)
                params = weighted_mean_aggregate(params, res.updates, np.ones(1))
                done += k
                bar.update(k)
                ev = fed.evaluate([params], np.ones((1, 1), bool))
                curve.append([done, ev.global_accuracy, float(res.loss[0])])
                bar.write(f"  step {done}: test accuracy {ev.global_accuracy:.4f} "
                          f"(train loss {res.loss[0]:.3f})")
        secs = time.perf_counter() - t0
        best = max(curve, key=lambda c: c[1])
        rows_out.append({"lr": lr, "steps": steps, "batch": B, "examples": steps * B,
                         "accuracy": ev.global_accuracy, "best_accuracy": best[1], "best_step": best[0],
                         "loss": ev.global_loss, "seconds": secs, "curve": curve})
        print(f"ceiling, {opt_name} lr {lr:g}: test accuracy {ev.global_accuracy:.4f} after {steps} steps "
              f"(best {best[1]:.4f} at step {best[0]}), {secs:.0f} s", flush=True)

    out = {"config": args.config, "overrides": args.overrides, "layout": layout, "data": args.data,
           "train_examples": int(n), "test_examples": len(fed.test.examples), "rank": rank,
           "optimizer": opt_name, "runs": rows_out, "data_note": fed.data_note}
    if args.probe:
        t0 = time.perf_counter()
        out["probe_accuracy"] = _probe(fed, rows)
        print(f"logistic probe on frozen mean-pooled embeddings: test accuracy "
              f"{out['probe_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
