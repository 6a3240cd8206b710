"""Helpers shared by the benchmarks in bench/: the device and versions, timing, the copy ceiling, tables, JSON.

Timing is one method everywhere: warm up, time every call on its own, report the median. On CUDA each call
sits between two device events, behind a write of twice the L2 size (which evicts the cache) and a spin of
about a millisecond on the device, so the host queues the whole call before the device reaches it and the
events time the device's work rather than the host's launch overhead (unless queuing takes the host longer
than the spin). On CPU each call is timed with time.perf_counter.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_CPU_CACHE_FALLBACK = 32 << 20
_DEVICE_SPIN_CYCLES = 2_000_000  # about 1 ms at a GPU's clock


def pick_device(name: str) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (a CPU-only torch build, or no GPU here)")
    return torch.device(name)


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_bytes(device: torch.device) -> int:
    """The last-level cache a benchmark's inputs must not sit in: the GPU's L2, or the CPU's largest cache."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        match = re.fullmatch(r"(\d+)([KMG]?)", entry.read_text().strip())
        if match:
            sizes.append(int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2]])
    return max(sizes, default=_CPU_CACHE_FALLBACK)


def describe_device(device: torch.device) -> dict:
    """Name, file-name slug and the properties that bound a benchmark's numbers."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "slug": slug(props.name),
                "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1), "l2_bytes": props.L2_cache_size}
    return {"type": "cpu", "name": _cpu_model(), "slug": "cpu", "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "isa": torch.backends.cpu.get_cpu_capability(),
            "llc_bytes": cache_bytes(device)}


def cpu_busy_fraction(seconds: float = 0.5) -> float | None:
    """Share of all CPUs' time spent busy over the next `seconds` (before a run: others' load); None off Linux."""
    def busy_and_total():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)
    try:
        busy0, total0 = busy_and_total()
        time.sleep(seconds)
        busy1, total1 = busy_and_total()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1)


def versions() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import editrl_engine
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": triton_version, "editrl_engine": editrl_engine.__version__}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_ms: float
    min_ms: float


def time_calls(step: Callable[[int], object], device: torch.device, *, warmup: int, repeats: int) -> Timing:
    """Median time of step(i), i counting on from the warm-up calls (so steps can rotate over input sets)."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    if device.type == "cuda":
        scrub = torch.empty(2 * cache_bytes(device) // 4, dtype=torch.int32, device=device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for k in range(repeats):
            scrub.zero_()
            torch.cuda._sleep(_DEVICE_SPIN_CYCLES)
            starts[k].record()
            step(warmup + k)
            ends[k].record()
        torch.cuda.synchronize(device)
        samples = [start.elapsed_time(end) for start, end in zip(starts, ends)]
    else:
        samples = []
        for k in range(repeats):
            begin = time.perf_counter()
            step(warmup + k)
            samples.append((time.perf_counter() - begin) * 1e3)
    return Timing(statistics.median(samples), min(samples))


def copy_ceiling(device: torch.device, buffer_bytes: int, repeats: int) -> dict:
    """Bandwidth of a large device-to-device copy, counting the bytes read plus the bytes written."""
    src = torch.rand(buffer_bytes // 4, device=device)
    dst = torch.empty_like(src)
    timing = time_calls(lambda _: dst.copy_(src), device, warmup=3, repeats=repeats)
    moved = 2 * src.numel() * src.element_size()
    return {"buffer_bytes": src.numel() * src.element_size(), "bytes_moved": moved,
            "median_ms": timing.median_ms, "gb_per_s": moved / timing.median_ms / 1e6}


def count_device_launches(call: Callable[[], object]) -> int | None:
    """Kernels, copies and memsets one call puts on the GPU, read with torch.profiler (None if it cannot)."""
    from torch.profiler import ProfilerActivity, profile
    try:
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
    except Exception:  # no CUPTI, or a profiler that will not start: the count is unknown, not an error
        return None
    return sum(1 for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; a column of numbers (and "-") is right-aligned, its header too."""
    columns = list(zip(headers, *rows))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [all(re.fullmatch(r"[-+]?[\d.]+x?|-|failed", cell) for cell in column[1:]) for column in columns]
    line = lambda cells: "  ".join(cell.rjust(w) if right else cell.ljust(w)
                                   for cell, w, right in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows])


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if value is not None and math.isfinite(value) else None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as tmp:
        try:
            json.dump(data, tmp, indent=1, allow_nan=False)
            tmp.write("\n")
            tmp.flush()
            os.fsync(tmp.fileno())
            os.chmod(tmp.name, 0o644)  # a temporary file is private (0600); a result is for everyone to read
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def error_text(exc: BaseException) -> str:
    """The exception's type and first line, short enough for a table cell and a JSON field."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


@contextlib.contextmanager
def built_on(device: torch.device, dtype: torch.dtype):
    """New tensors default to `device` and `dtype` (a 7B model is built on the GPU in bf16, not on the CPU)."""
    if device.type == "cpu":
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def busy_note(busy: float) -> str:
    """The note a benchmark records about the machine's load just before it ran."""
    return (f"CPU busy {100 * busy:.0f} % just before the run (others' load)"
            + (": timings are noisier and slower than on an idle machine" if busy > 0.1 else ": idle"))


def results_file(out: Path | None, benchmark: str, device_slug: str) -> Path:
    """--out as given when it names a .json file; else <out or bench/results>/<benchmark>-<device>.json."""
    out = out or RESULTS_DIR
    return out if out.suffix == ".json" else out / f"{benchmark}-{device_slug}.json"


def print_targets(targets: list[dict], fmt: Callable[[float | None], str]) -> None:
    """The targets block every benchmark ends its table with: PASS / FAIL / not evaluated, measured, required."""
    print("\ntargets:")
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "not evaluated"}[t["passed"]]
        print(f"  {verdict:>13}  {t['target']}: measured {fmt(t['measured'])} (required {t['required']})"
              + (f" - {t['note']}" if t.get("note") else ""))


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> dict:
    """Throughput of an n x n x n matmul in `dtype` (2 n^3 FLOPs), the ceiling a transformer forward compares with."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    timing = time_calls(lambda _: a @ b, device, warmup=3, repeats=repeats)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "median_ms": timing.median_ms,
            "tflops": 2 * n ** 3 / timing.median_ms / 1e9}
