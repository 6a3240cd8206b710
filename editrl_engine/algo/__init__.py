"""The RL algorithms on top of `editrl_engine.ops`: the group sampler, step advantages (filtering and prompt
banning), and the DiffusionNFT and Flow-GRPO objectives. Knows no models and no training loop (docs/design.md §1)."""
from __future__ import annotations

from . import grpo, nft
from .advantages import AdvantageConfig, StepAdvantages, step_advantages
from .grpo import GRPOConfig
from .nft import NFTConfig
from .sampler import GroupSampler, StepPlan

__all__ = ["AdvantageConfig", "GRPOConfig", "GroupSampler", "NFTConfig", "StepAdvantages", "StepPlan",
           "grpo", "nft", "step_advantages"]
