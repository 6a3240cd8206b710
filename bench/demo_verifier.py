"""The verifier demo's acceptance over several seeds (`editrl demo-verifier`, verifier_train/demo.py).

    python bench/demo_verifier.py                  # seeds 0 1 2 -> bench/results/demo-verifier-cpu.json
    python bench/demo_verifier.py --verifier vlm   # the VLM verifier (~20 minutes a seed) -> demo-verifier-vlm-cpu.json

Acceptance, every seed, on the fixed held-out set (150 tasks, one preference pair each): strict pairwise accuracy
after SFT >= 0.55 with parse failures < 1 %; during GCPO the held-out accuracy never falls more than 2 points below
the SFT start, and the training reward rises: GCPO's reward on a fixed probe of training pairs, sampled from the
same seeds at each evaluation (gcpo.probe_pairs), higher after GCPO than at its start. The per-step train reward,
a mean over pairs drawn afresh each step, is reported beside it as half means (last half of GCPO's steps against
the first) with the standard error of their difference; without a probe the check reads those. The bench turns
the probe on (PROBE_PAIRS; it observes and does not change the run) and the demo's time, at most 5 minutes a seed,
is the seed's time less the probe's. Reports
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, cpu_busy_fraction, matmul_ceiling, versions, write_json_atomic  # noqa: E402


def half_means(rewards: list[float]) -> dict:
    """The per-step train reward's first and last half means and the standard error of their difference."""
    half = len(rewards) // 2
    first, last = rewards[:half], rewards[half:]
    if half < 2:
        return {"first": None, "last": None, "stderr": None}
    stderr = (statistics.variance(first) / len(first) + statistics.variance(last) / len(last)) ** 0.5
    return {"first": statistics.mean(first), "last": statistics.mean(last), "stderr": stderr}


PROBE_PAIRS = 64           # fixed training pairs whose GCPO reward each of GCPO's evaluations measures
DEMO_SECONDS = 300


def seed_checks(result: dict) -> dict[str, bool]:
    """The training reward rises: the fixed probe's last value above its first (the GCPO start) where the run has a
    probe; without one, the per-step train reward's last half mean above its first."""
    probe = result.get("gcpo_probe_reward") or []
    halves = half_means(result["gcpo_train_reward"])
    rising = probe[-1][1] > probe[0][1] if len(probe) > 1 else (halves["first"] is not None and
                                                                halves["last"] > halves["first"])
    return {"sft_accuracy_at_least_0.55": result["after_sft"] >= 0.55,
            "parse_failures_below_1%": result["parse_failures_after_sft"] < 0.01,
            "gcpo_never_2_points_below_sft": result["gcpo_accuracy_min"] >= result["after_sft"] - 0.02,
            "gcpo_train_reward_rises": rising,
            "demo_within_5_minutes": result["seconds"] - result.get("probe_seconds", 0.0) <= DEMO_SECONDS}


def summarise(results: list[dict], busy: float, settings: dict, ceiling: dict) -> dict:
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    gains = [r["after_gcpo"] - r["after_sft"] for r in results]
    sft_gains = [r["after_more_sft"] - r["after_sft"] for r in results]
    checks = {f"seed {r['seed']}": seed_checks(r) for r in results}
    return {"benchmark": "demo-verifier", "versions": versions(), "cpu_busy_at_start": busy,
            "matmul_ceiling": ceiling, "settings": settings, "seeds": results,
            "train_reward_half_means": {f"seed {r['seed']}": half_means(r["gcpo_train_reward"]) for r in results},
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
    settings = dict(settings, gcpo=[*settings["gcpo"], f"gcpo.probe_pairs={PROBE_PAIRS}"])   # the bench's probe

    busy, results = cpu_busy_fraction(), []
    ceiling = matmul_ceiling(torch.device("cpu"), torch.float32, 1024, repeats=20)     # the machine's speed
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:                          # the report is rewritten after each seed
            results.append(run(seed, f"{work}/seed-{seed}", settings, same_time_sft=True))
            report = summarise(results, busy, settings, ceiling)
            write_json_atomic(args.out, report)
    gains = [r["after_gcpo"] - r["after_sft"] for r in results]
    for r, gain in zip(results, gains):
        print(f"seed {r['seed']}: after SFT {r['after_sft']:.3f} after GCPO {r['after_gcpo']:.3f} (gain {gain:+.3f}), "
              f"SFT for the same time instead {r['after_more_sft']:.3f} (+{r['extra_sft_steps']} steps); "
              f"parse failures {r['parse_failures_after_sft']:.3f}; the demo {r['seconds'] - r['probe_seconds']:.0f} s "
              f"and the bench's reward probe {r['probe_seconds']:.0f} s")
        halves = report["train_reward_half_means"][f"seed {r['seed']}"]
        if halves["first"] is not None:
            probe = ", ".join(f"{value:.3f}" for _, value in r.get("gcpo_probe_reward") or [])
            change = r.get("gcpo_probe_change") or {}
            if change:
                probe += f" (change {change['mean']:+.3f} ± {change['stderr']:.3f} over {change['pairs']} pairs)"
            print(f"  train reward on the fixed probe: {probe or 'none'}; per step, first half {halves['first']:.3f} "
                  f"last half {halves['last']:.3f} (difference ± {halves['stderr']:.3f})")
    print(f"GCPO gain {report['gcpo_gain_mean']:+.3f} ± {report['gcpo_gain_stdev']:.3f}, the same time on SFT "
          f"{report['same_time_sft_gain_mean']:+.3f} ± {report['same_time_sft_gain_stdev']:.3f}; "
          f"pass {report['pass']} -> {args.out}")
    print(f"machine: a 1024^3 float32 matmul runs at {1000 * ceiling['tflops']:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
