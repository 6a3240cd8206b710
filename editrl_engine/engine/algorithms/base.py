"""The interface every RL algorithm of the engine implements; the trainer calls only these methods.

    algorithm = config.algo.build(config)                 # AlgoConfig.build -> ALGORITHMS[name]
    algorithm.attach(policy)                              # adapters it needs besides the trained LoRA
    algorithm.start(policy)                               # once the trained LoRA is equal on every rank
    x0, trajectory = algorithm.rollout(policy, cond, seeds, step)
    result = algorithm.advantages(rewards, group_index, keys)
    stats = algorithm.backward(policy, batch)             # gradients of the loss, over batch.rows
    algorithm.after_step(policy, step)                    # after the optimizer step (NFT: the old adapter)
    state = algorithm.state_dict(policy); algorithm.load_state_dict(policy, state)
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ...algo.advantages import AdvantageConfig, StepAdvantages, step_advantages
from ...data.manifest import GroupKey

if TYPE_CHECKING:
    from ...policy.base import Condition, EditPolicy
    from ..batch import Batch
    from ..config import TrainConfig


class Algorithm(abc.ABC):
    name: ClassVar[str]
    default_staleness: ClassVar[int]          # pipeline.staleness = -1 means this
    max_staleness: ClassVar[int] = 1          # GRPO's ratios need on-policy samples: 0
    extra_adapters: ClassVar[tuple[str, ...]] = ()   # adapters besides "default" saved in every checkpoint

    def __init__(self, settings, config: TrainConfig, backend: str | None = None):
        self.settings = settings              # the algorithm's own config section ([algo.<name>])
        self.config = config
        self.advantage: AdvantageConfig = config.algo.advantage
        self.backend = backend                # fused-op backend (None: the device's default)
        # the rollouts' guidance, used by every forward of the loss too (None: the family's default)
        self.guidance = config.sampling.guidance or None

    # ---- set-up ----------------------------------------------------------------------------------------------
    def attach(self, policy: EditPolicy) -> None:
        """Add what the algorithm needs on the policy besides the trained LoRA (before it is sharded)."""

    def start(self, policy: EditPolicy) -> None:
        """Called once the trained LoRA is the same on every rank."""

    # ---- a step --------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def rollout(self, policy: EditPolicy, cond: Condition, seeds: list[int], step: int
                ) -> tuple[torch.Tensor, Any]:
        """Sample clean latents x0 [n, L, C] for the n rows of `cond`, one seed per row; returns (x0, the chunk's
        trajectory, or None when the loss needs none)."""

    def join_trajectories(self, chunks: list) -> Any:
        """The rollout's trajectory from its chunks' (None when the algorithm records none)."""
        return None

    def advantages(self, rewards: torch.Tensor, group_index: torch.Tensor, keys: Sequence[GroupKey]
                   ) -> StepAdvantages:
        """Group advantages, low-variance filtering and prompt bans from the step's global rewards [N]."""
        return step_advantages(rewards, group_index, keys, self.advantage, backend=self.backend)

    @abc.abstractmethod
    def backward(self, policy: EditPolicy, batch: Batch, grad_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Accumulate the gradients of the loss over batch.rows. Each micro-batch's mean loss is weighted by its
        valid rows / batch.global_valid (and 1 / the trained timesteps), so after the all-reduce (a sum) the
        gradient is that of the global mean; grad_scale = the number of ranks under FSDP2 (whose reduce-scatter
        averages). Returns loss statistics as device scalars, summed the same way."""

    def after_step(self, policy: EditPolicy, step: int) -> None:
        """After the optimizer step(s) of training step `step` (counted from 0)."""

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self, policy: EditPolicy) -> dict[str, Any]:
        """What a checkpoint must hold to resume the algorithm (called on every policy rank: may gather)."""
        return {}

    def load_state_dict(self, policy: EditPolicy, state: dict[str, Any]) -> None:
        pass
