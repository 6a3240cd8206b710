"""A weighted combination of reward models: reward = sum_i w_i r_i / sum_i w_i, NaN where any part is NaN.

Each sample's details keep every part's reward and details under the part's name. score_groups hands the groups
to every part's own score_groups, so a part with a shared-prefix path keeps it inside a combination.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .base import RewardBatch, RewardModel, check_groups, check_triples


class CombinedReward(RewardModel):
    kind = "combined"

    def __init__(self, parts: Mapping[str, tuple[RewardModel, float]]):
        """parts: name -> (reward model, weight); weights are finite and positive."""
        if not parts:
            raise ValueError("a combined reward needs at least one part")
        for name, (model, weight) in parts.items():
            if not isinstance(model, RewardModel):
                raise TypeError(f"part {name!r} is a {type(model).__name__}, not a RewardModel")
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ValueError(f"the weight of part {name!r} must be a finite number > 0, got {weight!r}")
        self.parts = dict(parts)

    @property
    def weights(self) -> dict[str, float]:
        return {name: float(weight) for name, (_, weight) in self.parts.items()}

    @property
    def multi_source(self) -> bool:
        """Several source images per sample only when every part takes them."""
        return all(model.multi_source for model, _ in self.parts.values())

    @property
    def shares_prefix(self) -> bool:
        """True when a part prefills a group's shared prefix once (score_groups hands each part the groups)."""
        return any(model.shares_prefix for model, _ in self.parts.values())

    def score(self, sources: Sequence, instructions: Sequence[str], edited: Sequence, *,
              rows: Sequence | None = None, **options_per_part: Mapping) -> RewardBatch:
        """rows: each sample's EditRow, handed to every part (each takes what it needs); options_per_part: part
        name -> extra keyword arguments of that part's score()."""
        n = check_triples(sources, instructions, edited)
        self._check_options(options_per_part)
        extra = {} if rows is None else {"rows": rows}
        return self._combine({name: model.score(sources, instructions, edited, **extra,
                                                **options_per_part.get(name, {}))
                              for name, (model, _) in self.parts.items()}, n)

    def score_groups(self, sources: Sequence, instructions: Sequence[str], groups: Sequence[Sequence], *,
                     rows: Sequence | None = None, **options_per_part: Mapping) -> RewardBatch:
        """Each part scores the groups through its own score_groups (its shared-prefix path where it has one);
        rows: one EditRow per group. Group-major, as RewardModel.score_groups."""
        sizes = check_groups(sources, instructions, groups, rows=rows)
        self._check_options(options_per_part)
        extra = {} if rows is None else {"rows": rows}
        return self._combine({name: model.score_groups(sources, instructions, groups, **extra,
                                                       **options_per_part.get(name, {}))
                              for name, (model, _) in self.parts.items()}, sum(sizes))

    def _check_options(self, options_per_part: Mapping) -> None:
        unknown = set(options_per_part) - set(self.parts)
        if unknown:
            raise ValueError(f"score() options for unknown parts {sorted(unknown)}; parts: {', '.join(self.parts)}")

    def _combine(self, batches: dict[str, RewardBatch], n: int) -> RewardBatch:
        for name, batch in batches.items():
            if len(batch) != n:
                raise RuntimeError(f"part {name!r} returned {len(batch)} rewards for {n} samples")
        rewards = torch.stack([batches[name].reward.double() for name in self.parts])            # [P, N]
        weights = torch.tensor(list(self.weights.values()), dtype=torch.float64)                 # [P]
        reward = ((weights[:, None] * rewards).sum(0) / weights.sum()).float()                   # [N], NaN propagates
        details = []
        for i in range(n):
            detail = {name: {"reward": float(batch.reward[i]), **batch.details[i]} for name, batch in batches.items()}
            failed = [name for name, batch in batches.items() if math.isnan(float(batch.reward[i]))]
            if failed:
                detail["error"] = f"no reward from {', '.join(failed)}"
            details.append(detail)
        return RewardBatch(reward=reward, details=details, failures=int(torch.isnan(reward).sum()))

    def metadata(self) -> dict:
        return {"kind": self.kind, "weights": self.weights,
                "parts": {name: model.metadata() for name, (model, _) in self.parts.items()}}
