#!/usr/bin/env python
"""Benchmark of the reward server (editrl_engine.serve): throughput and latency over loopback HTTP.

The server runs in a child process (this script with --internal-server: one judge, and one app of create_app
per mode under uvicorn on 127.0.0.1, ephemeral ports), so the clients do not share its interpreter. Clients are
asyncio tasks in this process, each in a closed loop: send a /v1/score request (one source, G candidates, JSON
with base64 PNGs), wait for the answer, send the next. Per (mode, clients) row: requests/s and pairs/s
(= requests/s x G) over the row's wall time, p50 / p99 of the per-request latency (send to answer, on the
client), and the mean requests per model call read from the server's /metrics.

modes:  dynamic   dynamic batching: the worker merges queued requests up to --max-batch candidates, waiting at
                  most --max-wait-ms for more
        batch-1   batch-1 serving: max_batch = 1, every request scored alone (one group of G per model call)
clients: 1, 8 and 32 concurrent, the two modes measured back to back at each. Each row is bounded in count
(12 / 32 / 64 requests on CPU, 40 / 160 / 320 on CUDA) and in time (no request starts after 40 s, 60 s on CUDA).
Warm-up requests (each mode at each load once before any row, and a few before each row) are not counted.

Nothing lost: every request sent gets exactly one answer. Counted on both sides: the client's answers, and the
server's accepted / answered counters (their difference must be 0 after each row and after the drained shutdown).

On CUDA the judge is the 7B-sized Qwen2.5-VL preset (qwen2.5-vl-7b, random weights, bf16) at 512² images; on
CPU the tiny preset (float32) at 64² images, and the GPU targets are "not evaluated on CPU".
Targets (H100, 7B-sized, G = 8): dynamic p99 <= 150 ms at 8 clients; dynamic >= 3x batch-1 throughput at 32 clients.
Prints a table and writes bench/results/serve-<device>.json atomically.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import (
    busy_note,
    cpu_busy_fraction,
    describe_device,
    finite_or_none,
    format_table,
    pick_device,
    print_targets,
    results_file,
    versions,
    write_json_atomic,
)

SEVEN_B_PRESET = "qwen2.5-vl-7b"
DEFAULTS = {
    "cuda": dict(model=SEVEN_B_PRESET, dtype="bfloat16", image_size=512, group=8, clients=[1, 8, 32],
                 requests=[40, 160, 320], row_seconds=60.0, warmup=4, max_batch=256, max_wait_ms=5.0,
                 reward_batch=64),
    "cpu": dict(model="tiny", dtype="float32", image_size=64, group=8, clients=[1, 8, 32], requests=[12, 32, 64],
                row_seconds=40.0, warmup=2, max_batch=256, max_wait_ms=5.0, reward_batch=64),
}
QUICK = dict(model="tiny", dtype="float32", image_size=32, group=2, clients=[1, 4], requests=[3, 8], row_seconds=20.0,
             warmup=1, max_batch=16, max_wait_ms=5.0, reward_batch=16)
MODES = ("dynamic", "batch-1")
INSTRUCTION = "Replace the red cube with a blue sphere and keep the background unchanged."
P99_TARGET_MS = 150.0
DYNAMIC_SPEEDUP_TARGET = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the server's model runs: auto picks CUDA when torch sees a GPU (default: auto)")
    parser.add_argument("--model", choices=("tiny", SEVEN_B_PRESET),
                        help="Qwen2.5-VL judge with random weights (default: the 7B-sized one on CUDA, tiny on CPU)")
    parser.add_argument("--group", type=int, help="candidates per request, G (default: 8)")
    parser.add_argument("--image-size", type=int, help="square image side in pixels (default: 512 CUDA, 64 CPU)")
    parser.add_argument("--max-batch", type=int, help="dynamic mode: candidates per model call (default: 256)")
    parser.add_argument("--max-wait-ms", type=float, help="dynamic mode: wait for more requests (default: 5)")
    parser.add_argument("--reward-batch", type=int,
                        help="the judge's batch_size: groups prefilled / candidates run together (default: 64)")
    parser.add_argument("--out", type=Path, help="JSON file, or a directory to write serve-<device>.json into "
                                                 "(default: bench/results/serve-<device>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: tiny model, 32² images, G = 2, 1 and 4 clients, a few requests")
    parser.add_argument("--internal-server", metavar="JSON", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- the server (child process) -------------------------------------------------------------------------------
def internal_server(settings: dict) -> int:
    """Load the judge once, serve one app per mode (each its own model worker and port) on 127.0.0.1, print
    READY {mode: port}; on 'stop' (stdin) shut them down gracefully and print the final counts as JSON.
    The parent drives one mode at a time, so the workers never use the model at once."""
    import torch
    from reward import built_on

    from editrl_engine.reward import load_reward
    from editrl_engine.serve import BackgroundServer, ServeConfig, create_app

    device, dtype = torch.device(settings["device"]), getattr(torch, settings["dtype"])
    with built_on(device, dtype):
        judge = load_reward("mllm_logit", preset=settings["model"], device=device, dtype=dtype,
                            batch_size=settings["reward_batch"])
    servers = {}
    for mode, max_batch in settings["modes"].items():
        config = ServeConfig(max_batch=max_batch, max_wait_ms=settings["max_wait_ms"], max_queue=1024,
                             timeout_s=300.0, max_candidates=max(64, settings["group"]))
        servers[mode] = BackgroundServer(create_app(judge, None, config), port=0).start()
    print("READY " + json.dumps({mode: server.port for mode, server in servers.items()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    finals = {}
    for mode, server in servers.items():
        drained = server.stop(timeout=600)
        metrics = server.app.state.metrics
        finals[mode] = {"drained": drained, "accepted": metrics.accepted_count, "answered": metrics.answered_count}
    print(json.dumps(finals), flush=True)
    return 0


class ServerProcess:
    def __init__(self, settings: dict):
        self.process = subprocess.Popen([sys.executable, __file__, "--internal-server", json.dumps(settings)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).parent)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise RuntimeError(f"the server process did not start (it said {line!r}; its stderr is above)")
        self.urls = {mode: f"http://127.0.0.1:{port}" for mode, port in json.loads(line[len("READY "):]).items()}

    def stop(self) -> dict:
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        finals = json.loads(self.process.stdout.readline())
        self.process.wait(timeout=600)
        return finals


# ---- the clients ----------------------------------------------------------------------------------------------
def request_bodies(config: dict, rng: np.random.Generator, count: int = 3) -> list[bytes]:
    """A few /v1/score JSON bodies of fresh random images (never zeros): one source and G candidates each."""
    from PIL import Image

    def png(size: int) -> str:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    size = config["image_size"]
    return [json.dumps({"instruction": INSTRUCTION, "source": png(size),
                        "candidates": [png(size) for _ in range(config["group"])]}).encode() for _ in range(count)]


def scrape(url: str) -> dict:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=60).text
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
               if not s.labels}
    return {"accepted": samples["editrl_serve_accepted_total"], "answered": samples["editrl_serve_answered_total"],
            "batches": samples["editrl_serve_batch_requests_count"],
            "batched_requests": samples["editrl_serve_batch_requests_sum"]}


async def drive(url: str, bodies: list[bytes], clients: int, total: int, seconds: float) -> dict:
    """`clients` closed-loop clients sending up to `total` requests in all, none started after `seconds`."""
    import httpx

    latencies, statuses, issued = [], Counter(), 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(600.0)) as client:
        stop_at = time.perf_counter() + seconds

        async def client_loop(k: int) -> None:
            nonlocal issued
            while issued < total and time.perf_counter() < stop_at:
                body = bodies[issued % len(bodies)]
                issued += 1
                begin = time.perf_counter()
                try:
                    response = await client.post("/v1/score", content=body,
                                                 headers={"content-type": "application/json"})
                    statuses[str(response.status_code)] += 1
                except httpx.TransportError as error:
                    statuses[f"transport error: {type(error).__name__}"] += 1
                    continue
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - begin) * 1e3)

        begin = time.perf_counter()
        await asyncio.gather(*(client_loop(k) for k in range(clients)))
        wall = time.perf_counter() - begin
    return {"sent": issued, "answers": sum(statuses.values()), "statuses": dict(statuses), "wall_s": wall,
            "latencies": latencies}


def measure_row(url: str, mode: str, clients: int, total: int, config: dict, bodies: list[bytes], log) -> dict:
    log(f"{mode}: {clients} clients, up to {total} requests")
    asyncio.run(drive(url, bodies, clients, max(config["warmup"], clients), config["row_seconds"]))
    before = scrape(url)
    run = asyncio.run(drive(url, bodies, clients, total, config["row_seconds"]))
    after = scrape(url)
    ok, lat = len(run["latencies"]), run["latencies"]
    batches = after["batches"] - before["batches"]
    accepted, answered = after["accepted"] - before["accepted"], after["answered"] - before["answered"]
    return {"mode": mode, "clients": clients, "group": config["group"], "sent": run["sent"], "ok": ok,
            "answers": run["answers"], "statuses": run["statuses"], "wall_s": run["wall_s"],
            "requests_per_s": ok / run["wall_s"] if run["wall_s"] > 0 else None,
            "pairs_per_s": ok * config["group"] / run["wall_s"] if run["wall_s"] > 0 else None,
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat else None, "min_ms": min(lat) if lat else None,
            "requests_per_model_call": (after["batched_requests"] - before["batched_requests"]) / batches
            if batches else None,
            "server_accepted": int(accepted), "server_answered": int(answered),
            "every_request_answered": run["answers"] == run["sent"] and accepted == answered == run["sent"]}


def evaluate_targets(rows: list[dict], on_target: bool, unevaluated: str | None) -> list[dict]:
    def pick(mode: str, clients: int) -> dict | None:
        return next((r for r in rows if r["mode"] == mode and r["clients"] == clients), None)
    at8, dyn32, one32 = pick("dynamic", 8), pick("dynamic", 32), pick("batch-1", 32)
    speedup = (dyn32["requests_per_s"] / one32["requests_per_s"]
               if dyn32 and one32 and dyn32["requests_per_s"] and one32["requests_per_s"] else None)
    targets = [
        dict(target="dynamic batching p99 at 8 clients (G = 8)", measured=at8["p99_ms"] if at8 else None,
             required=f"<= {P99_TARGET_MS} ms", op=lambda v: v <= P99_TARGET_MS),
        dict(target="dynamic / batch-1 throughput at 32 clients", measured=speedup,
             required=f">= {DYNAMIC_SPEEDUP_TARGET}x", op=lambda v: v >= DYNAMIC_SPEEDUP_TARGET),
    ]
    out = []
    for t in targets:
        op = t.pop("op")
        measured = finite_or_none(t["measured"])
        note = unevaluated or (None if measured is not None else "not measured (a row is missing or failed)")
        out.append({**t, "measured": measured, "passed": bool(op(measured)) if note is None and on_target else None,
                    "note": note})
    return out


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.internal_server:
        return internal_server(json.loads(args.internal_server))
    device = pick_device(args.device)
    config = dict(QUICK if args.quick else DEFAULTS[device.type])
    chosen = dict(model=args.model, group=args.group, image_size=args.image_size, max_batch=args.max_batch,
                  max_wait_ms=args.max_wait_ms, reward_batch=args.reward_batch)
    config.update({k: v for k, v in chosen.items() if v is not None})
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    busy = cpu_busy_fraction() if device.type == "cpu" else None
    bodies = request_bodies(config, np.random.default_rng(0))

    settings = dict(device=str(device), dtype=config["dtype"], model=config["model"],
                    reward_batch=config["reward_batch"], group=config["group"], max_wait_ms=config["max_wait_ms"],
                    modes={"dynamic": config["max_batch"], "batch-1": 1})
    log(f"starting the server process ({config['model']}; dynamic: max batch {config['max_batch']} candidates, "
        "batch-1: max batch 1)")
    server = ServerProcess(settings)
    rows = []
    try:
        for mode in MODES:            # first calls of a process (allocator, kernel choices) at every batch shape
            log(f"{mode}: warming up")
            for clients in config["clients"]:
                asyncio.run(drive(server.urls[mode], bodies, clients, max(config["warmup"], clients),
                                  config["row_seconds"]))
        for clients, total in zip(config["clients"], config["requests"]):
            for mode in MODES:        # the two modes back to back at each load: a change in others' load hits both
                rows.append(measure_row(server.urls[mode], mode, clients, total, config, bodies, log))
    finally:
        finals = server.stop()
    shutdowns = [{"mode": mode, **final, "lost": final["accepted"] - final["answered"]}
                 for mode, final in finals.items()]

    on_target = device.type == "cuda" and config["model"] == SEVEN_B_PRESET
    unevaluated = None if on_target else ("not evaluated on CPU (tiny model)" if device.type == "cpu" else
                                          "not evaluated: not the 7B-sized model")
    nothing_lost = all(r["every_request_answered"] for r in rows) and all(s["lost"] == 0 and s["drained"]
                                                                          for s in shutdowns)
    notes = []
    if device.type == "cpu":
        notes.append("CPU run with the tiny model: the H100 targets are not evaluated on CPU (tiny model); its "
                     "numbers say nothing about a 7B model on a GPU")
    if busy is not None:
        notes.append(busy_note(busy))
    if args.quick:
        notes.append("--quick: a smoke run (tiny model, a few requests per row); its numbers are not a benchmark")
    device_info = describe_device(device)
    out = results_file(args.out, "serve", device_info["slug"])
    rows.sort(key=lambda r: MODES.index(r["mode"]))
    for r in rows:
        r.update({k: finite_or_none(v) for k, v in r.items() if isinstance(v, float)})
    report = {
        "benchmark": "serve", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info, "versions": versions(), "cpu_busy_fraction": finite_or_none(busy),
        "config": {**config, "quick": args.quick, "instruction": INSTRUCTION, "transport": "HTTP/1.1 on 127.0.0.1",
                   "endpoint": "POST /v1/score, JSON with base64 PNGs"},
        "method": {"clients": "asyncio tasks in closed loops (send, wait for the answer, send again), server in a "
                              "child process", "statistic": "requests/s over the row's wall time; p50 / p99 of "
                                                            "per-request latency (send to answer, client clock)",
                   "warmup_requests_per_row": "max(warmup, clients), not counted"},
        "rows": rows, "shutdowns": shutdowns, "nothing_lost": nothing_lost,
        "targets": evaluate_targets(rows, on_target, unevaluated), "notes": notes,
    }
    write_json_atomic(out, report)

    print(f"reward server: mllm_logit {config['model']} on {device_info['name']}, {config['dtype']}, "
          f"{config['image_size']}² images, G = {config['group']}, max batch {config['max_batch']} candidates, "
          f"max wait {config['max_wait_ms']} ms")
    headers = ["mode", "clients", "sent", "ok", "req/s", "pairs/s", "p50 ms", "p99 ms", "req/call", "answered"]
    table = [[r["mode"], str(r["clients"]), str(r["sent"]), str(r["ok"]), fmt(r["requests_per_s"]),
              fmt(r["pairs_per_s"]), fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r["requests_per_model_call"]),
              "all" if r["every_request_answered"] else "LOST"] for r in rows]
    print(format_table(headers, table))
    print("\n".join(f"note: {note}" for note in notes))
    print(f"\nnothing lost: {'yes' if nothing_lost else 'NO'} (every request answered once; server accepted == "
          f"answered after each row and after the drained shutdown)")
    print_targets(report["targets"], fmt)
    print(f"\nwrote {out}")
    return 0 if nothing_lost else 1


if __name__ == "__main__":
    sys.exit(main())
