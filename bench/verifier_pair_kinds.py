"""Which held-out judgements the demo's SFT verifier gets wrong, and whether GCPO's sampled groups carry a signal on
them (`editrl demo-verifier`, verifier_train/demo.py).

    python bench/demo_verifier.py --work /tmp/demo                  # keeps each seed's run folder
    python bench/verifier_pair_kinds.py /tmp/demo --seeds 0 1 2     # -> bench/results/verifier-pair-kinds-cpu.json
    (--verifier vlm for a run of the VLM verifier: -> verifier-pair-kinds-vlm-cpu.json)

For each seed, from the SFT model's checkpoint in WORK/seed-S, and for each kind of held-out pair ("target>erased":
the exact target preferred over every shape erased; demo.pair_kind_accuracy): greedy strict pairwise accuracy, and
over GCPO's sampled groups (N traces an image at the demo's temperature and top-p, the trainer's gcpo_step code path):
the fraction of groups whose rewards all agree (zero variance: no policy gradient) and the mean GCPO reward. A kind
the verifier gets wrong under greedy decoding but whose groups vary is one GCPO can learn from.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, cpu_busy_fraction, versions, write_json_atomic  # noqa: E402


def group_statistics(trainer, rows, which) -> dict[str, dict]:
    """Per pair kind: zero-variance fraction and mean reward of the 2 groups (preferred, rejected) of each pair."""
    import torch

    from editrl_engine.verifier_train import gcpo
    n = trainer.config.gcpo.traces
    kinds: dict[str, list[torch.Tensor]] = {}
    for index, (row, (_task, a, b)) in enumerate(zip(rows, which)):
        tau = trainer.sample_pair_groups(row, seed=index)[3]                                  # [2N]
        kinds.setdefault(f"{a.name}>{b.name}", []).extend(gcpo.pair_rewards(tau[:n], tau[n:]))
    out = {}
    for kind, groups in sorted(kinds.items()):
        rewards = torch.stack(groups)                                                          # [groups, N]
        zero = gcpo.group_advantages(rewards)[1]                                               # [groups]
        out[kind] = {"groups": len(groups), "zero_variance": float(zero.float().mean()),
                     "mean_reward": float(rewards.mean())}
    return out


def seed_report(work: Path, seed: int, preset: str = "small") -> dict:
    from editrl_engine.verifier_train.demo import (
        SETTINGS,
        demo_config,
        eval_set,
        new_model,
        pair_kind_accuracy,
        start_from_sft_model,
        training_rows,
    )
    from editrl_engine.verifier_train.trainer import VerifierTrainer
    settings = dict(SETTINGS[preset], gcpo_steps=0)
    rows, which = eval_set(seed, settings)
    sft_rows = training_rows(seed, settings)[0]                    # the SFT model's vocabulary (SmallVerifier)
    with tempfile.TemporaryDirectory() as tmp:
        start_from_sft_model(work / f"seed-{seed}", tmp, settings)
        trainer = VerifierTrainer(demo_config(tmp, seed, settings, "run.checkpoint_every=0"), sft_rows=sft_rows,
                                  preference_rows=[], eval_rows=[], model=new_model(settings, seed, sft_rows))
        trainer.run(resume=True)                      # loads the SFT model; no step is left to run
        greedy = pair_kind_accuracy(trainer.judge_pairs(rows), which)
        sampled = group_statistics(trainer, rows, which)
    return {"seed": seed, "kinds": {k: {**greedy[k], **sampled[k]} for k in greedy}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="bench/demo_verifier.py's --work folder (seed-S/checkpoints)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--verifier", choices=["small", "vlm"], default="small",
                        help="the verifier the demo run trained (default: small)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick settings (a smoke run's folders)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/verifier-pair-kinds-cpu.json (-vlm-cpu.json for the VLM)")
    args = parser.parse_args(argv)
    suffix = "-vlm" if args.verifier == "vlm" else ""
    args.out = args.out or RESULTS_DIR / f"verifier-pair-kinds{suffix}-cpu.json"
    busy, seeds = cpu_busy_fraction(), []
    for seed in args.seeds:
        seeds.append(seed_report(args.work, seed, args.verifier + ("-quick" if args.quick else "")))
        write_json_atomic(args.out, {"benchmark": "verifier-pair-kinds", "versions": versions(),
                                     "cpu_busy_at_start": busy, "seeds": seeds})
        print(f"seed {seed}  {'kind':<16} pairs  greedy accuracy  zero-variance groups  mean GCPO reward")
        for kind, k in seeds[-1]["kinds"].items():
            print(f"        {kind:<16} {k['pairs']:>5}  {k['accuracy']:>15.3f}  {k['zero_variance']:>20.3f}  "
                  f"{k['mean_reward']:>16.3f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
