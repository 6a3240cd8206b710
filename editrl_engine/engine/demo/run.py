"""`editrl demo`: the embedded default run, end to end on the CPU in a few minutes.

The shipped config `demo` (configs/demo.toml) describes it: the 16x16 shapes task, the demo Kontext policy started
from the shipped supervised warm-up (warmup.safetensors, trained on imperfect edits), the programmatic reward,
DiffusionNFT with a LoRA. The run folder gets metrics.jsonl, reward_curve.png, before_after.png (two-shape tasks
first, so the shape that must stay is in view), the LoRA (lora/, loadable by diffusers' FluxKontextPipeline.
load_lora_weights) and summary.json. Printed before and after RL: the held-out reward and the object-level rates
the reward's per-object verdicts give (object_rates): the named shape removed (one- and two-shape tasks) and the
other shape kept (two-shape tasks).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ...atomic import write_json_atomic
from ..config import load_config
from ..evaluation import evaluate_policy
from ..figures import before_after_grid, reward_curve, save_png
from ..metrics import read_metrics
from ..tasks import TaskSet
from ..trainer import Trainer, build_policy, build_reward
from .task import EVAL_SEED


def run_demo(overrides: Sequence[str] = (), *, quiet: bool = False) -> dict:
    """Run the demo config (with `section.key=value` overrides); returns the summary written to summary.json."""
    config = load_config("demo", list(overrides))
    say = (lambda *a: None) if quiet else print
    start = time.perf_counter()
    torch.set_num_threads(config.run.threads or torch.get_num_threads())
    policy = build_policy(config, torch.device(config.run.device))
    reward = build_reward(config, torch.device(config.run.device))
    held_out = TaskSet.from_config(config.data, held_out=True)
    steps = config.sampling.eval_steps
    say(f"editrl demo: {config.run.steps} DiffusionNFT steps of {config.sampling.groups_per_step} prompts x "
        f"{config.sampling.group_size} samples; held-out set: {len(held_out.rows)} tasks")
    before = evaluate_policy(policy, reward, held_out, num_steps=steps, seed=EVAL_SEED)
    say(f"supervised warm-up: held-out reward {before['reward_mean']:.3f}; "
        f"{_rates_line(object_rates(before['details']))}")
    trainer = Trainer(config, policy=policy, reward=reward)
    summary = trainer.train()
    after = evaluate_policy(trainer.policy, reward, held_out, num_steps=steps, seed=EVAL_SEED)
    out = config.out_dir
    _copy_lora(Path(summary["checkpoint"]) / "lora", out / "lora")
    rows = read_metrics(out / "metrics.jsonl")
    save_png(reward_curve([r["step"] for r in rows], [r["reward_mean"] for r in rows],
                          eval_points=[(0, before["reward_mean"]), (config.run.steps, after["reward_mean"])],
                          title="demo: training reward (held-out before / after as markers)"),
             out / "reward_curve.png")
    tasks = _shape_tasks(held_out)
    order = sorted(range(len(tasks)), key=lambda i: len(tasks[i].shapes) == 1)     # two-shape tasks first
    targets = torch.stack([tasks[i].target_image() for i in order])
    save_png(before_after_grid(before["sources"][order], before["images"][order], after["images"][order], targets,
                               before["rewards"][order], after["rewards"][order]), out / "before_after.png")
    rates_before, rates_after = object_rates(before["details"]), object_rates(after["details"])
    result = {"held_out_tasks": len(held_out.rows), "eval_steps": steps, "eval_seed": EVAL_SEED,
              "reward_before": before["reward_mean"], "reward_after": after["reward_mean"],
              "gain": after["reward_mean"] - before["reward_mean"], "rates_before": rates_before,
              "rates_after": rates_after, "rl_steps": config.run.steps, "seed": config.run.seed,
              "seconds": time.perf_counter() - start, "run_folder": str(out)}
    write_json_atomic(out / "summary.json", result)
    say(f"held-out reward: supervised warm-up {result['reward_before']:.3f} -> after RL {result['reward_after']:.3f} "
        f"({result['gain']:+.3f}) in {result['seconds']:.0f} s")
    say(_rates_change(rates_before, rates_after))
    say(f"run folder: {out} (metrics.jsonl, reward_curve.png, before_after.png, lora/, summary.json)")
    return result


def object_rates(details: Sequence[dict]) -> dict:
    """The object-level rates of held-out samples from the programmatic reward's per-object verdicts:
    {"named_removed": over every task, "named_removed_one_shape", "named_removed_two_shapes",
    "other_kept_two_shapes", "both_two_shapes" (named removed and other kept), and the task counts
    "one_shape", "two_shapes"}; a rate over no task is None."""
    one = [d for d in details if d["others_kept"] is None]
    two = [d for d in details if d["others_kept"] is not None]

    def rate(rows, passed):
        return sum(map(passed, rows)) / len(rows) if rows else None

    return {"named_removed": rate(details, lambda d: d["named_edited"]),
            "named_removed_one_shape": rate(one, lambda d: d["named_edited"]),
            "named_removed_two_shapes": rate(two, lambda d: d["named_edited"]),
            "other_kept_two_shapes": rate(two, lambda d: d["others_kept"]),
            "both_two_shapes": rate(two, lambda d: d["named_edited"] and d["others_kept"]),
            "one_shape": len(one), "two_shapes": len(two)}


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _rates_line(rates: dict) -> str:
    return (f"two-shape tasks (n={rates['two_shapes']}): named shape removed "
            f"{_percent(rates['named_removed_two_shapes'])}, other shape kept "
            f"{_percent(rates['other_kept_two_shapes'])}; one-shape tasks (n={rates['one_shape']}): shape removed "
            f"{_percent(rates['named_removed_one_shape'])}")


def _rates_change(before: dict, after: dict) -> str:
    def change(key):
        return f"{_percent(before[key])} -> {_percent(after[key])}"
    return (f"two-shape tasks (n={before['two_shapes']}): named shape removed {change('named_removed_two_shapes')}, "
            f"other shape kept {change('other_kept_two_shapes')}; one-shape tasks (n={before['one_shape']}): "
            f"shape removed {change('named_removed_one_shape')}")


def _shape_tasks(tasks: TaskSet):
    from ...data.synthetic import ShapeTask
    return [ShapeTask.from_row(row) for row in tasks.rows]


def _copy_lora(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
