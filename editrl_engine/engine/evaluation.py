"""Held-out evaluation: one deterministic Euler sample per task (fixed seeds), scored by a reward.

The same seeds are used before and after training, so a change in the mean reward is the policy's, not the
noise's. NaN rewards (unparseable judge answers) are left out of the mean and counted.

    images = sample_items(policy, tasks, [(task index, seed), ...], num_steps=8)   # uint8 [n, 3, H, W]

`sample_items` is the sampling half on its own (the gold-judge watch, engine/watch.py, scores the same images with
two rewards); an item's image depends only on its task, its seed and the weights, never on the batch it is in.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..policy.samplers import ode_sample
from .tasks import TaskSet


def finite_mean(rewards: torch.Tensor) -> float:
    """The mean of the finite rewards (NaN: an unparseable answer, left out); NaN when none is finite."""
    finite = torch.isfinite(rewards)
    return rewards[finite].mean().item() if finite.any() else math.nan


@torch.no_grad()
def sample_items(policy, tasks: TaskSet, items: Sequence[tuple[int, int]], *, num_steps: int = 8,
                 batch_size: int = 64, guidance: float | None = None) -> torch.Tensor:
    """One Euler sample per item (task index, seed) from that seed's noise: uint8 [n, 3, H, W] on the CPU. The
    policy applies its own autocast (load_policy(autocast=...))."""
    sources = [tasks.image(tasks.keys[i], tasks.rows[i]) for i, _ in items]
    instructions = [tasks.rows[i].instruction for i, _ in items]
    batch_size = batch_size or len(items)
    images = []
    for lo in range(0, len(items), batch_size):
        hi = min(lo + batch_size, len(items))
        cond = policy.encode(sources[lo:hi], instructions[lo:hi])
        x0 = ode_sample(policy, cond, num_steps=num_steps, solver="euler", seed=[s for _, s in items[lo:hi]],
                        guidance=guidance)
        images.append(policy.decode(x0, cond).cpu())                            # uint8 [b, 3, H, W]
    return torch.cat(images)


@torch.no_grad()
def evaluate_policy(policy, reward, tasks: TaskSet, *, num_steps: int = 8, seed: int = 1234,
                    batch_size: int = 64) -> dict:
    """Returns {reward_mean, reward_nan, rewards [N], details (the reward's, one per task), images uint8
    [N, 3, H, W], sources uint8 [N, 3, H, W]}."""
    sources = [tasks.image(key, row) for key, row in zip(tasks.keys, tasks.rows)]
    instructions = [row.instruction for row in tasks.rows]
    images = sample_items(policy, tasks, [(i, seed + i) for i in range(len(tasks.rows))], num_steps=num_steps,
                          batch_size=batch_size)
    batch = reward.score(sources, instructions, list(images), rows=tasks.rows)     # each reward reads its rows
    rewards = batch.reward.float().cpu()                                        # [N]
    finite = torch.isfinite(rewards)
    mean = finite_mean(rewards)
    return {"reward_mean": mean, "reward_nan": int((~finite).sum()), "rewards": rewards,
            "details": list(batch.details), "images": images, "sources": torch.stack(sources)}
