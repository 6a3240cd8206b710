"""The reward-model interface: score (source, instruction, edited) triples into rewards in [0, 1] or NaN.

A reward that could not be had (an unparseable judge answer, a score out of range) is NaN and counted in
`failures`, never replaced by a made-up number; group advantages skip NaN rewards.

    batch = reward.score(sources, instructions, edited, rows=rows)               # one reward per triple
    batch = reward.score_groups(sources, instructions, groups, rows=rows)        # groups[g]: edits of pair g

`rows` (optional) are the manifest rows (data.manifest.EditRow) of the samples (score) or of the groups
(score_groups); each reward takes from them what it needs (the logit reward a row's requirement, the verifier its
principles, the programmatic reward its spec), so callers never need to know the reward's kind. `score_groups`
is the flat fallback here (flatten the groups, one score() call); a reward that prefills a group's shared
(source, instruction) prefix once overrides it and sets `shares_prefix = True`.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch


@dataclasses.dataclass
class RewardBatch:
    reward: torch.Tensor                    # float32 [N] in [0, 1], NaN where no score could be had
    details: list[dict[str, Any]]           # one dict per sample: sub-scores, raw judge text, verdicts
    failures: int = 0                       # how many rewards are NaN, and why is in details[i]["error"]

    def __post_init__(self):
        if self.reward.dim() != 1 or len(self.details) != self.reward.shape[0]:
            raise ValueError(f"RewardBatch needs reward [N] and N details, got reward {tuple(self.reward.shape)} "
                             f"and {len(self.details)} details")

    def __len__(self) -> int:
        return self.reward.shape[0]


class RewardModel(abc.ABC):
    """Scores edits; images are PIL images, uint8 tensors [3, H, W] or uint8 NumPy arrays [H, W, 3] (vlm/images.py)."""

    kind: str
    shares_prefix: bool = False             # True: score_groups prefills each group's shared prefix once
    multi_source: bool = False              # True: a sample's source may be a list of images (each shown, labelled)

    @abc.abstractmethod
    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence, *,
              rows: Sequence | None = None) -> RewardBatch:
        """One reward per (source, instruction, edited) triple; rows: the EditRow of each sample, or None."""

    def score_groups(self, sources: Sequence, instructions: Sequence[str], groups: Sequence[Sequence], *,
                     rows: Sequence | None = None, **per_group: Sequence | None) -> RewardBatch:
        """Rewards of every candidate of every group, group-major: groups[0][0], groups[0][1], ..., groups[1][0].

        groups[g] are the edits of (sources[g], instructions[g]); rows: the EditRow of each group, or None;
        per_group: further score() keyword arguments with one value per group (e.g. the verifier's principles).
        Here: score() on the flattened triples, rows and per_group values repeated per candidate; a shared-prefix
        reward overrides it."""
        sizes = check_groups(sources, instructions, groups, rows=rows)
        for name, values in per_group.items():
            if values is not None and len(values) != len(groups):
                raise ValueError(f"score_groups() got {len(values)} {name} for {len(groups)} groups; pass one "
                                 "per group")
        extra = {name: per_candidate(values, sizes) for name, values in {"rows": rows, **per_group}.items()
                 if values is not None}
        batch = self.score(per_candidate(sources, sizes), per_candidate(instructions, sizes),
                           [image for group in groups for image in group], **extra)
        if len(batch) != sum(sizes):
            raise RuntimeError(f"the {getattr(self, 'kind', type(self).__name__)} reward returned {len(batch)} "
                               f"rewards for {sum(sizes)} candidates; its score() must give one per triple")
        return batch

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind}


def check_triples(sources: Sequence, instructions: Sequence[str], edited: Sequence) -> int:
    """The common length of the three sequences; a clear error when they differ or are empty."""
    lengths = {"sources": len(sources), "instructions": len(instructions), "edited": len(edited)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"score() needs one source, instruction and edited image per sample, got {lengths}")
    if lengths["edited"] == 0:
        raise ValueError("score() got no samples")
    return lengths["edited"]


def check_groups(sources: Sequence, instructions: Sequence[str], groups: Sequence[Sequence], *,
                 rows: Sequence | None = None) -> list[int]:
    """The size of each group; a clear error when there is not one source, instruction (and row) per group, no
    group, or an empty group."""
    check_triples(sources, instructions, groups)
    if rows is not None and len(rows) != len(groups):
        raise ValueError(f"score_groups() got {len(rows)} rows for {len(groups)} groups; pass one EditRow per group")
    sizes = [len(group) for group in groups]
    if 0 in sizes:
        raise ValueError(f"score_groups() got an empty group of candidates (group {sizes.index(0)}); every group "
                         "needs at least one edited image")
    return sizes


def per_candidate(values: Sequence, sizes: Sequence[int]) -> list:
    """Per-group values repeated for each candidate: values[0] sizes[0] times, then values[1] sizes[1] times, ..."""
    return [value for value, size in zip(values, sizes) for _ in range(size)]


def rows_field(rows: Sequence | None, field: str, n: int, name: str) -> list | None:
    """getattr(row, field) of each row (None without rows); a clear error when the count is not n."""
    if rows is None:
        return None
    if len(rows) != n:
        raise ValueError(f"{name}() got {len(rows)} rows for {n} {'groups' if name == 'score_groups' else 'samples'}")
    return [getattr(row, field, None) for row in rows]


def best_index(rewards: torch.Tensor) -> int | None:
    """Index of the highest finite reward in rewards [N] (the first on a tie); None when none is finite (NaN, no
    score, never wins)."""
    finite = torch.isfinite(rewards)                                                   # [N] bool
    if not bool(finite.any()):
        return None
    masked = torch.where(finite, rewards.double(), torch.tensor(float("-inf"), dtype=torch.float64))  # [N]
    return int(torch.argmax(masked))
