"""The demo's editing task: which shapes edits, on what canvas, and its fixed task sets, all from seeds.

Remove one of 1-2 shapes named by colour and kind on a 16x16 canvas (shapes are 3x3 there). Colour-producing
edits (recolor, background) were tried and left out: from character-level text, a 1+1-block model did not
learn colour names within a few thousand warm-up steps (held-out reward ~0). Three disjoint sets: the
held-out evaluation tasks (HELDOUT_SEED), the supervised warm-up stream (WARMUP_SEED) and the RL training pool
(RL_SEED); a training task whose (instruction, source pixels) equals a held-out task's is skipped. The warm-up
data is deliberately imperfect, like an annotator who sometimes does not do the edit: a fixed fraction
(UNEDITED_FRACTION, chosen per example from (seed, index)) of the warm-up targets is the unedited source. The
supervised model learns that mix, so some of its samples leave the shape in place. Judged object by object
(reward/programmatic.py), its samples also damage the un-named shape of every two-shape held-out task: from
character-level text the model cannot tell which shape is named, so RL cannot yet show a real improvement here. (Zero-mean colour jitter of the targets was
tried first: the model learns the mean colour, so it makes no imperfection RL can see.)
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
UNEDITED_FRACTION = 0.35                    # share of warm-up targets left unedited (the source itself)
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


def is_unedited(seed: int, index: int, fraction: float = UNEDITED_FRACTION) -> bool:
    """Whether warm-up example `index` of `seed` keeps the unedited source as its target."""
    return random.Random(f"editrl-demo-unedited:{seed}:{index}").random() < fraction


def warmup_batch(step: int, batch_size: int, seed: int = WARMUP_SEED, fraction: float = UNEDITED_FRACTION
                 ) -> tuple[list[ShapeTask], torch.Tensor]:
    """Warm-up step `step`: its tasks and their targets uint8 [B, 3, H, W], a `fraction` of them unedited
    (fraction=0: every target exact)."""
    start = step * batch_size
    tasks = training_tasks(seed, start, batch_size)
    targets = torch.stack([t.source_image() if is_unedited(seed, start + i, fraction) else t.target_image()
                           for i, t in enumerate(tasks)])
    return tasks, targets
