"""Flow-GRPO's objective pieces: which SDE steps are trained, and the PPO-clipped loss with an optional KL.

Trained steps are the first int(T · fraction) of the T sampling steps (the last step's Gaussian is too sharp to
train on; SD3's 10 steps train 9). A windowed rollout (policy.samplers.grpo_rollout with window_size) draws its
window from a generator shared by all ranks and records the steps it trained in GRPORollout.step_index: train
those, so the window is drawn in one place only. The loss is `ops.grpo_loss` with an asymmetric clip range.
"""
from __future__ import annotations

import dataclasses

from .. import ops


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    clip_range: tuple[float, float] = (1e-4, 1e-4)   # (eps_low, eps_high) around ratio 1
    kl_beta: float = 0.0                             # 0 for FLUX / Kontext / Qwen; 0.04 for GenEval
    timestep_fraction: float = 0.9                   # train the first int(T * fraction) steps


def trained_steps(num_steps: int, config: GRPOConfig = GRPOConfig()) -> list[int]:
    """Indices of the sampling steps whose log-probabilities are trained (windowed rollouts: their step_index)."""
    return list(range(max(1, int(num_steps * config.timestep_fraction))))


def loss(logp, logp_old, advantages, config: GRPOConfig = GRPOConfig(), *, valid=None, kl=None, backend=None):
    """(loss [], stats) through `ops.grpo_loss`; kl [B] is needed only when kl_beta != 0."""
    return ops.grpo_loss(logp, logp_old, advantages, clip_range=tuple(config.clip_range), valid=valid,
                         kl=kl if config.kl_beta else None, kl_beta=config.kl_beta, backend=backend)
