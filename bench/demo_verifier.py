"""The verifier demo's acceptance over several seeds (`editrl demo-verifier`, verifier_train/demo.py).

    python bench/demo_verifier.py                  # seeds 0 1 2 -> bench/results/demo-verifier-cpu.json
    python bench/demo_verifier.py --verifier vlm   # the VLM verifier (~20 minutes a seed) -> demo-verifier-vlm-cpu.json

Acceptance, every seed, on the fixed held-out set (150 tasks, one preference pair each): strict pairwise accuracy
after SFT >= 0.55 with parse failures < 1 %; during GCPO the held-out accuracy never falls more than 2 points below
the SFT start, and the training reward rises (mean of the last half of GCPO steps above the first half). Reports
the GCPO gain (after GCPO - after SFT) with its spread over seeds and, beside it, the gain of spending GCPO's wall
time on more SFT instead (demo.more_sft: SFT continued from the same SFT checkpoint). Runs one seed at a time, the
machine otherwise idle for the timings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, cpu_busy_fraction, versions, write_json_atomic  # noqa: E402


def seed_checks(result: dict) -> dict[str, bool]:
    rewards = result["gcpo_train_reward"]
    half = len(rewards) // 2
    rising = half > 0 and statistics.mean(rewards[half:]) > statistics.mean(rewards[:half])
    return {"sft_accuracy_at_least_0.55": result["after_sft"] >= 0.55,
            "parse_failures_below_1%": result["parse_failures_after_sft"] < 0.01,
            "gcpo_never_2_points_below_sft": result["gcpo_accuracy_min"] >= result["after_sft"] - 0.02,
            "gcpo_train_reward_rises": rising}


def summarise(results: list[dict], busy: float, settings: dict) -> dict:
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    gains = [r["after_gcpo"] - r["after_sft"] for r in results]
    sft_gains = [r["after_more_sft"] - r["after_sft"] for r in results]
    checks = {f"seed {r['seed']}": seed_checks(r) for r in results}
    return {"benchmark": "demo-verifier", "versions": versions(), "cpu_busy_at_start": busy,
            "settings": settings, "seeds": results,
            "gcpo_gain_mean": statistics.mean(gains), "gcpo_gain_stdev": spread(gains),
            "same_time_sft_gain_mean": statistics.mean(sft_gains), "same_time_sft_gain_stdev": spread(sft_gains),
            "checks": checks, "pass": all(all(c.values()) for c in checks.values())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--verifier", choices=["small", "vlm"], default="small",
                        help="which verifier the demo trains (verifier_train/demo.py; default: small)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/demo-verifier-cpu.json (-vlm-cpu.json for the VLM)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each seed's run folder (checkpoints, metrics, lora) under WORK/seed-S; "
                             "default: a temporary folder, removed at the end")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS_DIR / f"demo-verifier{'-vlm' if args.verifier == 'vlm' else ''}-cpu.json"
    from editrl_engine.verifier_train.demo import SETTINGS, run
    settings = SETTINGS[args.verifier]

    busy, results = cpu_busy_fraction(), []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:                          # the report is rewritten after each seed
            results.append(run(seed, f"{work}/seed-{seed}", settings, same_time_sft=True))
            report = summarise(results, busy, settings)
            write_json_atomic(args.out, report)
    gains = [r["after_gcpo"] - r["after_sft"] for r in results]
    for r, gain in zip(results, gains):
        print(f"seed {r['seed']}: after SFT {r['after_sft']:.3f} after GCPO {r['after_gcpo']:.3f} (gain {gain:+.3f}), "
              f"SFT for the same time instead {r['after_more_sft']:.3f} (+{r['extra_sft_steps']} steps); "
              f"parse failures {r['parse_failures_after_sft']:.3f} {r['seconds']:.0f} s")
    print(f"GCPO gain {report['gcpo_gain_mean']:+.3f} ± {report['gcpo_gain_stdev']:.3f}, the same time on SFT "
          f"{report['same_time_sft_gain_mean']:+.3f} ± {report['same_time_sft_gain_stdev']:.3f}; "
          f"pass {report['pass']} -> {args.out}")


if __name__ == "__main__":
    main()
