"""The demo's editing task: which shapes edits, on what canvas, and its fixed task sets, all from seeds.

Remove one of 1-2 shapes named by colour and kind on a 16x16 canvas (shapes are 3x3 there; the shapes of a scene
always differ in colour). Three disjoint sets: the held-out evaluation tasks (HELDOUT_SEED, one- and two-shape
tasks mixed), the supervised warm-up stream (WARMUP_SEED) and the RL training pool (RL_SEED); a training task
whose (instruction, source pixels) equals a held-out task's is skipped.

The warm-up data is deliberately imperfect, like an annotator with a soft eraser: in every warm-up target the
erased shape stays as a faint ghost, GHOST grey levels from the background (warmup_target; the exact verifier's
tolerance is 32, so a ghost is never "removed"). The supervised model copies it, so it names and finds the right
shape but never removes it cleanly; RL against the exact object-level reward has to finish the edit without
touching the other shape. Two imperfections were tried first and dropped: leaving a fixed share (15-35 %) of the
targets unedited made the supervised model mix "removed" and "kept" patch by patch inside one shape (it never
learnt the edit; at 35 % it also erased the other shape), and zero-mean colour jitter is learnt as its mean.
"""
from __future__ import annotations

import functools
import hashlib

import torch

from ...data.shapes import owners, rgb
from ...data.synthetic import ShapeTask, make_task

SIZE = 16                                   # canvas side in pixels
EDITS = ("remove",)
MAX_SHAPES = 2
GHOST = 36                                  # warm-up targets: the erased shape's ghost, in grey levels
HELDOUT_SEED, WARMUP_SEED, RL_SEED = 9001, 1, 2
HELDOUT_SIZE = 64                           # evaluation tasks
RL_POOL_SIZE = 512                          # RL training tasks
EVAL_STEPS = 8                              # Euler steps of the held-out evaluation
EVAL_SEED = 12345                           # held-out sample i starts from the noise of seed EVAL_SEED + i


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


def ghost_colour(colour: str, background: str, ghost: int = GHOST) -> tuple[int, int, int]:
    """The colour `ghost` grey levels from the background towards `colour` (in the channel where they differ
    most; the other channels in proportion)."""
    bg, fg = torch.tensor(rgb(background)), torch.tensor(rgb(colour))
    step = (fg - bg).float() / (fg - bg).abs().max()
    return tuple(int(v) for v in (bg + (ghost * step).round().long()).clamp(0, 255))


def warmup_target(t: ShapeTask, ghost: int = GHOST) -> torch.Tensor:
    """uint8 [3, H, W]: the annotator's target for a remove task, the exact target except that the erased shape's
    pixels keep a faint ghost of it, `ghost` grey levels from the background (ghost=0: exactly the target)."""
    target = t.target_image()
    if ghost:
        shape = t.shapes[t.edit.shape]
        pixels = owners(t.height, t.width, [(0, shape)]) == 0                       # [H, W] the shape's own
        target[:, pixels] = torch.tensor(ghost_colour(shape.color, t.background, ghost), dtype=torch.uint8)[:, None]
    return target


def warmup_batch(step: int, batch_size: int, seed: int = WARMUP_SEED, ghost: int = GHOST
                 ) -> tuple[list[ShapeTask], torch.Tensor]:
    """Warm-up step `step`: its tasks and their targets uint8 [B, 3, H, W] (warmup_target)."""
    tasks = training_tasks(seed, step * batch_size, batch_size)
    return tasks, torch.stack([warmup_target(t, ghost) for t in tasks])
