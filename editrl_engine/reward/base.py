"""The reward-model interface: score (source, instruction, edited) triples into rewards in [0, 1] or NaN.

A reward that could not be had (an unparseable judge answer, a score out of range) is NaN and counted in
`failures`, never replaced by a made-up number; group advantages skip NaN rewards.
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

    @abc.abstractmethod
    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence) -> RewardBatch:
        """One reward per (source, instruction, edited) triple."""

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
