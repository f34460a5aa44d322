"""Seconds per federated LoRA round: the batched fast path against the naive peft loop.

    python benchmarks/lora_round.py --device auto --dtype float32,bfloat16 --out results/lora_round.json
    python benchmarks/lora_round.py --quick --out /tmp/lora_round.json      # CPU smoke test

One round = ``local_update`` of P (UE, module) pairs, each doing I = 5 SGD steps of batch 8 at
64 tokens, with LoRA on query/value in every block (``top_layers: all``) and a per-module
mean-pooling head; 3 modules of ranks 4, 8, 16, pair p = (UE p // 3, module p % 3). Two
encoders of real shape with random weights (nothing to download): MiniLM-L6
(BertConfig: hidden 384, 6 layers, 12 heads, intermediate 1536) and RoBERTa-base
(RobertaConfig defaults: hidden 768, 12 layers), on synthetic 64-token sentences.

- batched: the backend's default ``lora_path: fast``: every pair's rows in one pass, LoRA as
  ``bmm`` over a per-pair weight stack (prefix cache = the embedding output at full depth);
- naive: ``lora_path: reference``: one peft adapter per pair, one pair after the other, every
  batch padded to 64 tokens (run at P = 30 only: it is slow).

Both run in this one process on the same pairs and samples, per dtype (autocast) and device;
a round is timed after one warm-up round, best of ``--repeats``. The one-off setup (model
load, prefix cache) is reported apart. Two checks ride along: the batched round repeated on
the same samples (max |Δ update|: 0 where the device is deterministic) and, per encoder, the
batched bf16 updates against fp32 (max |Δ| / max |u| over tensors).

``--max-seconds`` bounds the whole run: no new cell starts past it, and an alarm stops a cell
that runs over (its row says so); results so far are written after every cell (``--out``
FILE.json and FILE.md beside it). ``--quick``: tiny encoders (hidden 32, 2 layers), P = 4,
16 tokens, for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RANKS = (4, 8, 16)


class OutOfTime(Exception):
    pass


def _shapes(quick: bool) -> dict[str, tuple[str, dict]]:
    if quick:
        tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        return {"MiniLM-L6 (tiny)": ("bert", tiny), "RoBERTa-base (tiny)": ("roberta", tiny)}
    return {"MiniLM-L6": ("bert", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                       intermediate_size=1536)),
            "RoBERTa-base": ("roberta", {})}


def _write_model(folder: Path, kind: str, shape: dict, vocab: int, max_tokens: int) -> Path:
    """A random-init encoder of the given shape and a word-level BERT tokenizer (w0 .. wN)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, RobertaConfig, RobertaModel

    folder.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False)
    torch.manual_seed(0)
    common = dict(vocab_size=len(words), max_position_embeddings=max(514, max_tokens + 2), **shape)
    if kind == "bert":
        model = BertModel(BertConfig(**common))
    else:
        model = RobertaModel(RobertaConfig(**common, pad_token_id=tok.pad_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _write_sst2(root: Path, n_train: int, n_dev: int, words: int, vocab: int) -> Path:
    """SST-2-format TSVs of random word sentences, long enough to fill max_length tokens."""
    rng = np.random.default_rng(0)
    d = root / "SST-2"
    d.mkdir(parents=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        rows = [" ".join(f"w{i}" for i in rng.integers(0, vocab, words)) + f"\t{rng.integers(0, 2)}\n"
                for _ in range(n)]
        (d / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    return root


def _round(be, pairs, params, steps: int, lr: float, state: dict):
    """One local_update on the samples of ``state`` (the same for every setup and repeat)."""
    import torch

    be.load_state_dict(state)
    if be.device.type == "cuda":
        torch.cuda.synchronize(be.device)
    t0 = time.perf_counter()
    res = be.local_update(pairs, params, steps, lr)  # returns numpy: the device has finished
    return time.perf_counter() - t0, res


def _max_abs(a, b) -> float:
    return max(float(np.abs(ua[k] - ub[k]).max()) for ua, ub in zip(a.updates, b.updates) for k in ua)


def _max_rel(a, b) -> float:
    # One scale for all tensors: LoRA's A moves ~1e-3 of B in the first steps (B = 0 at start),
    # so a per-tensor ratio reports bf16's rounding of those near-zero updates as 100 %.
    scale = max(float(np.abs(ua[k]).max()) for ua in a.updates for k in ua)
    return _max_abs(a, b) / max(scale, 1e-30)


def _markdown(meta: dict, rows: list[dict], dtypes: list[str]) -> str:
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    head = ["encoder", "P"]
    for dt in dtypes:
        head += [f"naive {short[dt]} s", f"batched {short[dt]} s", f"ratio {short[dt]}"]
    lines = [f"One federated round on {meta['device_name']} ({meta['device']}): P pairs x I = "
             f"{meta['steps']} SGD steps of batch {meta['batch']} at {meta['tokens']} tokens, LoRA "
             f"(ranks {', '.join(map(str, RANKS))}) on query/value in every block; seconds per round "
             f"(best of {meta['repeats']} after a warm-up).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(v, fmt):
        return "—" if v is None else (v if isinstance(v, str) else fmt.format(v))

    for r in rows:
        out = [r["encoder"], str(r["P"])]
        for dt in dtypes:
            c = r["cells"].get(dt, {})
            ratio = c["naive"] / c["batched"] if isinstance(c.get("naive"), float) and \
                isinstance(c.get("batched"), float) else None
            out += [cell(c.get("naive"), "{:.3f}"), cell(c.get("batched"), "{:.3f}"), cell(ratio, "{:.1f}x")]
        lines.append("| " + " | ".join(out) + " |")
    checks = [f"- {r['encoder']}, P = {r['P']}, {dt}: batched round repeated on the same samples, "
              f"max |Δ update| = {c['repeat_max_abs']:.3g}"
              for r in rows for dt, c in r["cells"].items() if "repeat_max_abs" in c]
    checks += [f"- {enc}: batched {dt} vs fp32 updates, max |Δ| / max |u| = {v:.3g}"
               for enc, d in meta.get("vs_fp32", {}).items() for dt, v in d.items()]
    longest = max(meta["setup_s"].items(), key=lambda kv: kv[1], default=None)
    setup = [f"- setup a cell (model load + prefix cache, not in the round times): at most "
             f"{longest[1]:.1f} s ({longest[0]})"] if longest else []
    return "\n".join(lines + [""] + checks + setup + [f"- total {meta['elapsed_s']:.0f} s"
                                                      + (f"; {meta['note']}" if meta.get("note") else "")]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="float32,bfloat16", help="comma-separated compute dtypes")
    ap.add_argument("--pairs", default=None, help="comma-separated P values (default 30,200; --quick 4)")
    ap.add_argument("--naive-pairs", type=int, default=None, help="P at which the naive loop runs (default: the smallest)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=None, help="tokens a sentence (default 64; --quick 16)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-pairs-per-pass", type=int, default=64)
    ap.add_argument("--encoders", default=None, help="comma-separated subset of the encoder names")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--max-seconds", type=float, default=480.0, help="time bound of the whole run")
    ap.add_argument("--quick", action="store_true", help="tiny encoders, P = 4: a CPU smoke test")
    ap.add_argument("--out", default=None, help="FILE.json (and FILE.md beside it)")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from fedopt.backends.base import ModuleSpec, PairBatch
    from fedopt.backends.lora import LoraBackend
    from fedopt.backends.lora_model import resolve_device
    from fedopt.config import SystemConfig
    from fedopt.errors import ConfigError
    from fedopt.population import draw_population

    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        print(f"lora_round: error: {exc}", file=sys.stderr)
        return 2
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    P_list = [int(p) for p in (args.pairs or ("4" if args.quick else "30,200")).split(",")]
    naive_P = args.naive_pairs or min(P_list)
    tokens = args.tokens or (16 if args.quick else 64)
    shapes = _shapes(args.quick)
    if args.encoders:
        shapes = {k: v for k, v in shapes.items() if k in args.encoders.split(",")}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {"device": str(device), "device_name": name, "torch": torch.__version__, "steps": args.steps,
            "batch": args.batch, "tokens": tokens, "repeats": args.repeats, "dtypes": dtypes,
            "setup_s": {}, "vs_fp32": {}, "quick": args.quick}
    rows: list[dict] = []

    def write() -> None:
        meta["elapsed_s"] = time.perf_counter() - start
        md = _markdown(meta, rows, dtypes)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            out.with_suffix(".md").write_text(md)
        return md

    def on_alarm(signum, frame):
        raise OutOfTime

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, args.max_seconds))
    tmp = Path(tempfile.mkdtemp(prefix="lora_round_"))
    vocab = 1000
    K_max = math.ceil(max(P_list) / len(RANKS))
    per_ue = 2 * args.steps * args.batch  # two rounds of samples a UE
    glue = _write_sst2(tmp / "glue", K_max * per_ue, 64, tokens + 8, vocab)
    specs = [ModuleSpec(i, r) for i, r in enumerate(RANKS)]
    print(f"lora_round: {name} ({device}), dtypes {', '.join(dtypes)}, P {P_list}, naive at P = {naive_P}, "
          f"{tokens} tokens, bound {args.max_seconds:.0f} s", flush=True)
    try:
        for enc, (kind, shape) in shapes.items():
            folder = _write_model(tmp / kind, kind, shape, vocab, tokens)
            ref_updates: dict = {}
            for P in P_list:
                row = {"encoder": enc, "P": P, "cells": {}}
                rows.append(row)
                K = math.ceil(P / len(RANKS))
                cfg = SystemConfig(K=K, batch=args.batch, data_min=per_ue, data_max=per_ue,
                                   local_steps=args.steps)
                pop = draw_population(cfg, 0)
                grid = [(k, m) for k in range(K) for m in range(len(RANKS))][:P]
                pairs = PairBatch(np.array([g[0] for g in grid]), np.array([g[1] for g in grid]))
                for dt in dtypes:
                    cell: dict = {}
                    row["cells"][dt] = cell
                    setups = ["batched"] + (["naive"] if P == naive_P else [])
                    for setup in setups:
                        if time.perf_counter() - start > args.max_seconds:
                            raise OutOfTime
                        print(f"  {enc}, P = {P}, {dt}, {setup} ...", end=" ", flush=True)
                        opts = dict(lora_path="fast") if setup == "batched" else \
                            dict(lora_path="reference", padding="max_length")
                        t0 = time.perf_counter()
                        be = LoraBackend(cfg, pop, 0, model=str(folder), data_dir=str(glue), device=str(device),
                                         dtype=dt, top_layers="all", max_length=tokens, progress=False,
                                         max_pairs_per_pass=args.max_pairs_per_pass, log=lambda m: None, **opts)
                        params = be.init_modules(specs)
                        state = be.state_dict()
                        meta["setup_s"][f"{enc} P={P} {dt} {setup}"] = time.perf_counter() - t0
                        _round(be, pairs, params, args.steps, 0.1, state)  # warm-up
                        best, res = math.inf, None
                        for _ in range(args.repeats):
                            t, r = _round(be, pairs, params, args.steps, 0.1, state)
                            if res is not None and setup == "batched":
                                cell["repeat_max_abs"] = max(cell.get("repeat_max_abs", 0.0), _max_abs(res, r))
                            best, res = min(best, t), r
                        cell[setup] = best
                        print(f"{best:.3f} s/round", flush=True)
                        if setup == "batched" and P == naive_P:
                            ref_updates[dt] = res
                        del be
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        write()
            if "float32" in ref_updates:
                meta["vs_fp32"][enc] = {dt: _max_rel(ref_updates["float32"], r)
                                        for dt, r in ref_updates.items() if dt != "float32"}
    except OutOfTime:
        meta["note"] = f"stopped at the {args.max_seconds:.0f} s bound: cells marked — did not run"
        print(f"\nlora_round: {meta['note']}", flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + write(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
