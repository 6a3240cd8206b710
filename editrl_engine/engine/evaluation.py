"""Held-out evaluation: one deterministic Euler sample per task (fixed seeds), scored by a reward.

The same seeds are used before and after training, so a change in the mean reward is the policy's, not the
noise's. NaN rewards (unparseable judge answers) are left out of the mean and counted.
"""
from __future__ import annotations

import math

import torch

from ..policy.samplers import ode_sample
from .tasks import TaskSet, reward_options


@torch.no_grad()
def evaluate_policy(policy, reward, tasks: TaskSet, *, num_steps: int = 8, seed: int = 1234,
                    batch_size: int = 64) -> dict:
    """Returns {reward_mean, reward_nan, rewards [N], images uint8 [N, 3, H, W], sources uint8 [N, 3, H, W]}."""
    sources = [tasks.image(key, row) for key, row in zip(tasks.keys, tasks.rows)]
    instructions = [row.instruction for row in tasks.rows]
    images = []
    for lo in range(0, len(sources), batch_size):
        hi = min(lo + batch_size, len(sources))
        cond = policy.encode(sources[lo:hi], instructions[lo:hi])
        x0 = ode_sample(policy, cond, num_steps=num_steps, solver="euler", seed=[seed + i for i in range(lo, hi)])
        images.append(policy.decode(x0, cond).cpu())                            # uint8 [b, 3, H, W]
    images = torch.cat(images)
    batch = reward.score(sources, instructions, list(images), **reward_options(reward, tasks.rows))
    rewards = batch.reward.float().cpu()                                        # [N]
    finite = torch.isfinite(rewards)
    mean = rewards[finite].mean().item() if finite.any() else math.nan
    return {"reward_mean": mean, "reward_nan": int((~finite).sum()), "rewards": rewards, "images": images,
            "sources": torch.stack(sources)}
