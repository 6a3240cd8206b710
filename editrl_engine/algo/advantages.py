"""A step's advantages from its global rewards: normalisation, low-variance filtering, prompt-ban decisions.

Wraps `ops.group_advantages`. Defaults follow UniWorld-V2: a group counts in the loss only if its std > 0.05
and its mean < 0.9, and a group with std < 0.05 and mean > 0.9 (solved, nothing left to learn) is banned from
further sampling. Every threshold can be changed or disabled (a negative value, as TOML writes it, or None).
NaN rewards (unparseable judge answers) are excluded. All work stays on the rewards' device; the statistics and
ban mask come to the host in one transfer at the end.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .. import ops
from ..data.manifest import GroupKey

STAT_NAMES = ("reward_mean", "reward_std", "valid_frac", "filtered_frac", "zero_std_group_frac", "nan_count",
              "banned_groups")


THRESHOLDS = ("filter_std", "filter_mean", "ban_std", "ban_mean")


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """[algo.advantage]. A threshold that is None or negative is off (stored as -1.0, which TOML can write)."""
    std: str = "group"                # "group" or "global" (one std over all finite rewards of the step)
    eps: float = 1e-4
    clip: float = 5.0
    filter_std: float = 0.05          # valid only if group std > filter_std
    filter_mean: float = 0.9          # valid only if group mean < filter_mean
    ban_std: float = 0.05             # ban if group std < ban_std ...
    ban_mean: float = 0.9             # ... and group mean > ban_mean (ban off if either is off)

    def __post_init__(self):
        for name in THRESHOLDS:
            value = getattr(self, name)
            if value is None or value < 0:
                object.__setattr__(self, name, -1.0)
        if self.std not in ("group", "global"):
            raise ValueError(f"algo.advantage.std must be 'group' or 'global', got {self.std!r}")
        if not (self.eps > 0 and self.clip > 0):
            raise ValueError(f"algo.advantage.eps and .clip must be > 0, got {self.eps} and {self.clip}")

    def threshold(self, name: str) -> float | None:
        """The threshold `name` (THRESHOLDS), None when it is off."""
        value = getattr(self, name)
        return None if value < 0 else value


class StepAdvantages(NamedTuple):
    advantages: torch.Tensor     # float32 [N], 0 where not valid
    valid: torch.Tensor          # bool [N]
    stats: dict[str, float]      # STAT_NAMES
    ban: list[GroupKey]          # the groups to ban from future draws


def step_advantages(rewards: torch.Tensor, group_index: torch.Tensor, keys: Sequence[GroupKey],
                    config: AdvantageConfig = AdvantageConfig(), *, backend=None) -> StepAdvantages:
    """rewards: float [N] (NaN = missing); group_index: int64 [N] in [0, len(keys)), on the rewards' device."""
    num_groups = len(keys)
    with ops.skip_value_checks():   # group_index comes from the sampler's plan; checking it would sync
        out = ops.group_advantages(rewards, group_index, std=config.std, eps=config.eps, clip=config.clip,
                                   filter_std=config.threshold("filter_std"),
                                   filter_mean=config.threshold("filter_mean"),
                                   num_groups=num_groups, backend=backend)
    r = rewards.float()                                                    # [N]
    finite = torch.isfinite(r)
    n_finite = finite.sum().float()
    r0 = torch.where(finite, r, torch.zeros_like(r))
    mean = r0.sum() / n_finite                                             # NaN when nothing is finite
    std = (torch.where(finite, r - mean, torch.zeros_like(r)).square().sum() / n_finite).sqrt()
    valid_frac = out.valid.float().mean()
    has_std = torch.isfinite(out.std)                                      # [G] groups with a finite reward
    zero_std = ((out.std == 0) & has_std).float().sum() / has_std.float().sum()
    ban = torch.zeros(num_groups, dtype=torch.bool, device=r.device)       # [G]
    ban_std, ban_mean = config.threshold("ban_std"), config.threshold("ban_mean")
    if ban_std is not None and ban_mean is not None:
        ban = (out.std < ban_std) & (out.mean > ban_mean)
    stats = torch.stack([mean, std, valid_frac, 1 - valid_frac, zero_std, (~finite).sum().float(),
                         ban.sum().float()])
    host = torch.cat([stats, ban.float()]).cpu()                           # the one host transfer
    values = dict(zip(STAT_NAMES, host[:len(STAT_NAMES)].tolist()))
    banned = [keys[g] for g, b in enumerate(host[len(STAT_NAMES):].tolist()) if b]
    return StepAdvantages(out.advantages, out.valid, values, banned)
