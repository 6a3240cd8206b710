"""The demo's editing task: which shapes edits, on what canvas, and its fixed task sets, all from seeds.

Remove one of 1-2 shapes named by colour and kind on a 16x16 canvas (shapes are 3x3 there). Colour-producing
edits (recolor, background) were tried and left out: from character-level text, a 1+1-block model did not
learn colour names within a few thousand warm-up steps (held-out reward ~0). Three disjoint sets: the
held-out evaluation tasks (HELDOUT_SEED), the supervised warm-up stream (WARMUP_SEED) and the RL training pool
(RL_SEED); a training task whose (instruction, source pixels) equals a held-out task's is skipped. The warm-up
targets are deliberately imperfect: the colour painted in the edit region of each example is offset per
channel by a uniform integer in [-JITTER, JITTER], drawn from (seed, index).
"""
from __future__ import annotations

import functools
import hashlib
import random

import torch

from ...data.synthetic import ShapeTask, make_task

SIZE = 16                                   # canvas side in pixels
EDITS = ("remove",)
MAX_SHAPES = 2
JITTER = 40                                 # max per-channel offset of a warm-up target colour (0-255 scale)
HELDOUT_SEED, WARMUP_SEED, RL_SEED = 9001, 1, 2
HELDOUT_SIZE = 64                           # evaluation tasks
RL_POOL_SIZE = 512                          # RL training tasks


def task(seed: int, index: int) -> ShapeTask:
    return make_task(seed, index, SIZE, edits=EDITS, max_shapes=MAX_SHAPES)


def task_key(t: ShapeTask) -> tuple[str, str]:
    """(instruction, source pixel digest): what makes two tasks the same prompt."""
    pixels = t.source_image().contiguous().numpy().tobytes()
    return t.instruction, hashlib.sha1(pixels).hexdigest()


@functools.lru_cache(maxsize=1)
def heldout_tasks() -> tuple[ShapeTask, ...]:
    """The fixed evaluation set: HELDOUT_SIZE tasks of HELDOUT_SEED."""
    return tuple(task(HELDOUT_SEED, i) for i in range(HELDOUT_SIZE))


@functools.lru_cache(maxsize=1)
def _heldout_keys() -> frozenset[tuple[str, str]]:
    return frozenset(map(task_key, heldout_tasks()))


def training_tasks(seed: int, start: int, count: int) -> list[ShapeTask]:
    """`count` tasks of `seed` from index `start` on, skipping any that equal a held-out task."""
    tasks, index = [], start
    while len(tasks) < count:
        t = task(seed, index)
        if task_key(t) not in _heldout_keys():
            tasks.append(t)
        index += 1
    return tasks


@functools.lru_cache(maxsize=1)
def rl_tasks() -> tuple[ShapeTask, ...]:
    """The RL training pool: RL_POOL_SIZE tasks of RL_SEED, disjoint from the held-out set."""
    return tuple(training_tasks(RL_SEED, 0, RL_POOL_SIZE))


def jitter_offset(seed: int, index: int, jitter: int = JITTER) -> torch.Tensor:
    """int16 [3]: the per-channel offset of warm-up example `index` of `seed`, each in [-jitter, jitter]."""
    rng = random.Random(f"editrl-demo-jitter:{seed}:{index}")
    return torch.tensor([rng.randint(-jitter, jitter) for _ in range(3)], dtype=torch.int16)


def jittered_target(t: ShapeTask, offset: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W]: the exact target with `offset` [3] added (clamped to 0-255) to the colour it paints in
    the edit region (where source and target differ)."""
    source, target = t.source_image(), t.target_image()                    # uint8 [3, H, W]
    region = (source != target).any(dim=0)                                 # bool [H, W]
    out = target.to(torch.int16)
    out[:, region] += offset.view(3, 1)
    return out.clamp(0, 255).to(torch.uint8)


def warmup_batch(step: int, batch_size: int, seed: int = WARMUP_SEED, jitter: int = JITTER
                 ) -> tuple[list[ShapeTask], torch.Tensor]:
    """Warm-up step `step`: its tasks and their jittered targets uint8 [B, 3, H, W] (jitter=0: exact)."""
    start = step * batch_size
    tasks = training_tasks(seed, start, batch_size)
    targets = torch.stack([jittered_target(t, jitter_offset(seed, start + i, jitter)) for i, t in enumerate(tasks)])
    return tasks, targets
