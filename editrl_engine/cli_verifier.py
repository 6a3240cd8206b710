"""`editrl train-verifier` and `editrl demo-verifier`: their argparse subcommands (the training loads when run)."""
from __future__ import annotations

import argparse
import os


def _run_train_verifier(args: argparse.Namespace) -> None:
    from .verifier_train.config import load_verifier_config
    from .verifier_train.trainer import VerifierTrainer

    config = load_verifier_config(args.config, args.set)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:                # under torchrun: gradients averaged over ranks
        import torch
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() and config.model.device != "cpu" else "gloo")
    summary = VerifierTrainer(config).run(resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        last = summary["last"]
        print(f"step {summary['step']}: loss {last.get('loss', float('nan')):.4f}, held-out accuracy "
              f"{last.get('eval_accuracy', float('nan')):.3f}; run folder {config.run.out_dir} (LoRA in lora/)")


def add_train_verifier(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-verifier", help="train the principle verifier: SFT on reasoning traces, then GCPO on preferences",
        description="Train the chain-of-thought principle verifier (the `verifier` reward) on its own model, "
                    "prompts and parser: supervised fine-tuning on judged edits with traces, then GCPO (N sampled "
                    "traces per image of each preference pair, rewarded by the traces of the other image they "
                    "beat, PPO-clipped, KL to the SFT model). Writes metrics.jsonl, atomic checkpoints and lora/, "
                    "which load_reward('verifier', lora=DIR) loads. SIGTERM or Ctrl-C checkpoints and stops; "
                    "--resume continues. Under torchrun the LoRA gradients are averaged over the ranks.",
        epilog="Example: editrl train-verifier verifier.toml --set gcpo.steps=200 --set data.preferences=p.jsonl")
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="a TOML file ([model] [data] [sft] [gcpo] [run])")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set gcpo.traces=16 (repeatable; values are TOML)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    parser.set_defaults(run=_run_train_verifier)


def _run_demo_verifier(args: argparse.Namespace) -> None:
    from .verifier_train.demo import main
    main(args)


def add_demo_verifier(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-verifier", help="train a small verifier on the synthetic shapes task on the CPU (SFT, then GCPO)",
        description="The verifier-training demo: candidate edits of synthetic shapes tasks judged by their "
                    "object-level checks give SFT traces and preference pairs; a verifier is trained by SFT, then "
                    "GCPO, and its held-out pairwise accuracy (chance, after SFT, after GCPO), per-principle "
                    "accuracy, accuracy by pair kind and example traces are printed and written to the run folder.")
    parser.add_argument("--seed", type=int, default=0, help="the demo's seed (default: 0)")
    parser.add_argument("--out", default="runs/demo-verifier", help="run folder (default: runs/demo-verifier)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few steps (tests)")
    parser.add_argument("--verifier", choices=["small", "vlm"], default="small",
                        help="'small': a purpose-built 0.55 M-parameter verifier that writes the verifier's verdict "
                             "JSON (a few minutes on 2 cores); 'vlm': the verifier reward's own Qwen2.5-VL code path "
                             "at its demo preset with a LoRA (~20 minutes a seed on 2 cores, and it learns less; "
                             "docs/design.md). Default: small")
    parser.add_argument("--edited-view", choices=["difference", "image"], default=None,
                        help="what the verifier is shown of each edited image: 'image', as a real verifier sees it "
                             "(the small verifier's default: it computes the difference itself), or 'difference', "
                             "128 + 2 (edited - source) (the VLM's default: a random-weight VLM has no sight, and on "
                             "the edited image itself it never learns to read the edit)")
    parser.set_defaults(run=_run_demo_verifier)
