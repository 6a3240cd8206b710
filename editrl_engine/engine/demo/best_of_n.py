"""Best-of-N on the demo's held-out tasks: how often the sample the reward picks is a correct edit, object by object.

For each task, candidates 0..N-1 come from seeds seed + k (the same noise for every N, so best of 4 is the best of
the first 4 of the 8); the programmatic reward scores them and the best (highest reward, NaN never wins, ties to
the lower index) is judged by its object-level verdicts: correct when the named shape is removed and every other
shape is kept.

    rates = best_of_n_success(policy, tasks, ns=(1, 4, 8))      # {1: 0.61, 4: 0.83, 8: 0.91}
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ...reward.base import best_index
from ...reward.programmatic import ProgrammaticReward
from ..evaluation import sample_items
from ..tasks import TaskSet
from .task import EVAL_SEED, EVAL_STEPS


def correct(detail: dict) -> bool:
    """The programmatic reward's verdict of one sample: named thing edited and every other shape kept."""
    return bool(detail["named_edited"]) and detail["others_kept"] is not False


@torch.no_grad()
def best_of_n_success(policy, tasks: TaskSet, ns: Sequence[int] = (1, 4, 8), *, seed: int = EVAL_SEED,
                      num_steps: int = EVAL_STEPS) -> dict[int, float]:
    """{N: the fraction of tasks whose best-of-N candidate is correct}."""
    if not ns or min(ns) < 1:
        raise ValueError(f"ns must be candidate counts >= 1, got {list(ns)}")
    n_max, count = max(ns), len(tasks.rows)
    items = [(i, seed + k) for i in range(count) for k in range(n_max)]             # task-major
    images = sample_items(policy, tasks, items, num_steps=num_steps)                # uint8 [T * n, 3, H, W]
    rows = [tasks.rows[i] for i, _ in items]
    sources = [tasks.image(tasks.keys[i], tasks.rows[i]) for i, _ in items]
    batch = ProgrammaticReward().score(sources, [r.instruction for r in rows], list(images), tasks=rows)
    rewards = batch.reward.float().view(count, n_max)                               # [T, n]
    good = [correct(d) for d in batch.details]                                      # T * n, task-major
    rates = {}
    for n in ns:
        picks = [best_index(rewards[t, :n]) for t in range(count)]                  # None: every reward NaN
        rates[n] = sum(p is not None and good[t * n_max + p] for t, p in enumerate(picks)) / count
    return rates
