"""Picking from scored groups of candidates.

A group is the G candidate edits of one (source, instruction); the server and rerank score groups with
`reward.score_groups` (RewardModel: the shared-prefix path where the reward has one, `reward.shares_prefix`, else
score() on the flattened triples). `best_index` (reward/base.py, shared with the engine's demo) picks the highest
finite reward (NaN never wins).
"""
from __future__ import annotations

from ..reward.base import best_index

__all__ = ["best_index"]
