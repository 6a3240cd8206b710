#!/usr/bin/env python
"""Benchmark of the fused RL ops (editrl_engine.ops): fused kernels vs eager torch vs torch.compile.

Variants, side by side in one run:
  eager    the plain-torch reference, ops.<op>(..., backend="torch")
  compile  torch.compile of the reference function editrl_engine.reference.<op> (a failure is reported as a row)
  triton   the fused Triton kernels, on CUDA only (the CPU interpreter's timings mean nothing: not timed there)
  cpp      the fused C++ kernels, on CPU only
Passes: fwd (no input requires grad) and, for the differentiable ops, fwd+bwd (torch.autograd.grad of the
differentiable outputs, with random upstream gradients, with respect to the inputs the op differentiates).

Timing: warm-up calls, then the median of --repeats calls, each timed on its own: with CUDA events on a GPU
(bench/common.py says how the host's launch overhead is kept out), with time.perf_counter on CPU, where torch
uses all os.cpu_count() cores. Every call runs inside editrl_engine.ops.skip_value_checks(), so host-side value
checks (which synchronise a GPU) stay out of the timings. Inputs are random and rotate over several sets so
the cache is not what is timed. GB/s is each op's minimum traffic (byte models in bench/kernel_cases.py) over
its median time; "% copy" compares that with a large device-to-device copy measured in the same run (bytes
read plus bytes written); "x eager" and "x compile" are speedups over those variants of the same row.

Prints a table and the targets' verdicts; writes bench/results/kernels-<device>.json atomically. The full CPU
run takes about half a minute on 2 cores with torch.compile's cache warm, a little over a minute cold.
"""
from __future__ import annotations

import argparse
import math
import operator
import os
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
from common import (
    RESULTS_DIR,
    cache_bytes,
    copy_ceiling,
    count_device_launches,
    cpu_busy_fraction,
    describe_device,
    finite_or_none,
    format_table,
    pick_device,
    synchronize,
    time_calls,
    versions,
    write_json_atomic,
)
from kernel_cases import CASES, PER_SAMPLE_OPS, Case

from editrl_engine import ops, reference

MAX_INPUT_SETS = 16
ROTATION_CAP_BYTES = 256 << 20
DEFAULT_REPEATS = {"cuda": 100, "cpu": 50}
BUSY_CPU_FRACTION = 0.1  # busier than this before the run: the cores are not ours alone
COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto picks CUDA when torch sees a GPU (default: auto)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="dtype of the latent-sized tensors (default: float32 on CPU, bfloat16 on CUDA); "
                             "per-sample tensors are always float32")
    parser.add_argument("--ops", type=lambda text: text.split(","), default=list(CASES),
                        help=f"comma-separated subset of: {','.join(CASES)} (default: all)")
    parser.add_argument("--sizes", type=lambda text: text.split(","), default=["512", "1024"],
                        help="comma-separated FLUX resolutions: 512 (latents 24x1024x64, N=288 in 24 groups), "
                             "1024 (latents 8x4096x64, N=4096 in 256 groups) (default: 512,1024)")
    parser.add_argument("--repeats", type=int,
                        help=f"timed calls per row, the median is reported (default: {DEFAULT_REPEATS['cuda']} "
                             f"on CUDA, {DEFAULT_REPEATS['cpu']} on CPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--out", type=Path,
                        help="JSON file to write, or a directory to write kernels-<device>.json into "
                             "(default: bench/results/kernels-<device>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: tiny shapes, 2 repeats, 2 input sets, no torch.compile")
    args = parser.parse_args(argv)
    unknown = [op for op in args.ops if op not in CASES] + [s for s in args.sizes if s not in ("512", "1024")]
    if unknown:
        parser.error(f"unknown op or size: {', '.join(unknown)}")
    return args


def op_call(case: Case, variant: str, compiled: dict):
    """The variant as a function of one input set."""
    if variant == "compile":
        return lambda inputs: compiled[case.op](**inputs, **case.kwargs)
    backend = "torch" if variant == "eager" else variant
    return lambda inputs: getattr(ops, case.op)(**inputs, **case.kwargs, backend=backend)


def make_step(call, case: Case, sets: list[dict], backward: bool):
    """step(i): run the op on input set i mod len(sets), then (fwd+bwd) its backward."""
    upstream = [{} for _ in sets]  # per set: random upstream gradients, drawn on the first (warm-up) call

    def step(i: int):
        inputs = sets[i % len(sets)]
        out = call(inputs)
        if backward:
            outs = case.differentiable(out)
            grads = upstream[i % len(sets)]
            key = tuple((o.shape, o.dtype) for o in outs)
            if key not in grads:
                grads[key] = tuple(torch.randn_like(o) for o in outs)
            torch.autograd.grad(outs, [inputs[name] for name in case.grad_inputs], grads[key])
    return step


