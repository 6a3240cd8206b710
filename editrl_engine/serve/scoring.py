"""Scoring groups of candidates through a reward: the shared-prefix group path when the reward has one.

A group is the G candidate edits of one (source, instruction). `score_groups` returns one RewardBatch over all
candidates, group-major, whichever path ran; `best_index` picks the highest finite reward (NaN never wins).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..reward.base import RewardBatch, RewardModel


def has_group_path(reward: RewardModel) -> bool:
    """True when the reward prefills a group's shared (source, instruction) prefix once (mllm_logit, editscore)."""
    return callable(getattr(reward, "score_groups", None))


def score_groups(reward: RewardModel, sources: Sequence, instructions: Sequence[str],
                 groups: Sequence[Sequence]) -> RewardBatch:
    """Rewards of every candidate of every group, group-major: groups[0][0], groups[0][1], ..., groups[1][0], ...

    Through reward.score_groups when it exists, else reward.score on the flattened triples."""
    if not (len(sources) == len(instructions) == len(groups)) or not groups:
        raise ValueError(f"need one source and one instruction per group (>= 1 group), got {len(sources)} sources, "
                         f"{len(instructions)} instructions and {len(groups)} groups")
    if any(len(group) == 0 for group in groups):
        raise ValueError("a group has no candidates")
    total = sum(len(group) for group in groups)
    if has_group_path(reward):
        batch = reward.score_groups(list(sources), list(instructions), [list(group) for group in groups])
    else:
        batch = reward.score([s for s, group in zip(sources, groups) for _ in group],
                             [i for i, group in zip(instructions, groups) for _ in group],
                             [image for group in groups for image in group])
    if len(batch) != total:
        raise RuntimeError(f"the {getattr(reward, 'kind', type(reward).__name__)} reward returned {len(batch)} "
                           f"rewards for {total} candidates")
    return batch


def best_index(rewards: torch.Tensor) -> int | None:
    """Index of the highest finite reward in rewards [N] (the first on a tie); None when none is finite."""
    finite = torch.isfinite(rewards)                                                   # [N] bool
    if not bool(finite.any()):
        return None
    masked = torch.where(finite, rewards.double(), torch.tensor(float("-inf"), dtype=torch.float64))  # [N]
    return int(torch.argmax(masked))
