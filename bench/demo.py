"""The demo's acceptance over several RL seeds from the shipped warm-up: held-out reward and object-level rates
before and after RL, and Best-of-N from the warm-up and from each RL'd editor.

    python bench/demo.py                       # seeds 0 1 2 -> bench/results/demo-cpu.json

Each seed is one `editrl demo --set run.seed=S` (same shipped checkpoint, same held-out set and evaluation seeds;
the seed changes the LoRA initialisation, the group draws and every rollout's noise). Acceptance, every seed,
on the held-out two-shape tasks (the object-level rates come from the programmatic reward's per-object verdicts,
which tests/test_engine_demo_run.py checks against an evaluation of its own):
  after RL the named shape is removed in >= 85 % and the other shape kept in >= 85 %;
  the rate of the two the warm-up is worst at improves by >= 15 points; neither rate drops;
  held-out reward gain >= 0.10; the run takes <= 180 s.
Best-of-N (--best-of, default 1 4 8): the share of held-out tasks whose highest-reward candidate of N is a correct
edit (named shape removed, other shape kept), for the warm-up and for each seed's RL'd editor.
Runs one seed at a time, with the machine otherwise idle for the timings.
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

REMOVED, KEPT = "named_removed_two_shapes", "other_kept_two_shapes"
MAX_SECONDS = 180.0


def seed_checks(result: dict) -> dict[str, bool]:
    """The demo's acceptance for one seed's run summary."""
    before, after = result["rates_before"], result["rates_after"]
    worst = min((REMOVED, KEPT), key=lambda key: before[key])
    return {
        "named_removed_at_least_85%": after[REMOVED] >= 0.85,
        "other_kept_at_least_85%": after[KEPT] >= 0.85,
        f"worst_rate_({worst})_up_15_points": after[worst] - before[worst] >= 0.15,
        "no_rate_drops": all(after[key] >= before[key] for key in (REMOVED, KEPT)),
        "gain_at_least_0.10": result["gain"] >= 0.10,
        "run_at_most_180s": result["seconds"] <= MAX_SECONDS,
    }


def acceptance(results: list[dict]) -> dict:
    checks = {f"seed {r['seed']}": seed_checks(r) for r in results}
    return {"mean_gain": statistics.mean(r["gain"] for r in results),
            "mean_before": statistics.mean(r["reward_before"] for r in results),
            "mean_after": statistics.mean(r["reward_after"] for r in results),
            "checks": checks, "pass": all(all(c.values()) for c in checks.values())}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--best-of", type=int, nargs="*", default=[1, 4, 8], metavar="N",
                        help="Best-of-N candidate counts (none: skip Best-of-N)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="demo config overrides")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo-cpu.json")
    args = parser.parse_args(argv)
    from editrl_engine.engine.config import load_config
    from editrl_engine.engine.demo.best_of_n import best_of_n_success
    from editrl_engine.engine.demo.pretrain import load_demo_editor
    from editrl_engine.engine.demo.run import run_demo
    from editrl_engine.engine.tasks import TaskSet

    busy = cpu_busy_fraction()
    results, best_of = [], {}
    held_out = TaskSet.from_config(load_config("demo", list(args.set)).data, held_out=True)
    if args.best_of:
        best_of["warm-up"] = best_of_n_success(load_demo_editor(), held_out, args.best_of)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            result = run_demo([*args.set, f"run.seed={seed}", f"run.out_dir='{tmp}/seed-{seed}'",
                               "log.progress=false"], quiet=True)
            folder = result.pop("run_folder")
            results.append(result)
            b, a = result["rates_before"], result["rates_after"]
            print(f"seed {seed}: reward {result['reward_before']:.3f} -> {result['reward_after']:.3f} "
                  f"({result['gain']:+.3f}); two-shape: named removed {_pct(b[REMOVED])} -> {_pct(a[REMOVED])}, "
                  f"other kept {_pct(b[KEPT])} -> {_pct(a[KEPT])}; {result['seconds']:.0f} s", flush=True)
            if args.best_of:
                best_of[f"seed {seed}"] = best_of_n_success(load_demo_editor(f"{folder}/lora"), held_out,
                                                            args.best_of)
    summary = acceptance(results)
    rows = [[str(r["seed"]), f"{r['reward_before']:.3f}", f"{r['reward_after']:.3f}", f"{r['gain']:+.3f}",
             f"{_pct(r['rates_before'][REMOVED])} -> {_pct(r['rates_after'][REMOVED])}",
             f"{_pct(r['rates_before'][KEPT])} -> {_pct(r['rates_after'][KEPT])}",
             f"{_pct(r['rates_before']['named_removed_one_shape'])} -> "
             f"{_pct(r['rates_after']['named_removed_one_shape'])}", f"{r['seconds']:.0f}"] for r in results]
    print(format_table(["seed", "reward before", "after", "gain", "2-shape named removed", "2-shape other kept",
                        "1-shape removed", "seconds"], rows))
    if best_of:
        print("Best-of-N: share of held-out tasks whose highest-reward candidate is a correct edit")
        print(format_table(["editor", *[f"N={n}" for n in args.best_of]],
                           [[name, *[_pct(rates[n]) for n in args.best_of]] for name, rates in best_of.items()]))
    for name, checks in summary["checks"].items():
        print(f"  {name}: " + ", ".join(f"{check} {'PASS' if ok else 'FAIL'}" for check, ok in checks.items()))
    write_json_atomic(args.out, {"benchmark": "demo", "device": describe_device(torch.device("cpu")),
                                 "versions": versions(), "cpu_busy_before": busy, "threads": torch.get_num_threads(),
                                 "overrides": args.set, "seeds": results,
                                 "best_of_n": {name: {str(n): v for n, v in rates.items()}
                                               for name, rates in best_of.items()},
                                 "acceptance": summary})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
