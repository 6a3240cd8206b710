"""`editrl demo`: the embedded default run, end to end on the CPU in a few minutes.

The shipped config `demo` (configs/demo.toml) describes it: the 16x16 shapes task, the demo Kontext policy started
from the shipped supervised warm-up (warmup.safetensors, trained on imperfect edits), the programmatic reward,
DiffusionNFT with a LoRA. The run folder gets metrics.jsonl, reward_curve.png, before_after.png, the LoRA
(lora/, loadable by diffusers' FluxKontextPipeline.load_lora_weights), summary.json, and the held-out reward
before and after RL is printed.
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
    say(f"held-out reward of the supervised warm-up: {before['reward_mean']:.3f}")
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
    targets = torch.stack([t.target_image() for t in _shape_tasks(held_out)])
    save_png(before_after_grid(before["sources"], before["images"], after["images"], targets,
                               before["rewards"], after["rewards"]), out / "before_after.png")
    result = {"held_out_tasks": len(held_out.rows), "eval_steps": steps, "eval_seed": EVAL_SEED,
              "reward_before": before["reward_mean"], "reward_after": after["reward_mean"],
              "gain": after["reward_mean"] - before["reward_mean"], "rl_steps": config.run.steps,
              "seed": config.run.seed, "seconds": time.perf_counter() - start, "run_folder": str(out)}
    write_json_atomic(out / "summary.json", result)
    say(f"held-out reward: supervised warm-up {result['reward_before']:.3f} -> after RL {result['reward_after']:.3f} "
        f"({result['gain']:+.3f}) in {result['seconds']:.0f} s")
    say(f"run folder: {out} (metrics.jsonl, reward_curve.png, before_after.png, lora/, summary.json)")
    return result


def _shape_tasks(tasks: TaskSet):
    from ...data.synthetic import ShapeTask
    return [ShapeTask.from_row(row) for row in tasks.rows]


def _copy_lora(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
