"""An independent reference for the demo's held-out reward (the tests check the engine's evaluation and the demo's
printed numbers against it): deterministic Euler sampling from fixed seeds in one batch, decoded, scored by the
programmatic verifier directly, over the demo's fixed held-out tasks."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from editrl_engine.data.synthetic import ShapeTask
from editrl_engine.policy.base import EditPolicy
from editrl_engine.policy.sampling.rollout import ode_sample
from editrl_engine.reward.programmatic import ProgrammaticReward
from editrl_engine.engine.demo import task as demo_task

EVAL_STEPS, EVAL_SEED = demo_task.EVAL_STEPS, demo_task.EVAL_SEED


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
