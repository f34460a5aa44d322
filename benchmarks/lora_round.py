"""One federated round on the real all-MiniLM-L6-v2: the naive peft loop against the fast path.

    .venv/bin/python benchmarks/lora_round.py            # 45 pairs x 5 steps x batch 8 + eval
    .venv/bin/python benchmarks/lora_round.py --pairs 15 --repeats 2

A round = local_update of every (UE, module) pair (15 UEs x 3 modules of ranks 4, 8, 16) for
I = 5 SGD steps of batch 8, then the ensemble evaluation (3) of the 3 modules on SST-2 dev.
Three setups run in this one process, on the same pairs and samples:

- naive: what plain peft code does: LoRA on query/value of all 6 blocks, one pair after the
  other, every batch padded to max_length = 64, evaluation through the full model;
- reference: the backend's ``lora_path: reference`` with the fast path's modules (top 2
  blocks), sequential, full depth, per-batch padding (the same numbers as fast, slower);
- fast: frozen-prefix cache (fp16, unpadded), per-batch padding, all pairs through one batched
  LoRA stack (``lora_path: fast``, the default).

Prints seconds per round, training examples/s, evaluation examples/s and the ratios. The CPU
is shared: timings are noisy, so ratios are taken within one run (best of ``--repeats``).
The fast path's one-off prefix-cache build is reported separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ues", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from fedopt.backends.base import ModuleSpec, PairBatch
    from fedopt.backends.lora import LoraBackend
    from fedopt.config import SystemConfig
    from fedopt.population import draw_population

    cfg = SystemConfig(K=args.ues, batch=args.batch, data_min=100, data_max=200, local_steps=args.steps)
    pop = draw_population(cfg, 0)
    specs = [ModuleSpec(0, 4), ModuleSpec(1, 8), ModuleSpec(2, 16)]
    pairs = PairBatch(np.repeat(np.arange(args.ues), 3), np.tile(np.arange(3), args.ues))
    ens = np.ones((args.ues, 3), bool)
    setups = {
        "naive": dict(lora_path="reference", padding="max_length", top_layers=6),
        "reference": dict(lora_path="reference", padding="batch", top_layers=2),
        "fast": dict(lora_path="fast", top_layers=2),
    }
    results: dict[str, dict] = {}
    for name, opts in setups.items():
        t0 = time.perf_counter()
        be = LoraBackend(cfg, pop, 0, data_dir=args.data_dir, progress=False, log=lambda m: None, **opts)
        params = be.init_modules(specs)
        setup = time.perf_counter() - t0
        best = {"train": np.inf, "eval": np.inf}
        state = be.state_dict()
        for _ in range(args.repeats):
            be.load_state_dict(state)  # the same samples every repeat and every setup
            t0 = time.perf_counter()
            res = be.local_update(pairs, params, args.steps, 0.5)
            t1 = time.perf_counter()
            ev = be.evaluate(params, ens)
            t2 = time.perf_counter()
            best["train"] = min(best["train"], t1 - t0)
            best["eval"] = min(best["eval"], t2 - t1)
        n_train = len(pairs) * args.steps * args.batch
        n_eval = len(be.test.examples) * 3
        results[name] = {**best, "round": best["train"] + best["eval"], "setup": setup,
                         "train_eps": n_train / best["train"], "eval_eps": n_eval / best["eval"],
                         "loss": float(res.loss.mean()), "acc": ev.global_accuracy}
        print(f"{name:9s} done: round {results[name]['round']:.1f} s (setup {setup:.1f} s)", flush=True)

    n_train = len(pairs) * args.steps * args.batch
    print(f"\none round: {len(pairs)} pairs x {args.steps} steps x batch {args.batch} = {n_train} "
          f"training examples, then 3 modules on SST-2 dev; {torch.get_num_threads()} threads, "
          f"best of {args.repeats}")
    print(f"{'setup':10s} {'train s':>8s} {'eval s':>7s} {'round s':>8s} {'train ex/s':>11s} "
          f"{'eval ex/s':>10s} {'vs naive':>9s} {'setup s':>8s}")
    for name, r in results.items():
        print(f"{name:10s} {r['train']:8.2f} {r['eval']:7.2f} {r['round']:8.2f} {r['train_eps']:11.0f} "
              f"{r['eval_eps']:10.0f} {results['naive']['round'] / r['round']:8.2f}x {r['setup']:8.1f}")
    f, ref = results["fast"], results["reference"]
    print(f"\nfast vs naive: {results['naive']['round'] / f['round']:.2f}x per round "
          f"(target >= 4x); fast vs reference (same modules, same numbers): "
          f"{ref['round'] / f['round']:.2f}x")
    print(f"mean training loss: reference {ref['loss']:.6f}, fast {f['loss']:.6f} (fp16 cache)")
    print("timings are noisy: the 2 cores are shared with other processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
