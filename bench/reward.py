#!/usr/bin/env python
"""Benchmark of the reward models (editrl_engine.reward): the logit reward's scoring paths and EditScore's Avg@K.

mllm_logit, for each backend (eager, compiled; one load_reward cannot build is a row with the reason):
  per-sample   one (source, instruction, edit) per call, as the reference reward servers run
  batched      the G candidates of one group in one score() call, no sharing
  group        score_groups(): the group's shared prefix (system, source image, instruction) prefilled once,
               its KV cache reused for all G candidates
editscore (Avg@K, K sampled passes of the SC and PQ judge calls, generation of a fixed token budget):
  sequential   one sample per score() call, one judge conversation per generate call (batch_size 1)
  batched      the G candidates in one score() call, all judge calls of a pass batched
  group        score_groups(), where EditScoreReward has one (else a row saying it has none)

Per row: pairs/s = pairs per call / median call time, and the p50 / p99 of the per-call latency (the time of
the whole call: image preprocessing, tokenizing, the forwards, the answer back on the host). Calls are timed on
the host clock after a device synchronize, after warm-up calls (which also compile). Inputs are random RGB
images (never zeros), a fresh edit per candidate.

On CUDA the model is Qwen2.5-VL-7B sized (editrl_engine.vlm.qwen2_5_vl.ModelConfig defaults: 28 layers, width
3584, a 32-block ViT) with random weights, bf16, built directly on the GPU; images are 512², capped at 512²
pixels of visual tokens. Its tokenizer is the small one made in code (the real vocabulary of 152 064 tokens
would add one 3584 x 152 064 LM-head product per generated token: about 7 % of a decode step; the logit reward
keeps only the answer position, so there it changes nothing measurable). On CPU the "tiny" preset (float32) at
128² images; the GPU targets are then "not evaluated" (passed: null).

Targets (CUDA, 7B-sized): shared-prefix group >= 1.8x batched throughput at G = 12; single-pair p50 <= 60 ms
(the fastest per-sample row); editscore Avg@4 group scoring >= 3x the sequential per-sample baseline.
Prints a table and the targets; writes bench/results/reward-<device>.json atomically.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import (
    built_on,
    busy_note,
    cpu_busy_fraction,
    describe_device,
    error_text,
    finite_or_none,
    format_table,
    pick_device,
    print_targets,
    results_file,
    synchronize,
    versions,
    write_json_atomic,
)
from PIL import Image

from editrl_engine.reward import load_reward

SEVEN_B_PRESET = "qwen2.5-vl-7b"               # ModelConfig's defaults: the published 7B sizes
DEFAULTS = {
    "cuda": dict(model=SEVEN_B_PRESET, dtype="bfloat16", image_size=512, group=12, single_calls=50, group_calls=20,
                 editscore_passes=4, editscore_tokens=64, sequential_samples=4, warmup=3, remote_groups=8,
                 remote_calls=3),
    "cpu": dict(model="tiny", dtype="float32", image_size=128, group=12, single_calls=30, group_calls=10,
                editscore_passes=4, editscore_tokens=32, sequential_samples=4, warmup=2, remote_groups=4,
                remote_calls=5),
}
QUICK = dict(model="tiny", dtype="float32", image_size=64, group=4, single_calls=3, group_calls=2, editscore_passes=2,
             editscore_tokens=4, sequential_samples=1, warmup=1, remote_groups=2, remote_calls=2)
BACKENDS = ("eager", "compiled")              # measured by default
OPTIONAL_BACKENDS = ("onnx", "tensorrt")      # on request (--backends)
INSTRUCTION = "Replace the red cube with a blue sphere and keep the background unchanged."
GROUP_OVER_BATCHED_TARGET = 1.8
SINGLE_P50_TARGET_MS = 60.0
EDITSCORE_GROUP_TARGET = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto picks CUDA when torch sees a GPU (default: auto)")
    parser.add_argument("--model", choices=("tiny", SEVEN_B_PRESET),
                        help="Qwen2.5-VL with random weights (default: the 7B-sized one on CUDA, tiny on CPU)")
    parser.add_argument("--group", type=int, help="candidates per group, G (default: 12)")
    parser.add_argument("--image-size", type=int, help="square image side in pixels (default: 512 CUDA, 128 CPU)")
    parser.add_argument("--backends", type=lambda text: text.split(","), default=list(BACKENDS),
                        help=f"comma-separated mllm_logit backends (default: {','.join(BACKENDS)}; also "
                             f"{','.join(OPTIONAL_BACKENDS)})")
    parser.add_argument("--skip-editscore", action="store_true", help="measure only the logit reward")
    parser.add_argument("--skip-remote", action="store_true", help="no remote rows (the judge over HTTP)")
    parser.add_argument("--out", type=Path, help="JSON file, or a directory to write reward-<device>.json into "
                                                 "(default: bench/results/reward-<device>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: tiny model, 64² images, G = 4, 1-3 calls per row, eager only, "
                             "editscore Avg@2 with 4 new tokens")
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in BACKENDS + OPTIONAL_BACKENDS]
    if unknown:
        parser.error(f"unknown backend: {', '.join(unknown)}")
    return args


def settings(args: argparse.Namespace, device: torch.device) -> dict:
    chosen = dict(QUICK if args.quick else DEFAULTS[device.type])
    chosen.update({k: v for k, v in dict(model=args.model, group=args.group, image_size=args.image_size).items()
                   if v is not None})
    chosen["backends"] = ["eager"] if args.quick else args.backends
    chosen["dtype"] = getattr(torch, chosen["dtype"])
    return chosen


def load(kind: str, config: dict, device: torch.device, backend: str = "eager", **options):
    with built_on(device, config["dtype"]):
        return load_reward(kind, preset=config["model"], device=device, dtype=config["dtype"], backend=backend,
                           **options)


def random_images(count: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def time_each_call(call, pairs: int, calls: int, warmup: int, device: torch.device) -> dict:
    """Latency of every call (host clock, device synchronized): pairs/s from the median, p50 and p99."""
    for i in range(warmup):
        call(i)
    synchronize(device)
    samples = []
    for i in range(calls):
        begin = time.perf_counter()
        call(warmup + i)
        synchronize(device)
        samples.append((time.perf_counter() - begin) * 1e3)
    p50 = statistics.median(samples)
    return {"pairs_per_call": pairs, "calls": calls, "p50_ms": p50, "p99_ms": float(np.percentile(samples, 99)),
            "min_ms": min(samples), "pairs_per_s": pairs / p50 * 1e3, "error": None}


def row(reward: str, backend: str, mode: str, **fields) -> dict:
    base = {"reward": reward, "backend": backend, "mode": mode, "pairs_per_call": None, "calls": None,
            "p50_ms": None, "p99_ms": None, "min_ms": None, "pairs_per_s": None, "error": None}
    return {**base, **fields}


def logit_rows(config: dict, device: torch.device, rng: np.random.Generator, log) -> list[dict]:
    g, size, warmup = config["group"], config["image_size"], config["warmup"]
    # rotate over a few input sets so no call sees the images of the one before
    sets = [(random_images(1, size, rng)[0], random_images(g, size, rng)) for _ in range(3)]
    rows = []
    for backend in config["backends"]:
        log(f"mllm_logit {backend}: loading {config['model']}")
        try:
            reward = load("mllm_logit", config, device, backend, batch_size=g)
        except Exception as exc:  # a backend that cannot be built here is a row with its reason
            rows.append(row("mllm_logit", backend, "all", error=error_text(exc)))
            continue

        def per_sample(i, reward=reward):
            source, edits = sets[i % 3]
            reward.score([source], [INSTRUCTION], [edits[i % g]])

        def batched(i, reward=reward):
            source, edits = sets[i % 3]
            reward.score([source] * g, [INSTRUCTION] * g, edits)

        def group(i, reward=reward):
            source, edits = sets[i % 3]
            reward.score_groups([source], [INSTRUCTION], [edits])

        for mode, call, pairs, calls in (("per-sample", per_sample, 1, config["single_calls"]),
                                         ("batched", batched, g, config["group_calls"]),
                                         ("group", group, g, config["group_calls"])):
            log(f"mllm_logit {backend} {mode}")
            try:
                rows.append(row("mllm_logit", backend, mode, **time_each_call(call, pairs, calls, warmup, device)))
            except Exception as exc:
                rows.append(row("mllm_logit", backend, mode, error=error_text(exc)))
        del reward
    return rows


def served_rows(config: dict, device: torch.device, rng: np.random.Generator, log) -> list[dict]:
    """The logit judge served by `editrl serve` on loopback and scored over HTTP (reward_remote.py)."""
    from reward_remote import remote_rows
    g, size = config["group"], config["image_size"]
    sets = [(random_images(1, size, rng)[0], random_images(g, size, rng)) for _ in range(4)]
    try:
        judge = load("mllm_logit", config, device, "eager", batch_size=g)
    except Exception as exc:
        return [row("mllm_logit", "remote", "all", error=error_text(exc))]
    timer = lambda call, pairs, calls, warmup, _: time_each_call(call, pairs, calls, warmup, device)
    return remote_rows(judge, config, sets, timer, row, error_text, log)


def editscore_rows(config: dict, device: torch.device, rng: np.random.Generator, log) -> list[dict]:
    g, k, n_seq = config["group"], config["editscore_passes"], config["sequential_samples"]
    label = f"avg@{k}"
    log(f"editscore {label}: loading {config['model']}")
    try:
        reward = load("editscore", config, device, passes=k, max_new_tokens=config["editscore_tokens"], batch_size=1)
    except Exception as exc:
        return [row("editscore", label, "all", error=error_text(exc))]
    source, edits = random_images(1, config["image_size"], rng)[0], random_images(g, config["image_size"], rng)
    rows = []

    def sequential(_):
        reward.batch_size = 1
        for edit in edits[:n_seq]:
            reward.score([source], [INSTRUCTION], [edit])

    def batched(_):
        reward.batch_size = 2 * g
        reward.score([source] * g, [INSTRUCTION] * g, edits)

    def group(_):
        reward.batch_size = 2 * g
        reward.score_groups([source], [INSTRUCTION], [edits])

    modes = [("sequential", sequential, n_seq), ("batched", batched, g)]
    if reward.shares_prefix:
        modes.append(("group", group, g))
    else:
        rows.append(row("editscore", label, "group", error="not available: this EditScoreReward has no shared-prefix "
                        "path (shares_prefix is False: no VLM of its own to hold the prefix cache)"))
    for mode, call, pairs in modes:
        log(f"editscore {label} {mode}")
        try:
            timing = time_each_call(call, pairs, 1 if mode == "sequential" else 2, 1, device)
            rows.append(row("editscore", label, mode, **timing))
        except Exception as exc:
            rows.append(row("editscore", label, mode, error=error_text(exc)))
    return sorted(rows, key=lambda r: ["sequential", "batched", "group"].index(r["mode"]))


def find(rows: list[dict], reward: str, mode: str, backend: str | None = None) -> list[dict]:
    return [r for r in rows if r["reward"] == reward and r["mode"] == mode and r["error"] is None
            and (backend is None or r["backend"] == backend)]


def evaluate_targets(rows: list[dict], device: torch.device, model: str) -> list[dict]:
    on_gpu = device.type == "cuda" and model == SEVEN_B_PRESET
    unevaluated = None if on_gpu else "not evaluated on CPU (tiny model)" if device.type == "cpu" else \
        "not evaluated: not the 7B-sized model"
    best = lambda found, key, pick: pick(r[key] for r in found) if found else None
    group, batched = find(rows, "mllm_logit", "group", "eager"), find(rows, "mllm_logit", "batched", "eager")
    group_size = group[0]["pairs_per_call"] if group else "-"
    ratio = group[0]["pairs_per_s"] / batched[0]["pairs_per_s"] if group and batched else None
    single = best(find(rows, "mllm_logit", "per-sample"), "p50_ms", min)
    es_group, es_seq = find(rows, "editscore", "group"), find(rows, "editscore", "sequential")
    es_ratio = es_group[0]["pairs_per_s"] / es_seq[0]["pairs_per_s"] if es_group and es_seq else None
    es_missing = next((r["error"] for r in rows if r["reward"] == "editscore" and r["mode"] == "group"
                       and r["error"]), None)
    targets = [
        dict(target=f"mllm_logit group / batched throughput (eager, G = {group_size})",
             measured=ratio, required=f">= {GROUP_OVER_BATCHED_TARGET}x", op=lambda v: v >= GROUP_OVER_BATCHED_TARGET),
        dict(target="mllm_logit single-pair p50 (fastest per-sample row)", measured=single,
             required=f"<= {SINGLE_P50_TARGET_MS} ms", op=lambda v: v <= SINGLE_P50_TARGET_MS),
        dict(target="editscore Avg@K group / sequential per-sample throughput", measured=es_ratio,
             required=f">= {EDITSCORE_GROUP_TARGET}x", op=lambda v: v >= EDITSCORE_GROUP_TARGET,
             cannot=f"cannot be evaluated yet: {es_missing}" if es_missing else None),
    ]
    out = []
    for t in targets:
        op, cannot = t.pop("op"), t.pop("cannot", None)
        measured = finite_or_none(t["measured"])
        note = cannot or unevaluated or (None if measured is not None else "not measured (a row failed)")
        passed = bool(op(measured)) if note is None else None
        out.append({**t, "measured": measured, "passed": passed, "note": note})
    return out


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def rows_table(rows: list[dict]) -> str:
    headers = ["reward", "backend", "mode", "pairs/call", "pairs/s", "p50 ms", "p99 ms", "prefix hit/miss", "error"]
    body = [[r["reward"], r["backend"], r["mode"], fmt(r["pairs_per_call"]), fmt(r["pairs_per_s"]), fmt(r["p50_ms"]),
             fmt(r["p99_ms"]), f"{r['prefix_hits']}/{r['prefix_misses']}" if "prefix_hits" in r else "",
             (r["error"] or "")[:70]] for r in rows]
    return format_table(headers, body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    config = settings(args, device)
    log = lambda text: print(text, file=sys.stderr, flush=True)
    busy = cpu_busy_fraction() if device.type == "cpu" else None
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    rows = logit_rows(config, device, rng, log)
    if not args.skip_remote:
        rows += served_rows(config, device, rng, log)
    if not args.skip_editscore:
        rows += editscore_rows(config, device, rng, log)
    for r in rows:
        r.update({k: finite_or_none(v) for k, v in r.items() if isinstance(v, float)})

    notes = []
    if device.type == "cpu":
        notes.append("CPU run with the tiny model: the GPU targets are not evaluated on CPU (tiny model); its "
                     "numbers say nothing about a 7B model on a GPU")
    if busy is not None:
        notes.append(busy_note(busy))
    if args.quick:
        notes.append("--quick: a smoke run (tiny model, 1-3 calls per row, eager only); its numbers are not a "
                     "benchmark")
    device_info = describe_device(device)
    out = results_file(args.out, "reward", device_info["slug"])
    report = {
        "benchmark": "reward", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info, "versions": versions(), "cpu_busy_fraction": finite_or_none(busy),
        "config": {**{k: v for k, v in config.items() if k != "dtype"},
                   "dtype": str(config["dtype"]).removeprefix("torch."), "quick": args.quick,
                   "instruction": INSTRUCTION},
        "method": {"timer": "time.perf_counter after a device synchronize, per call",
                   "statistic": "median (p50), p99 (from 10-50 calls: close to the slowest call); "
                                "pairs/s = pairs per call / p50", "warmup_calls": config["warmup"],
                   "editscore": "fixed max_new_tokens per judge call; random weights rarely stop early"},
        "rows": rows, "targets": evaluate_targets(rows, device, config["model"]), "notes": notes,
    }
    write_json_atomic(out, report)

    print(f"reward models: {config['model']} on {device_info['name']}, {report['config']['dtype']}, "
          f"{config['image_size']}² images, G = {config['group']}")
    print(rows_table(rows))
    print("\n".join(f"note: {note}" for note in notes))
    print_targets(report["targets"], fmt)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
