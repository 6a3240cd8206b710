"""The demo's acceptance over several RL seeds from the shipped warm-up: held-out reward before and after RL.

    python bench/demo.py                       # seeds 0 1 2 -> bench/results/demo-cpu.json

Each seed is one `editrl demo --set run.seed=S` (same shipped checkpoint, same held-out set and evaluation seeds;
the seed changes the LoRA initialisation, the group draws and every rollout's noise). Acceptance (the issue's):
mean gain >= 0.10; every seed's gain >= 3x the standard deviation of the after-RL reward across seeds; after-RL
reward >= 0.85 (every seed). Runs one seed at a time, with the machine otherwise idle for the timings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, cpu_busy_fraction, describe_device, format_table, versions, write_json_atomic  # noqa: E402

import torch  # noqa: E402


def acceptance(results: list[dict]) -> dict:
    gains = [r["gain"] for r in results]
    after = [r["reward_after"] for r in results]
    std_after = statistics.pstdev(after) if len(after) > 1 else 0.0
    checks = {
        "mean_gain_at_least_0.10": statistics.mean(gains) >= 0.10,
        "every_gain_at_least_3x_std_after": all(g >= 3 * std_after for g in gains),
        "after_rl_at_least_0.85": all(a >= 0.85 for a in after),
    }
    return {"mean_gain": statistics.mean(gains), "std_after": std_after, "mean_after": statistics.mean(after),
            "mean_before": statistics.mean(r["reward_before"] for r in results), "checks": checks,
            "pass": all(checks.values())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="demo config overrides")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo-cpu.json")
    args = parser.parse_args(argv)
    from editrl_engine.engine.demo.run import run_demo

    busy = cpu_busy_fraction()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            result = run_demo([*args.set, f"run.seed={seed}", f"run.out_dir='{tmp}/seed-{seed}'",
                               "log.progress=false"], quiet=True)
            result.pop("run_folder")
            results.append(result)
            print(f"seed {seed}: {result['reward_before']:.3f} -> {result['reward_after']:.3f} "
                  f"({result['gain']:+.3f}) in {result['seconds']:.0f} s", flush=True)
    summary = acceptance(results)
    rows = [[str(r["seed"]), f"{r['reward_before']:.3f}", f"{r['reward_after']:.3f}", f"{r['gain']:+.3f}",
             f"{r['seconds']:.0f}"] for r in results]
    print(format_table(["seed", "before RL", "after RL", "gain", "seconds"], rows))
    print(f"mean gain {summary['mean_gain']:+.3f}, std of after-RL {summary['std_after']:.4f}, "
          f"mean after-RL {summary['mean_after']:.3f}")
    for name, ok in summary["checks"].items():
        print(f"  {name}: {'PASS' if ok else 'FAIL'}")
    write_json_atomic(args.out, {"benchmark": "demo", "device": describe_device(torch.device("cpu")),
                                 "versions": versions(), "cpu_busy_before": busy, "threads": torch.get_num_threads(),
                                 "overrides": args.set, "seeds": results, "acceptance": summary})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
