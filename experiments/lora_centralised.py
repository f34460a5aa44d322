"""Centralised references for a federated LoRA run: one LoRA module trained on the pooled data,
and a logistic probe on frozen mean-pooled embeddings.

    .venv/bin/python experiments/lora_centralised.py --config experiments/configs/sst2_lora.yaml
    .venv/bin/python experiments/lora_centralised.py --config ... --lr 0.2 0.5 1.0   # an lr sweep

The pool is exactly the federated run's training data: the union of the K UEs' Dirichlet
partitions (same seed, same population sizes). The centralised run takes as many SGD steps of
the local batch as the federated run trains one module on average, so both see the same number
of training examples per module: steps = Σ_t (pairs trained in round t) * I / M. Pass
``--steps`` to override, or ``--examples`` to give the example count directly.
Prints one table and writes ``--out`` (JSON) if given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run-dir", help="a finished federated run: read its trained-pair count")
    ap.add_argument("--steps", type=int, default=0, help="centralised SGD steps (default: matched)")
    ap.add_argument("--examples", type=int, default=0, help="training examples (steps = this / batch)")
    ap.add_argument("--lr", type=float, nargs="+", default=None, help="step size(s); default: the config's lr")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression

    from fedopt.backends.base import ModuleSpec, PairBatch, weighted_mean_aggregate
    from fedopt.backends.lora import LoraBackend
    from fedopt.fl.config import RunConfig
    from fedopt.population import draw_population

    run = RunConfig.load(args.config, args.overrides)
    cfg = run.system
    pop_ss, backend_ss, _, _ = np.random.SeedSequence(run.seed).spawn(4)
    pop = draw_population(cfg.replace(module_size="nominal"), np.random.default_rng(pop_ss))
    fed = LoraBackend(cfg, pop, backend_ss, **run.backend_kwargs())
    pool = np.concatenate(fed._ue_rows)
    n_pool = pool.size

    if args.examples:
        steps = args.examples // cfg.batch
    elif args.steps:
        steps = args.steps
    elif args.run_dir:
        import csv

        with open(Path(args.run_dir) / "metrics.csv") as fh:
            pairs = sum(int(r["subscriptions"]) for r in csv.DictReader(fh))
        steps = int(round(pairs * cfg.local_steps / cfg.M))
    else:
        raise SystemExit("give --run-dir, --steps or --examples")

    # one UE holding the whole pool (IID by construction: the pool itself)
    fed._ue_rows = [pool]
    fed._sizes = np.array([n_pool])
    fed.num_ues = 1
    fed.label_dist = np.bincount(fed.train.labels[pool], minlength=fed.num_labels)[None, :] / n_pool
    fed._rng = np.random.default_rng(12345)
    fed._order = [fed._rng.permutation(n_pool)]
    fed._cursor = np.zeros(1, dtype=int)
    spec = ModuleSpec(0, args.rank)
    init = fed.init_modules([spec])[0]
    rows = []
    lrs = args.lr or [cfg.lr]
    pair = PairBatch(np.array([0]), np.array([0]))
    for lr in lrs:
        fed._cursor[:] = 0
        params = {k: v.copy() for k, v in init.items()}
        t0 = time.perf_counter()
        chunk = args.eval_every or steps
        done = 0
        curve = []
        while done < steps:
            n = min(chunk, steps - done)
            res = fed.local_update(pair, [params], n, lr)
            params = weighted_mean_aggregate(params, res.updates, np.ones(1))
            done += n
            ev = fed.evaluate([params], np.ones((1, 1), bool))
            curve.append((done, ev.global_accuracy))
        secs = time.perf_counter() - t0
        rows.append({"lr": lr, "steps": steps, "examples": steps * cfg.batch, "accuracy": ev.global_accuracy,
                     "loss": ev.global_loss, "seconds": secs, "curve": curve})
        print(f"centralised LoRA r={args.rank} lr={lr:g}: {steps} steps x {cfg.batch} = "
              f"{steps * cfg.batch} examples from a pool of {n_pool}: dev accuracy "
              f"{ev.global_accuracy:.4f} ({secs:.0f} s)", flush=True)

    # logistic probe on frozen mean-pooled embeddings of the same pool
    def embed(data, idx):
        from fedopt.backends.lora_batched import pad_examples
        from fedopt.backends.lora_model import mean_pool

        out = []
        with torch.no_grad():
            for s in range(0, len(idx), 128):
                batch = pad_examples([data.examples[i] for i in idx[s:s + 128]], fed.pad_id)
                h = fed.encoder(**batch).last_hidden_state
                out.append(mean_pool(h, batch["attention_mask"]).numpy())
        return np.concatenate(out)

    t0 = time.perf_counter()
    x_tr = embed(fed.train, pool)
    x_te = embed(fed.test, np.arange(len(fed.test.examples)))
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(x_tr, fed.train.labels[pool])
    probe = float((clf.predict(x_te) == fed.test.labels).mean())
    print(f"logistic probe on frozen mean-pooled embeddings ({n_pool} examples): dev accuracy "
          f"{probe:.4f} ({time.perf_counter() - t0:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps({"centralised": rows, "probe_accuracy": probe,
                                              "pool": int(n_pool), "data_note": fed.data_note}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
