#!/usr/bin/env python
"""Benchmark of rollouts (editrl_engine.policy.samplers) per policy family, and of the edit-data loaders.

Rollouts. A policy with random weights samples B images of one (source, instruction) pair, for each family of
--family (FAMILIES below; each with its tiny preset on CPU and its released sizes on CUDA; the families that take
several reference images are measured with 1 and 2 references):
  grpo   Flow-GRPO: an SDE step (ops.sde_step, noise_level 0.9) at every step but the last, log-probs kept
  nft    DiffusionNFT: deterministic DPM-Solver++(2M), only x0 kept
for every attention backend that runs here (editrl_engine.policy.attention; one that cannot run is a row with
the reason), eager and with torch.compile of the transformer blocks, at each image size. On CUDA the model is
FLUX.1-Kontext-dev sized (12 B transformer, bf16) at 512² and 1024²; on CPU it is the "tiny" preset (float32) at
small sizes, and the GPU targets below are not evaluated there.

Per row: images/s of the whole rollout (noise, every velocity call, the SDE / solver steps, bookkeeping); each
transformer forward inside it, timed by hooks on the transformer; forward share = the forwards' time / the
rollout's time in the same (median) rollout, and "non-fwd %" = what is left (the sampler's own work, Kontext's
concatenation and slicing, host overhead and stalls); forward TFLOP/s = FLOPs of one forward (counted with
torch.utils.flop_counter on the math attention kernel, so every backend is credited with the same work) / the
median forward time, and "% matmul" compares it with a large matmul measured in the same run and dtype.
Targets (CUDA, FLUX.1-Kontext-dev sized rows): the best backend's non-forward share < 3 % of rollout time at each
size; forward >= 60 % of the measured bf16 matmul throughput at 1024² with the best backend.

Loaders. Decoded images/s of editrl_engine.data's EditLoader (read, check, decode, resize, collate) with the
"pillow" and "dali" backends on the CPU, over JPEGs this script writes (editrl_engine.data.throughput).

Timing: a warm-up rollout (which also compiles), then --repeats rollouts, the median reported; CUDA events on a
GPU, time.perf_counter on CPU; the matmul ceiling with bench/common.py's time_calls. Prints tables and the
targets' verdicts; writes bench/results/rollout-<device>.json atomically (--merge keeps the rows of an earlier
run on the same device that this run did not measure). The full CPU run takes about 5 minutes of CPU time on
2 cores, most of it torch.compile. A GPU run with every backend compiled at both sizes takes longer than one
10-minute command may; split it, e.g. `--sizes 512 --compile eager`, then `--sizes 1024 --compile eager --merge`,
then `--compile compile --attention cudnn,flash --merge` (each compiled backend and size compiles anew).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import (
    cpu_busy_fraction,
    describe_device,
    error_text,
    finite_or_none,
    format_table,
    matmul_ceiling,
    pick_device,
    print_targets,
    results_file,
    synchronize,
    versions,
    write_json_atomic,
)

from editrl_engine.policy import attention, samplers

DEFAULTS = {  # per device type: model preset, dtype, image sizes, images per rollout (per size), repeats
    "cuda": dict(model="full", dtype="bfloat16", sizes=[512, 1024], batch={512: 8, 1024: 2},
                 repeats=3),
    "cpu": dict(model="tiny", dtype="float32", sizes=[64, 128], batch={64: 4, 128: 4}, repeats=3),
}
QUICK = dict(model="tiny", sizes=[32], batch=2, steps=3, repeats=1)
# family -> its released sizes' preset, its tiny preset, the reference counts measured, the smallest image side
FAMILIES = {
    "flux-kontext": dict(full="flux.1-kontext-dev", tiny="tiny", references=(1,), min_size=16),
    "qwen-image-edit-plus": dict(full="qwen-image-edit-2509", tiny="tiny", references=(1, 2), min_size=32),
    "flux2": dict(full="flux.2-klein-4b", tiny="tiny", references=(1, 2), min_size=64),
}
ROLLOUTS = ("grpo", "nft")
GRPO_NOISE_LEVEL = 0.9          # Flow-GRPO's value for FLUX / Kontext
NON_FORWARD_TARGET_PCT = 3.0
MATMUL_TARGET_PCT = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto picks CUDA when torch sees a GPU (default: auto)")
    parser.add_argument("--model", choices=("tiny", "full", "flux.1-kontext-dev"),
                        help="presets with random weights: tiny, or full (each family's released sizes; "
                             "flux.1-kontext-dev is the same) (default: full on CUDA, tiny on CPU)")
    parser.add_argument("--family", type=lambda text: text.split(","), default=[],
                        help=f"comma-separated policy families: {','.join(FAMILIES)} (default: all on CPU, "
                             "flux-kontext on CUDA, where each released-size model takes minutes to build)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="weights and compute dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")],
                        help="comma-separated square image sizes in pixels (default: 512,1024 on CUDA, 64,128 on CPU)")
    parser.add_argument("--batch", type=int, help="images per rollout (default: 8 at 512², 2 at 1024² on CUDA; 4 on "
                                                  "CPU)")
    parser.add_argument("--steps", type=int, default=6, help="sampling steps per rollout (default: 6, UniWorld-V2's)")
    parser.add_argument("--rollouts", type=lambda text: text.split(","), default=list(ROLLOUTS),
                        help=f"comma-separated subset of: {','.join(ROLLOUTS)} (default: all)")
    parser.add_argument("--attention", type=lambda text: text.split(","), default=list(attention.BACKENDS),
                        help=f"comma-separated attention backends (default: all of {','.join(attention.BACKENDS)}; "
                             "those that cannot run here become rows with the reason)")
    parser.add_argument("--compile", type=lambda text: text.split(","), default=["eager", "compile"],
                        help="comma-separated subset of: eager,compile (default: both)")
    parser.add_argument("--repeats", type=int, help="timed rollouts per row, the median is reported (default: 3)")
    parser.add_argument("--loader-images", type=int, default=64,
                        help="JPEGs written for the loader benchmark (default: 64; 0 skips the loaders)")
    parser.add_argument("--out", type=Path,
                        help="JSON file to write, or a directory to write rollout-<device>.json into "
                             "(default: bench/results/rollout-<device>.json)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of the existing output file (same device) that this run does not measure")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in about a minute: tiny model at 32², batch 2, 3 steps, 1 repeat, eager, "
                             "the loaders on 16 small images")
    args = parser.parse_args(argv)
    unknown = [r for r in args.rollouts if r not in ROLLOUTS] + [f for f in args.family if f not in FAMILIES] + \
              [b for b in args.attention if b not in attention.BACKENDS] + \
              [c for c in args.compile if c not in ("eager", "compile")]
    if unknown:
        parser.error(f"unknown rollout, family, attention backend or compile mode: {', '.join(unknown)}")
    return args


def settings(args: argparse.Namespace, device: torch.device) -> dict:
    """The run's model, dtype, sizes, batch per size, steps, repeats: the options, else the device's defaults."""
    base = DEFAULTS[device.type]
    chosen = dict(model={"flux.1-kontext-dev": "full"}.get(args.model, args.model) or base["model"],
                  dtype=getattr(torch, args.dtype or base["dtype"]),
                  families=args.family or (list(FAMILIES) if device.type == "cpu" else ["flux-kontext"]),
                  sizes=args.sizes or base["sizes"], steps=args.steps, repeats=args.repeats or base["repeats"],
                  compile=args.compile, attention=args.attention)
    chosen["batch"] = {s: args.batch or base["batch"].get(s, min(base["batch"].values())) for s in chosen["sizes"]}
    if args.quick:
        chosen.update(model=args.model or QUICK["model"], sizes=args.sizes or QUICK["sizes"], steps=QUICK["steps"],
                      repeats=QUICK["repeats"], compile=["eager"])
        chosen["batch"] = {s: args.batch or QUICK["batch"] for s in chosen["sizes"]}
        chosen["attention"] = [b for b in ("sdpa", "math") if b in args.attention] or args.attention[:1]
    return chosen


# ---------------------------------------------------------------------------------------------------------
# ceilings and FLOPs
# ---------------------------------------------------------------------------------------------------------
class ForwardTimer:
    """Times every transformer forward inside a rollout (CUDA events on a GPU, perf_counter on CPU) and keeps
    the first forward's inputs (to count its FLOPs)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device, self.args, self.kwargs = device, None, None
        self._spans, self._open = [], None
        self._handles = [module.register_forward_pre_hook(self._start, with_kwargs=True),
                         module.register_forward_hook(self._end)]

    def now(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed_ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.device.type == "cuda" else (end - start) * 1e3

    def _start(self, _module, args, kwargs):
        if self.kwargs is None:
            self.args, self.kwargs = args, dict(kwargs)
        self._open = self.now()

    def _end(self, _module, _args, _output):
        self._spans.append((self._open, self.now()))

    def take_ms(self) -> list[float]:
        """The forwards timed since the last call, in ms (call after synchronising the device)."""
        spans, self._spans = self._spans, []
        return [self.elapsed_ms(start, end) for start, end in spans]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def first_row(value, batch: int):
    """Row 0 of every tensor with a leading batch dimension (shared tensors, e.g. position ids, unchanged)."""
    return value[:1] if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch else value


@torch.no_grad()
def forward_flops(policy, timer: ForwardTimer, batch: int, image_size: int) -> float:
    """FLOPs of one transformer forward over the recorded inputs: counted on one image with the math attention
    kernel (which runs as countable matmuls), times the batch."""
    from torch.utils.flop_counter import FlopCounterMode
    backend = policy.attention_backend
    set_backend(policy, "math", image_size)
    try:
        args = [first_row(a, batch) for a in timer.args]
        kwargs = {k: first_row(v, batch) for k, v in timer.kwargs.items()}
        with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
            policy.transformer(*args, **kwargs)                 # compiled blocks run their eager code here
        return float(counter.get_total_flops()) * batch
    finally:
        set_backend(policy, backend, image_size)


# ---------------------------------------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------------------------------------
def rollout_call(kind: str, policy, cond, batch: int, steps: int):
    if kind == "grpo":
        return lambda i: samplers.grpo_rollout(policy, cond, group_size=batch, num_steps=steps, seed=1000 * i,
                                               noise_level=GRPO_NOISE_LEVEL)
    return lambda i: samplers.nft_rollout(policy, cond, group_size=batch, num_steps=steps, seed=1000 * i)


def time_rollouts(run, timer: ForwardTimer, device: torch.device, repeats: int) -> list[dict]:
    """Each rollout timed whole, with the forwards inside it timed one by one (a rollout lasts long enough that
    the host's launch latency does not matter, so no cache scrub or device spin as in common.time_calls)."""
    samples = []
    for k in range(repeats):
        synchronize(device)
        start = timer.now()
        run(k)
        end = timer.now()
        synchronize(device)
        forwards = timer.take_ms()
        samples.append({"rollout_ms": timer.elapsed_ms(start, end), "forward_ms": forwards})
    return samples


def measure_row(policy, cond, kind: str, size: int, batch: int, steps: int, repeats: int, device: torch.device,
                flops_cache: dict) -> dict:
    run = rollout_call(kind, policy, cond, batch, steps)
    timer = ForwardTimer(policy.transformer, device)
    try:
        run(0)                                                   # warm-up (and compilation)
        synchronize(device)
        timer.take_ms()
        samples = time_rollouts(run, timer, device, repeats)
    finally:
        timer.remove()
    median = sorted(samples, key=lambda s: s["rollout_ms"])[len(samples) // 2]
    forward_ms = statistics.median(ms for s in samples for ms in s["forward_ms"])
    if size not in flops_cache:
        flops_cache[size] = forward_flops(policy, timer, batch, size) / batch
    flops = flops_cache[size] * batch
    share = sum(median["forward_ms"]) / median["rollout_ms"]
    return {"rollout_ms": median["rollout_ms"], "images_per_s": batch / median["rollout_ms"] * 1e3,
            "forward_ms": forward_ms, "forwards_per_rollout": len(median["forward_ms"]),
            "forward_share_pct": 100 * share, "non_forward_pct": 100 * (1 - share), "forward_flops": flops,
            "forward_tflops": flops / forward_ms / 1e9}


def random_sources(size: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8) for _ in range(count)]


def set_backend(policy, backend: str, size: int) -> None:
    """Route the transformer through `backend`, probed at size x size (the Qwen families probe at target_area)."""
    if policy.family.startswith("qwen-image-edit"):
        policy.target_area = size * size
        policy.set_attention(backend)
    else:
        policy.set_attention(backend, (size, size))


def load_family(family: str, model: str, device: torch.device, dtype: torch.dtype, attention_backend: str):
    """The family's policy with random weights: its tiny preset, or its released sizes (model "full")."""
    from editrl_engine.policy import load_policy
    return load_policy(family, preset=FAMILIES[family]["tiny" if model == "tiny" else "full"], device=device,
                       dtype=dtype, attention=attention_backend)


def encode_at(policy, size: int, references: int):
    """One (source, instruction) pair of `references` source images, edited at size x size."""
    sources = random_sources(size, references, size)
    if policy.family == "flux-kontext":
        return policy.encode(sources[:1], ["turn the red square blue"], size=(size, size))
    if policy.family == "qwen-image-edit-plus":
        policy.target_area = policy.reference_area = size * size
    return policy.encode([sources if references > 1 else sources[0]], ["turn the red square blue"])


def run_rollouts(config: dict, device: torch.device, log) -> tuple[list[dict], dict]:
    rows, metadata = [], {}
    for family in config["families"]:
        spec = FAMILIES[family]
        try:
            policy = load_family(family, config["model"], device, config["dtype"], "math" if device.type == "cpu"
                                 else "sdpa")                         # each row then sets its own backend
        except Exception as exc:  # a family that cannot be built here is a row with the reason
            rows.append({"family": family, "references": 1, "size": 0, "attention": "-", "compile": "-",
                         "rollout": "-", "batch": 0, "steps": config["steps"], "error": error_text(exc)})
            continue
        log(f"built {family} {config['model']} ({sum(p.numel() for p in policy.transformer.parameters()) / 1e6:.1f} M "
            f"transformer parameters, {str(config['dtype']).removeprefix('torch.')}) on {device}")
        sizes = [size for size in config["sizes"] if size >= spec["min_size"]]
        rows += family_rows(policy, config, sizes, spec["references"], device, log)
        metadata[family] = policy.metadata()
        del policy
    return rows, metadata


def family_rows(policy, config: dict, sizes: list[int], references: tuple[int, ...], device: torch.device,
                log) -> list[dict]:
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)  # a graph per backend
    conds = {(size, k): encode_at(policy, size, k) for size in sizes for k in references}
    rows, flops_cache = [], {}
    for mode in config["compile"]:
        if mode == "compile":
            policy.compile_transformer(dynamic=False)
        for (size, k), cond in conds.items():
            batch = config["batch"][size]
            for backend in config["attention"]:
                base = {"family": policy.family, "references": k, "size": size, "attention": backend,
                        "compile": mode, "batch": batch, "steps": config["steps"], "tokens": cond.latent_shape[0]}
                try:
                    set_backend(policy, backend, size)
                except RuntimeError as exc:
                    rows += [{**base, "rollout": kind, "error": f"cannot run here: {error_text(exc)}"}
                             for kind in config["rollouts"]]
                    continue
                for kind in config["rollouts"]:
                    log(f"  {policy.family} x{k} {mode} {size}² {backend} {kind} x{batch}")
                    try:
                        measured = measure_row(policy, cond, kind, size, batch, config["steps"], config["repeats"],
                                               device, flops_cache.setdefault(k, {}))
                        rows.append({**base, "rollout": kind, **measured, "error": None})
                    except Exception as exc:  # a failing backend or compile is a row, not the end of the run
                        rows.append({**base, "rollout": kind, "error": error_text(exc)})
    return rows


