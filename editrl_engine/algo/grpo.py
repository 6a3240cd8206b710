"""Flow-GRPO's objective pieces: which SDE steps are trained, and the PPO-clipped loss with an optional KL.

Trained steps are the first int(T · fraction) of the T sampling steps (the last step's Gaussian is too sharp to
train on; SD3's 10 steps train 9). A windowed rollout (policy.samplers.grpo_rollout with window_size) draws its
window from a generator shared by all ranks and records the steps it trained in GRPORollout.step_index: train
those, so the window is drawn in one place only. The loss is `ops.grpo_loss` with an asymmetric clip range.
"""
from __future__ import annotations

import dataclasses

from .. import ops

SDE_KINDS = ("flow_grpo", "cps")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """[algo.grpo]: Flow-GRPO's settings, the objective's and the SDE rollouts' (engine/algorithms/grpo.py)."""
    clip_low: float = 1e-4            # the ratio's clip range is [1 - clip_low, 1 + clip_high]
    clip_high: float = 1e-4
    kl_beta: float = 0.0              # 0 for FLUX / Kontext / Qwen; 0.04 for GenEval
    timestep_fraction: float = 0.9    # train the first int(T * fraction) steps
    noise_level: float = 0.9          # the SDE's noise level (a in Flow-GRPO)
    kind: str = "flow_grpo"           # flow_grpo | cps (coefficients-preserving sampling)
    window_size: int = 0              # 0: SDE on every trained step; else a window of this many, drawn per step

    def __post_init__(self):
        problems = []
        if not (self.clip_low > 0 and self.clip_high > 0):
            problems.append(f"clip_low and clip_high must be > 0, got {self.clip_low} and {self.clip_high}")
        if not 0 < self.timestep_fraction <= 1:
            problems.append(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.kl_beta < 0:
            problems.append(f"kl_beta must be >= 0, got {self.kl_beta}")
        if self.kind not in SDE_KINDS:
            problems.append(f"kind must be one of {list(SDE_KINDS)}, got {self.kind!r}")
        if self.window_size < 0:
            problems.append(f"window_size must be >= 0, got {self.window_size}")
        if problems:
            raise ValueError("algo.grpo: " + "; ".join(problems))

    @property
    def clip_range(self) -> tuple[float, float]:
        return self.clip_low, self.clip_high


def trained_steps(num_steps: int, config: GRPOConfig = GRPOConfig()) -> list[int]:
    """Indices of the sampling steps whose log-probabilities are trained (windowed rollouts: their step_index)."""
    return list(range(max(1, int(num_steps * config.timestep_fraction))))


def loss(logp, logp_old, advantages, config: GRPOConfig = GRPOConfig(), *, valid=None, kl=None, backend=None):
    """(loss [], stats) through `ops.grpo_loss`; kl [B] is needed only when kl_beta != 0."""
    return ops.grpo_loss(logp, logp_old, advantages, clip_range=tuple(config.clip_range), valid=valid,
                         kl=kl if config.kl_beta else None, kl_beta=config.kl_beta, backend=backend)
