#!/usr/bin/env python
"""Does the demo's VLM verifier look at the edited image? A diagnosis of `editrl demo-verifier --verifier vlm`
(verifier_train/demo.py).

That verifier is the real Qwen2.5-VL verifier code path at the `demo` preset with random weights. This script
trains its SFT stage on the demo's data with three choices of trained weights and measures, every --every steps:
  gap       the SFT loss (nats per trace token) on 32 fixed training traces with each row's edited image moved to
            another row, minus the loss with the right images: 0 when the model ignores the edited image
  accuracy  held-out strict pairwise accuracy (greedy traces; ties and unparseable answers wrong)
and, before training, how much swapping the edited image moves the hidden states at the trace positions (relative
change per layer). Variants:
  lora-lm         the demo's choice: LoRA on the language model's projections and the output head
  lora-lm-vision  the same plus LoRA on the vision tower's projections and patch merger
  full            every weight trained (no LoRA)
--edited-view difference shows the verifier 128 + 2 (edited - source) in place of every edited image: the comparison
a small prototype verifier's front end was given as an input.

    python bench/verifier_image_dependence.py --steps 1000 --every 250
    python bench/verifier_image_dependence.py --variants lora-lm-vision --batch 32 --steps 1200 --every 300 \
        --out bench/results/verifier-image-dependence-b32-cpu.json
    python bench/verifier_image_dependence.py --variants lora-lm-vision --edited-view difference --batch 16 \
        --lr 5e-4 --steps 900 --every 300 --threads 2 \
        --out bench/results/verifier-image-dependence-difference-b16-cpu.json
Runs the variants one after another (one thread each unless --threads); writes
bench/results/verifier-image-dependence-cpu.json atomically.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, format_table, versions, write_json_atomic  # noqa: E402


def train_all_weights(model) -> None:
    """Every weight of the VLM trained alongside the (then redundant) LoRA."""
    base = [p for n, p in model.model.named_parameters() if "lora_" not in n]
    for p in base:
        p.requires_grad_(True)
    lora = model.parameters
    model.parameters = lambda adapter="default": lora(adapter) + base


def hidden_shift(model, rows) -> list[float]:
    """Relative change of the last 5 positions' hidden states, per layer, when the edited image is swapped for
    another candidate's of the same task."""
    from editrl_engine.verifier_train.model import Item
    a, b = rows

    def hidden(edited):
        batch = model.batch([Item(a.sources, edited, a.instruction, a.principles)], [model.encode_trace(a.trace)])
        with torch.no_grad():
            out = model.model(**{k: v for k, v in batch.items() if k != "mask"}, output_hidden_states=True,
                              use_cache=False)
        return [h[0, -5:] for h in out.hidden_states]
    return [float((x - y).norm() / y.norm()) for x, y in zip(hidden(b.edited), hidden(a.edited))]


def demo_data(args) -> tuple[list, list, list]:
    """The demo's SFT rows and training pairs (its full setting's tasks, or --train-tasks) and --eval-tasks
    held-out pairs."""
    from editrl_engine.data.synthetic import make_tasks
    from editrl_engine.verifier_train.demo import SETTINGS, SIZE
    from editrl_engine.verifier_train.demo_task import build, held_out_pairs
    tasks = make_tasks(args.train_tasks or SETTINGS["vlm"]["train_tasks"], seed=args.seed, size=SIZE)
    sft_rows, pairs, _ = build(tasks, args.seed, args.edited_view)
    eval_rows, _ = held_out_pairs(args.eval_tasks, seed=10_000 + args.seed, size=SIZE, edited_view=args.edited_view)
    return sft_rows, pairs, eval_rows


def run_variant(variant: str, args, data: tuple[list, list, list]) -> dict:
    from editrl_engine.verifier_train.demo import SETTINGS, TARGETS, VISION_TARGETS, demo_config
    from editrl_engine.verifier_train.model import Item
    from editrl_engine.verifier_train.trainer import VerifierTrainer, sft_loss

    settings = dict(SETTINGS["vlm"], sft_steps=args.steps, gcpo_steps=0)
    sft_rows, pairs, eval_rows = data
    targets = TARGETS + VISION_TARGETS if variant == "lora-lm-vision" else TARGETS
    config = demo_config(f"{args.work}/{variant}", args.seed, settings, f"run.eval_every={args.every}",
                         f"model.lora_targets='{targets}'", f"sft.batch={args.batch}", f"sft.lr={args.lr}",
                         *args.set)
    trainer = VerifierTrainer(config, sft_rows=sft_rows, preference_rows=pairs, eval_rows=eval_rows)
    model = trainer.model
    if variant == "full":
        train_all_weights(model)
    probe = random.Random(1).sample(sft_rows, 32)

    def probe_loss(shift: int) -> float:
        edited = [probe[(i + shift) % len(probe)].edited for i in range(len(probe))]
        items = [Item(r.sources, e, r.instruction, r.principles) for r, e in zip(probe, edited)]
        with torch.no_grad():
            return float(sft_loss(model, model.batch(items, [model.encode_trace(r.trace) for r in probe])))

    curve, started, evaluate = [], time.perf_counter(), trainer.evaluate

    def measured() -> dict:
        out = evaluate()
        right, moved = probe_loss(0), probe_loss(1)
        curve.append({"step": trainer.step, "loss": right, "loss_images_moved": moved, "gap": moved - right,
                      "accuracy": out["eval_accuracy"], "parse_failures": out["eval_parse_failures"],
                      "seconds": time.perf_counter() - started})
        print(f"  {variant} step {trainer.step}: loss {right:.4f} gap {moved - right:+.5f} accuracy "
              f"{out['eval_accuracy']:.3f}", flush=True)
        return out
    trainer.evaluate = measured
    shift = hidden_shift(model, (sft_rows[0], sft_rows[3]))                 # two candidates of the first task
    trainer.run()
    return {"variant": variant, "targets": targets, "hidden_shift_at_init": shift, "curve": curve}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["lora-lm", "lora-lm-vision", "full"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=8, help="SFT traces per step (the demo's: 8)")
    parser.add_argument("--train-tasks", type=int, default=0, help="synthetic training tasks (0: the demo's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="SFT learning rate (the demo's: 1e-3)")
    parser.add_argument("--edited-view", choices=["image", "difference"], default="image",
                        help="show the verifier the edited image (the demo's), or 128 + 2 (edited - source)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a further train-verifier override, e.g. --set sft.schedule=cosine --set sft.warmup=50")
    parser.add_argument("--eval-tasks", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/verifier-image-dependence")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "verifier-image-dependence-cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = demo_data(args)                                    # the same rows for every variant
    results = [run_variant(v, args, data) for v in args.variants]
    rows = [[r["variant"], str(c["step"]), f"{c['loss']:.4f}", f"{c['gap']:+.5f}", f"{c['accuracy']:.3f}"]
            for r in results for c in r["curve"]]
    print(format_table(["variant", "step", "SFT loss", "gap (images moved)", "held-out accuracy"], rows))
    write_json_atomic(args.out, {"benchmark": "verifier-image-dependence", "versions": versions(),
                                 "settings": vars(args) | {"out": str(args.out)}, "variants": results})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
