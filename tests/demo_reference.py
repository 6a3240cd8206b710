"""An independent reference for the demo's held-out reward (the tests check the engine's evaluation and the demo's
printed numbers against it): deterministic Euler sampling from fixed seeds in one batch, decoded, scored by the
programmatic verifier directly, over the demo's fixed held-out tasks."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from editrl_engine.data.synthetic import ShapeTask
from editrl_engine.engine.demo import task as demo_task
from editrl_engine.policy.base import EditPolicy
from editrl_engine.policy.sampling.rollout import ode_sample
from editrl_engine.reward.programmatic import ProgrammaticReward

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


def object_verdicts(task: ShapeTask, image: torch.Tensor, tolerance: int = 32, share: float = 0.9
                    ) -> tuple[bool, bool | None]:
    """(named shape removed, other shapes kept or None without one) of a remove edit, judged here on its own:
    each shape's pixels are where a canvas with that shape alone differs from the bare background; the named
    shape is removed when >= `share` of its pixels are within `tolerance` of the background colour on every
    channel, a shape is kept when >= `share` of its pixels are within `tolerance` of its own colour."""
    from editrl_engine.data.shapes import PALETTE, render
    image = image.to(torch.int64)                                                      # [3, H, W]
    background = torch.tensor(PALETTE[task.background]).view(3, 1, 1)

    def close_share(shape, colour) -> float:
        alone = render(task.height, task.width, task.background, [shape]).to(torch.int64)
        pixels = (alone - background).abs().amax(0) > 0                                 # [H, W] the shape's own
        near = (image - torch.tensor(PALETTE[colour]).view(3, 1, 1)).abs().amax(0) <= tolerance
        return near[pixels].float().mean().item()

    named = task.edit.shape
    removed = close_share(task.shapes[named], task.background) >= share
    others = [close_share(s, s.color) >= share for i, s in enumerate(task.shapes) if i != named]
    return removed, (all(others) if others else None)


def object_rates(tasks: Sequence[ShapeTask], images: torch.Tensor) -> dict:
    """The demo's object-level rates from object_verdicts: named removed on one- and two-shape tasks, other kept
    on two-shape tasks."""
    verdicts = [object_verdicts(t, image) for t, image in zip(tasks, images)]
    one = [removed for removed, kept in verdicts if kept is None]
    two = [(removed, kept) for removed, kept in verdicts if kept is not None]

    def mean(values):
        return sum(values) / len(values) if values else None

    return {"named_removed_one_shape": mean(one), "named_removed_two_shapes": mean([r for r, _ in two]),
            "other_kept_two_shapes": mean([k for _, k in two]), "one_shape": len(one), "two_shapes": len(two)}
