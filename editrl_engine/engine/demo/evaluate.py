"""The demo's held-out reward: deterministic Euler sampling from fixed seeds, decoded, scored by the exact
programmatic verifier, averaged over the fixed held-out tasks (task.heldout_tasks)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...data.synthetic import ShapeTask
from ...policy.base import EditPolicy
from ...policy.sampling.rollout import ode_sample
from ...reward.programmatic import ProgrammaticReward
from . import task as demo_task

EVAL_STEPS = 8          # Euler steps
EVAL_SEED = 12345       # sample i of the held-out set starts from the noise of seed EVAL_SEED + i


@torch.no_grad()
def sample_edits(policy: EditPolicy, tasks: Sequence[ShapeTask], num_steps: int = EVAL_STEPS,
                 seed: int = EVAL_SEED) -> torch.Tensor:
    """uint8 [N, 3, H, W]: one deterministic edit per task."""
    cond = policy.encode([t.source_image() for t in tasks], [t.instruction for t in tasks])
    x0 = ode_sample(policy, cond, num_steps=num_steps, solver="euler", seed=seed)     # [N, L, C]
    return policy.decode(x0, cond)


@torch.no_grad()
def heldout_rewards(policy: EditPolicy, tasks: Sequence[ShapeTask] | None = None, num_steps: int = EVAL_STEPS,
                    seed: int = EVAL_SEED) -> torch.Tensor:
    """float32 [N]: the programmatic reward of each held-out task's edit."""
    tasks = list(tasks if tasks is not None else demo_task.heldout_tasks())
    edited = sample_edits(policy, tasks, num_steps, seed)
    sources = [t.source_image() for t in tasks]
    return ProgrammaticReward().score(sources, [t.instruction for t in tasks], list(edited), tasks=tasks).reward


def heldout_reward(policy: EditPolicy, tasks: Sequence[ShapeTask] | None = None, num_steps: int = EVAL_STEPS,
                   seed: int = EVAL_SEED) -> float:
    """The mean held-out reward."""
    return float(heldout_rewards(policy, tasks, num_steps, seed).mean())
