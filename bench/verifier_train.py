#!/usr/bin/env python
"""Benchmark of verifier training (editrl_engine.verifier_train): SFT and GCPO step time and trace-sampling
tokens/s, with the pair's shared prefix prefilled once and without (every rollout runs its whole prompt).

CPU: the tiny verifier (the `verifier` reward's preset) at 32² images. CUDA (the prepared GPU run): a Qwen2.5-VL-7B
sized verifier with random weights in bf16 at 512² (model preset qwen2.5-vl-7b, built on the device). Rows:
  sft            one SFT step (batch B traces): forward + backward + AdamW
  gcpo           one GCPO step (P pairs x 2N traces): sampling, old / reference log-probs, update
  sample-shared  2N traces of one pair from one prefilled prefix: tokens/s
  sample-whole   the same traces, every rollout running its whole prompt: tokens/s
Prints a table; writes bench/results/verifier-train-<device>.json atomically.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import (
    describe_device,
    finite_or_none,
    format_table,
    pick_device,
    results_file,
    synchronize,
    versions,
    write_json_atomic,
)
from PIL import Image

from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.verifier_train.config import load_verifier_config
from editrl_engine.verifier_train.data import PreferenceRow, SftRow, verdict_trace
from editrl_engine.verifier_train.model import Item
from editrl_engine.verifier_train.trainer import VerifierTrainer

PRINCIPLES = vp.as_principles(["follow: the red square is blue", "keep: every other shape", "quality: no artifacts"])
TRACE = verdict_trace(PRINCIPLES, [("pass", 9, ""), ("pass", 10, ""), ("partial", 6, "")], 8, "")
DEFAULTS = {"cuda": dict(preset="qwen2.5-vl-7b", dtype="bfloat16", size=512, batch=8, pairs=4, traces=8, tokens=128,
                         repeats=3),
            "cpu": dict(preset="tiny", dtype="float32", size=32, batch=8, pairs=2, traces=4, tokens=48, repeats=3)}
QUICK = dict(batch=2, pairs=1, traces=2, tokens=8, repeats=1)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, help="JSON file or directory (default: bench/results/)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, one repeat")
    return parser.parse_args(argv)


def image(seed: int, size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def timed(call, repeats: int, device) -> float:
    call()                                                               # warm-up
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    s = {**DEFAULTS[device.type], **(QUICK if args.quick else {})}
    log = lambda text: print(text, file=sys.stderr, flush=True)
    sft = [SftRow((image(i, s["size"]),), image(100 + i, s["size"]), "make the red square blue", PRINCIPLES, TRACE)
           for i in range(8)]
    prefs = [PreferenceRow((image(i, s["size"]),), "make the red square blue", PRINCIPLES, image(100 + i, s["size"]),
                           image(200 + i, s["size"])) for i in range(4)]
    with tempfile.TemporaryDirectory() as out:
        config = load_verifier_config(None, [
            f"model.preset='{s['preset']}'", f"model.dtype='{s['dtype']}'", f"model.device='{device}'",
            f"sft.batch={s['batch']}", f"gcpo.pairs={s['pairs']}", f"gcpo.traces={s['traces']}",
            f"gcpo.max_new_tokens={s['tokens']}", "sft.steps=1", "gcpo.steps=1", f"run.out_dir='{out}'"])
        log(f"building the {s['preset']} verifier on {device}")
        trainer = VerifierTrainer(config, sft_rows=sft, preference_rows=prefs)
        model, rows = trainer.model, []
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        steps = iter(range(1, 10_000))
        seconds = timed(lambda: trainer.sft_step(next(steps), optimizer), s["repeats"], device)
        rows.append({"mode": "sft", "seconds": seconds, "per_s": s["batch"] / seconds, "unit": "traces/s"})
        trainer.model.freeze_reference()
        record = {}
        seconds = timed(lambda: record.update(trainer.gcpo_step(next(steps), optimizer)), s["repeats"], device)
        rows.append({"mode": "gcpo", "seconds": seconds, "per_s": s["pairs"] * 2 * s["traces"] / seconds,
                     "unit": "traces/s", "trace_length": record.get("trace_length")})
        shared = Item(prefs[0].sources, None, prefs[0].instruction, PRINCIPLES)
        for mode, flag in (("sample-shared", True), ("sample-whole", False)):
            got = {}

            def sample(flag=flag, got=got):
                got["traces"] = model.sample_pair(shared, [prefs[0].preferred, prefs[0].rejected], s["traces"],
                                                  temperature=1.0, top_p=1.0, max_new_tokens=s["tokens"], seed=0,
                                                  shared_prefix=flag)
            seconds = timed(sample, s["repeats"], device)
            tokens = sum(len(t) for t in got["traces"].ids)
            rows.append({"mode": mode, "seconds": seconds, "per_s": tokens / seconds, "unit": "tokens/s",
                         "tokens": tokens})
    for row in rows:
        row.update({k: finite_or_none(v) for k, v in row.items() if isinstance(v, float)})
    info = describe_device(device)
    path = results_file(args.out, "verifier-train", info["slug"])
    write_json_atomic(path, {"benchmark": "verifier-train", "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "device": info, "versions": versions(), "config": {**s, "quick": args.quick},
        "method": "median of repeats after one warm-up; host clock after a device synchronize", "rows": rows,
        "notes": ["tiny model on CPU: its numbers say nothing about a 7B verifier on a GPU"]
        if device.type == "cpu" else []})
    print(format_table(["mode", "seconds", "rate", "unit"],
                       [[r["mode"], f"{r['seconds']:.3f}", f"{r['per_s']:.1f}", r["unit"]] for r in rows]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