def error_text(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def measure(step, device: torch.device, repeats: int, warmup: int) -> dict:
    """Time of the first call (compilation, autotuning) and the median of the timed calls, or the error."""
    try:
        begin = time.perf_counter()
        step(0)
        synchronize(device)
        first_call_s = time.perf_counter() - begin
        timing = time_calls(step, device, warmup=warmup, repeats=repeats)
    except Exception as exc:  # an incomplete backend or a failed compile is a row of the report
        return {"median_ms": None, "min_ms": None, "first_call_s": None, "error": error_text(exc)}
    return {"median_ms": timing.median_ms, "min_ms": timing.min_ms, "first_call_s": first_call_s, "error": None}


def run_case(case: Case, variants: list[str], compiled: dict, device: torch.device, repeats: int,
             rotation_bytes: int, launch_probes: list) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    first = case.make_inputs(gen)
    set_bytes = sum(t.numel() * t.element_size() for t in first.values())
    n_sets = min(MAX_INPUT_SETS, max(2, math.ceil(rotation_bytes / set_bytes)))
    sets = [first] + [case.make_inputs(gen) for _ in range(n_sets - 1)]
    rows = []
    for pass_name in case.passes:
        backward = pass_name == "fwd+bwd"
        pass_sets = [{name: t.detach().requires_grad_() if name in case.grad_inputs else t for name, t in s.items()}
                     for s in sets] if backward else sets
        for variant in variants:
            step = make_step(op_call(case, variant, compiled), case, pass_sets, backward)
            row = {"op": case.op, "size": case.size, "shape": case.shape, "pass": pass_name, "variant": variant,
                   "dtype": str(case.dtype).removeprefix("torch."),
                   "shapes": {name: list(t.shape) for name, t in first.items()}, "bytes": case.bytes(pass_name),
                   "input_sets": n_sets, **measure(step, device, repeats, warmup=max(3, n_sets))}
            print(f"  {case.op} {case.size} {pass_name} {variant}: "
                  f"{row['error'] or format(row['median_ms'], '.4g') + ' ms'}", file=sys.stderr, flush=True)
            rows.append(row)
            if device.type == "cuda" and case.op in PER_SAMPLE_OPS and row["error"] is None:
                launch_probes.append((row, partial(step, 0)))
    return rows


def add_rates(rows: list[dict], copy_gb_per_s: float) -> None:
    """GB/s, % of the copy ceiling and the speedups over eager and compile of the same op, size and pass."""
    timed = {(r["op"], r["size"], r["pass"], r["variant"]): r["median_ms"] for r in rows if r["error"] is None}
    for row in rows:
        ms = timed.get((row["op"], row["size"], row["pass"], row["variant"]))
        gb_per_s = None if ms is None else row["bytes"] / ms / 1e6
        row["gb_per_s"] = gb_per_s
        row["pct_of_copy"] = None if ms is None else 100 * gb_per_s / copy_gb_per_s
        for base in ("eager", "compile"):
            base_ms = timed.get((row["op"], row["size"], row["pass"], base))
            row[f"x_vs_{base}"] = None if ms is None or base_ms is None else base_ms / ms


def target(name: str, measured, compare: str, threshold: float) -> dict:
    passed = None if measured is None else bool(COMPARE[compare](measured, threshold))
    return {"target": name, "required": f"{compare} {threshold:g}", "measured": measured, "passed": passed}


def evaluate_targets(rows: list[dict], device: torch.device) -> list[dict]:
    """The benchmark's targets; a target whose row was not run or failed has passed = null."""
    def value(op, size, pass_name, variant, key):
        row = next((r for r in rows if (r["op"], r["size"], r["pass"], r["variant"]) == (op, size, pass_name,
                                                                                          variant)), None)
        return None if row is None else row.get(key)

    if device.type == "cpu":
        return [target("nft_loss fwd+bwd 512²: cpp >= 3x eager",
                       value("nft_loss", "512", "fwd+bwd", "cpp", "x_vs_eager"), ">=", 3)]
    targets = []
    for op in ("sde_logprob", "nft_loss"):
        for size in ("512", "1024"):
            where = f"{op} fwd+bwd {size}²: triton"
            targets += [target(f"{where} >= 80 % of copy bandwidth",
                               value(op, size, "fwd+bwd", "triton", "pct_of_copy"), ">=", 80),
                        target(f"{where} >= 5x eager", value(op, size, "fwd+bwd", "triton", "x_vs_eager"), ">=", 5),
                        target(f"{where} >= 1.5x torch.compile",
                               value(op, size, "fwd+bwd", "triton", "x_vs_compile"), ">=", 1.5)]
    ms = value("group_advantages", "1024", "fwd", "triton", "median_ms")
    targets += [target("group_advantages N=4096: triton <= 10 us", None if ms is None else ms * 1e3, "<=", 10),
                target("group_advantages N=4096: triton in one launch",
                       value("group_advantages", "1024", "fwd", "triton", "device_launches"), "==", 1)]
    return targets


def table(rows: list[dict]) -> str:
    number = lambda v, fmt: "-" if v is None else format(v, fmt)
    body = [[r["op"], r["size"], r["shape"], r["pass"], r["variant"],
             "failed" if r["error"] else number(r["median_ms"], ".4g"), number(r["gb_per_s"], ".1f"),
             number(r["pct_of_copy"], ".1f"), number(r["x_vs_eager"], ".2f") + "x" * (r["x_vs_eager"] is not None),
             number(r["x_vs_compile"], ".2f") + "x" * (r["x_vs_compile"] is not None)] for r in rows]
    headers = ["op", "size", "shape", "pass", "variant", "median ms", "GB/s", "% copy", "x eager", "x compile"]
    failures = [f"  {r['op']} {r['size']} {r['pass']} {r['variant']}: {r['error']}" for r in rows if r["error"]]
    return format_table(headers, body) + ("\nfailed:\n" + "\n".join(failures) if failures else "")


def run_notes(device: torch.device, use_compile: bool) -> list[str]:
    """What a reader of the numbers must know about this run."""
    notes = ["every call runs inside editrl_engine.ops.skip_value_checks(): host-side value checks are not timed"]
    if device.type == "cpu":
        notes.append("triton is not timed on CPU: its interpreter runs kernels in Python and its times mean nothing")
        notes.append("a CPU store first reads its cache line, so the copy moves 3 bytes per 2 counted; ops that read "
                     "more than they write can pass 100 % of the copy")
        busy = cpu_busy_fraction()
        if busy is not None and busy > BUSY_CPU_FRACTION:
            notes.append(f"other processes kept {100 * busy:.0f} % of the CPUs busy just before the run: they "
                         "compete for the cores and the CPU timings are unreliable")
    if not use_compile:
        notes.append("torch.compile variant skipped (--no-compile or --quick)")
    return notes


def print_summary(report: dict, out: Path) -> None:
    ceiling = report["copy_ceiling"]
    print(f"\n{report['device']['name']} ({report['device']['type']}), {report['dtype']} latents, "
          f"{report['method']['repeats']} repeats, torch {report['versions']['torch']}, {report['cpu_count']} CPUs")
    print(f"copy ceiling: {ceiling['gb_per_s']:.1f} GB/s (read + write, {ceiling['buffer_bytes'] >> 20} MiB buffer)")
    print("\n".join(f"note: {note}" for note in report["notes"]))
    print(table(report["rows"]))
    print("\ntargets:")
    verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
    for t in report["targets"]:
        measured = "-" if t["measured"] is None else format(t["measured"], ".3g")
        print(f"  {verdict[t['passed']]:12s} {t['target']} (measured {measured}, required {t['required']})")
    print(f"\nwrote {out} in {report['wall_s']} s")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    device = pick_device(args.device)
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    sizes = ["quick"] if args.quick else args.sizes
    repeats = 2 if args.quick else args.repeats or DEFAULT_REPEATS[device.type]
    use_compile = not (args.no_compile or args.quick)
    variants = ["eager"] + ["compile"] * use_compile + ["triton" if device.type == "cuda" else "cpp"]
    notes = run_notes(device, use_compile)

    ceiling = copy_ceiling(device, (16 << 20) if args.quick else (1 << 30), repeats=5 if args.quick else 20)
    rotation_bytes = 0 if args.quick else min(4 * cache_bytes(device), ROTATION_CAP_BYTES)
    compiled = {op: torch.compile(getattr(reference, op), dynamic=False) for op in args.ops} if use_compile else {}
    rows, launch_probes = [], []
    with ops.skip_value_checks():
        for op in args.ops:
            for size in sizes:
                rows += run_case(CASES[op](size, dtype), variants, compiled, device, repeats, rotation_bytes,
                                 launch_probes)
        for row, call in launch_probes:  # after all timing, so the profiler cannot disturb a timed row
            row["device_launches"] = count_device_launches(call)
    add_rates(rows, ceiling["gb_per_s"])
    for row in rows:
        for key in ("median_ms", "min_ms", "gb_per_s", "pct_of_copy", "x_vs_eager", "x_vs_compile"):
            row[key] = finite_or_none(row[key])

    info = describe_device(device)
    timer = "CUDA events, behind an L2 eviction and a device spin" if device.type == "cuda" else "time.perf_counter"
    report = {
        "benchmark": "kernels", "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:], "device": info, "versions": versions(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."),
        "method": {"timer": timer, "statistic": "median", "repeats": repeats,
                   "warmup_calls": "max(3, input sets), after one first call",
                   "bytes": "minimum traffic: each input read once, each output written once; fwd+bwd adds the "
                            "backward's reads and gradient writes (bench/kernel_cases.py)"},
        "copy_ceiling": ceiling, "notes": notes, "rows": rows, "targets": evaluate_targets(rows, device),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = args.out or RESULTS_DIR
    if args.out is None or out.is_dir():
        out = out / f"kernels-{info['slug']}.json"
    write_json_atomic(out, report)
    print_summary(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