# ---------------------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------------------
def write_jpegs(folder: Path, count: int, height: int, width: int) -> list:
    """`count` JPEGs of smooth colour fields with a few shapes (decode cost like photos, not like noise)."""
    from PIL import Image, ImageDraw

    from editrl_engine.data.manifest import EditRow
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    rows = []
    for k in range(count):
        phase = rng.uniform(0, 6.3, 3)
        pixels = np.stack([127 + 120 * np.sin(3 * xx + 2 * yy + p) for p in phase], -1).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.integers(0, width - 64), rng.integers(0, height - 64)
            draw.ellipse([x0, y0, x0 + 60, y0 + 60], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        path = folder / f"{k:04d}.jpg"
        image.save(path, quality=90)
        rows.append(EditRow(id=f"img{k}", source=path, instruction="recolour the circle"))
    return rows


def run_loaders(count: int, quick: bool, log) -> list[dict]:
    from editrl_engine.data.throughput import measure_loader
    height, width, size, batch, batches = (256, 320, 128, 4, 2) if quick else (768, 1024, 512, 16, 8)
    results = []
    with tempfile.TemporaryDirectory(prefix="editrl-loader-bench-") as folder:
        rows = write_jpegs(Path(folder), count, height, width)
        for backend in ("pillow", "dali"):
            log(f"  loader {backend}: {count} JPEGs {width}x{height} -> {size}²")
            base = {"backend": backend, "device": "cpu", "source": f"{width}x{height} JPEG q90", "size": size,
                    "batch_size": batch}
            try:
                timing = measure_loader(rows, backend=backend, batch_size=batch, size=size, num_batches=batches,
                                        warmup_batches=1, device="cpu")
                results.append({**base, "images": timing.images, "seconds": timing.seconds,
                                "images_per_s": timing.images_per_s, "skipped": timing.skipped, "error": None})
            except Exception as exc:  # DALI missing or failing is a row with the reason
                results.append({**base, "error": error_text(exc)})
    return results


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
def add_ceiling_share(rows: list[dict], ceiling_tflops: float) -> None:
    for row in rows:
        if row.get("error") is None and "forward_tflops" in row:
            row["pct_of_matmul"] = 100 * row["forward_tflops"] / ceiling_tflops


def describe_row(row: dict | None) -> str:
    return "" if row is None else f": {row['attention']} {row['compile']} {row['rollout']}"


def evaluate_targets(rows: list[dict], device: torch.device, model: str) -> list[dict]:
    """The GPU targets; passed = null (not evaluated) off CUDA or with a model that is not FLUX-sized."""
    evaluated = device.type == "cuda" and model == "full"
    not_evaluated = None if evaluated else ("GPU target: not evaluated on CPU (tiny model)" if device.type != "cuda"
                                            else f"not evaluated with the {model!r} model")
    rows = [r for r in rows if r.get("family", "flux-kontext") == "flux-kontext"]   # the targets are Kontext's
    ok = [r for r in rows if r.get("error") is None]
    targets = []
    for size in sorted({r["size"] for r in rows}):
        best = max((r for r in ok if r["size"] == size), key=lambda r: r["images_per_s"], default=None)
        value = None if best is None else best["non_forward_pct"]
        targets.append({
            "target": f"{size}²: non-forward share of rollout time < {NON_FORWARD_TARGET_PCT:g} % (fastest row"
                      f"{describe_row(best)})",
            "measured": finite_or_none(value), "required": f"< {NON_FORWARD_TARGET_PCT:g}",
            "passed": None if not evaluated or value is None else value < NON_FORWARD_TARGET_PCT,
            "note": not_evaluated})
    best = max((r for r in ok if r["size"] == 1024), key=lambda r: r.get("pct_of_matmul", 0), default=None)
    value = None if best is None else best.get("pct_of_matmul")
    targets.append({
        "target": f"1024²: transformer forward >= {MATMUL_TARGET_PCT:g} % of the measured matmul throughput (best "
                  f"row{describe_row(best)})",
        "measured": finite_or_none(value), "required": f">= {MATMUL_TARGET_PCT:g}",
        "passed": None if not evaluated or value is None else value >= MATMUL_TARGET_PCT,
        "note": not_evaluated or (None if best is not None else "no 1024² row measured")})
    return targets


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rollout_table(rows: list[dict]) -> str:
    headers = ["family", "refs", "size", "attention", "compile", "rollout", "batch", "img/s", "rollout ms", "fwd ms",
               "fwd/rollout", "non-fwd %", "TFLOP/s", "% matmul", "error"]
    body = [[r.get("family", "flux-kontext"), str(r.get("references", 1)), str(r["size"]), r["attention"],
             r["compile"], r["rollout"], str(r["batch"]),
             fmt(r.get("images_per_s"), 2), fmt(r.get("rollout_ms")), fmt(r.get("forward_ms"), 2),
             str(r.get("forwards_per_rollout", "-")), fmt(r.get("non_forward_pct")), fmt(r.get("forward_tflops"), 3),
             fmt(r.get("pct_of_matmul")), (r["error"] or "")[:60]] for r in rows]
    return format_table(headers, body)


def loader_table(rows: list[dict]) -> str:
    headers = ["loader", "device", "source", "size", "batch", "img/s", "error"]
    body = [[r["backend"], r["device"], r["source"], str(r["size"]), str(r["batch_size"]),
             fmt(r.get("images_per_s")), (r["error"] or "")[:60]] for r in rows]
    return format_table(headers, body)


def merged(previous: dict | None, rows: list[dict], loaders: list[dict]) -> tuple[list[dict], list[dict]]:
    """This run's rows plus the earlier run's rows with other keys (only with --merge, same device)."""
    if previous is None:
        return rows, loaders
    key = lambda r: (r.get("family", "flux-kontext"), r.get("references", 1), r["size"], r["attention"], r["compile"],
                     r["rollout"])
    mine = {key(r) for r in rows}
    kept = [r for r in previous.get("rows", []) if key(r) not in mine]
    return kept + rows, loaders or previous.get("loaders", [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    config = settings(args, device)
    config["rollouts"] = args.rollouts
    log = lambda text: print(text, file=sys.stderr, flush=True)
    busy = cpu_busy_fraction() if device.type == "cpu" else None
    torch.manual_seed(0)

    rows, policy_metadata = run_rollouts(config, device, log)
    n = 512 if args.quick else (8192 if device.type == "cuda" else 2048)
    ceiling = matmul_ceiling(device, config["dtype"], n, repeats=5 if device.type == "cpu" else 20)
    loaders = run_loaders(16 if args.quick else args.loader_images, args.quick, log) if args.loader_images else []

    device_info = describe_device(device)
    out = results_file(args.out, "rollout", device_info["slug"])
    previous = None
    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        if previous.get("device", {}).get("slug") != device_info["slug"]:
            previous = None
    add_ceiling_share(rows, ceiling["tflops"])                   # before merging: kept rows keep their own
    rows, loaders = merged(previous, rows, loaders)
    for row in rows:
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = finite_or_none(v)
    notes = []
    if device.type == "cpu":
        notes.append("CPU run with the tiny models: the GPU targets (non-forward share < 3 %, forward >= 60 % of the "
                     "bf16 matmul ceiling at 1024²) are not evaluated; a 0.1 M-parameter transformer's numbers say "
                     "nothing about a released model on a GPU")
        if busy is not None and busy > 0.1:
            notes.append(f"other processes kept {100 * busy:.0f} % of the CPUs busy just before the run: timings "
                         "are noisier and slower than on an idle machine")
    if args.quick:
        notes.append("--quick: a smoke run (tiny model, 1 repeat, eager only); its numbers are not a benchmark")
    report = {
        "benchmark": "rollout", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info, "versions": versions(), "cpu_count": torch.get_num_threads(),
        "config": {**{k: v for k, v in config.items() if k not in ("dtype", "batch")},
                   "dtype": str(config["dtype"]).removeprefix("torch."),
                   "batch": {str(k): v for k, v in config["batch"].items()},
                   "grpo_noise_level": GRPO_NOISE_LEVEL, "quick": args.quick},
        "policy": json.loads(json.dumps(next(iter(policy_metadata.values()), {}), default=str)),
        "policies": json.loads(json.dumps(policy_metadata, default=str)),
        "method": {"timer": "cuda events" if device.type == "cuda" else "time.perf_counter", "statistic": "median",
                   "repeats": config["repeats"], "flops": "torch.utils.flop_counter on the math attention kernel"},
        "matmul_ceiling": ceiling, "rows": rows, "loaders": loaders,
        "targets": evaluate_targets(rows, device, config["model"]), "notes": notes,
    }
    write_json_atomic(out, report)

    print(f"rollouts: {','.join(config['families'])}, {config['model']} presets on {device_info['name']}, "
          f"{report['config']['dtype']}, "
          f"{config['steps']} steps, median of {config['repeats']}; matmul ceiling {ceiling['tflops']:.3g} TFLOP/s "
          f"(n={n})")
    print(rollout_table(rows))
    if loaders:
        print("\nloaders (CPU decode + resize):")
        print(loader_table(loaders))
    print("\n".join(f"note: {note}" for note in notes))
    print_targets(report["targets"], fmt)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
