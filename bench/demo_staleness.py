"""The cost of the overlapped pipeline on the demo: pipeline.staleness 0 (DiffusionNFT / UniWorld-V2's exact order:
update, old-adapter update, then sample) against 1 (step k + 1 sampled from the old adapter before step k's update),
over several RL seeds, each run otherwise identical (bench/demo.py's machinery, `editrl demo --set ...`).

    python bench/demo_staleness.py             # seeds 0 1 2 -> bench/results/demo-staleness-cpu.json

Per run: held-out reward and object-level rates before and after RL, the run's seconds; per staleness the means,
and the mean differences (1 minus 0). Runs one at a time; the timings are only comparable on an otherwise idle
machine (cpu_busy_before records how busy it was).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS_DIR, cpu_busy_fraction, describe_device, format_table, versions, write_json_atomic  # noqa: E402
from demo import KEPT, REMOVED, _pct  # noqa: E402

STALENESS = (0, 1)
KEYS = ("reward_after", "gain", "seconds")
RATES = (REMOVED, KEPT, "named_removed_one_shape")


def summarise(runs: list[dict]) -> dict:
    """Means over one staleness's seeds: reward after RL, gain, seconds and each object-level rate after RL."""
    out = {key: statistics.mean(r[key] for r in runs) for key in KEYS}
    out.update({f"{rate}_after": statistics.mean(r["rates_after"][rate] for r in runs) for rate in RATES})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="demo config overrides")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo-staleness-cpu.json")
    args = parser.parse_args(argv)
    from editrl_engine.engine.demo.run import run_demo

    busy = cpu_busy_fraction()
    runs: dict[int, list[dict]] = {s: [] for s in STALENESS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for staleness in STALENESS:
                result = run_demo([*args.set, f"pipeline.staleness={staleness}", f"run.seed={seed}",
                                   f"run.out_dir='{tmp}/s{staleness}-seed-{seed}'", "log.progress=false"], quiet=True)
                result.pop("run_folder")
                runs[staleness].append({"staleness": staleness, **result})
                a = result["rates_after"]
                print(f"staleness {staleness} seed {seed}: reward {result['reward_before']:.3f} -> "
                      f"{result['reward_after']:.3f}; named removed {_pct(a[REMOVED])}, other kept {_pct(a[KEPT])}; "
                      f"{result['seconds']:.0f} s", flush=True)
    means = {str(s): summarise(runs[s]) for s in STALENESS}
    difference = {key: means["1"][key] - means["0"][key] for key in means["0"]}
    rows = [[str(r["staleness"]), str(r["seed"]), f"{r['reward_after']:.3f}", f"{r['gain']:+.3f}",
             _pct(r["rates_after"][REMOVED]), _pct(r["rates_after"][KEPT]),
             _pct(r["rates_after"]["named_removed_one_shape"]), f"{r['seconds']:.0f}"]
            for s in STALENESS for r in runs[s]]
    print(format_table(["staleness", "seed", "reward after", "gain", "2-shape named removed", "2-shape other kept",
                        "1-shape removed", "seconds"], rows))
    print("mean difference (staleness 1 - 0): " + ", ".join(f"{k} {v:+.3f}" for k, v in difference.items()))
    write_json_atomic(args.out, {"benchmark": "demo-staleness", "device": describe_device(torch.device("cpu")),
                                 "versions": versions(), "cpu_busy_before": busy, "threads": torch.get_num_threads(),
                                 "overrides": args.set, "seeds": args.seeds,
                                 "runs": {str(s): runs[s] for s in STALENESS}, "means": means,
                                 "difference_1_minus_0": difference})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
