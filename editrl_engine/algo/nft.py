"""DiffusionNFT's objective pieces: optimality r, training timesteps and noisy latents, and the scaled loss.

Defaults follow DiffusionNFT: r from advantages clipped to ±5; per sample a random permutation of the rollout
timesteps with the first int(T·0.99) trained, fresh noise each time, x_t = (1 − t)·x0 + t·ε; the policy term
multiplied by adv_clip_max (5); NFT β = 1 (the guidance strength, not the KL weight); KL weight 1e-4.
The old adapter's soft update θ_old ← d·θ_old + (1 − d)·θ and its decay schedules belong to the policy
(EditPolicy.update_old_adapter, policy.lora.nft_decay).
"""
from __future__ import annotations

import dataclasses

import torch

from .. import ops

SAMPLE_ADAPTERS = ("old", "default")
ADV_MODES = ("all", "positive_only", "negative_only", "one_only", "binary")   # UniWorld-V2's train.adv_mode


@dataclasses.dataclass(frozen=True)
class NFTConfig:
    """[algo.nft]: DiffusionNFT's settings, the objective's and the rollouts' (engine/algorithms/nft.py)."""
    beta: float = 1.0                 # NFT guidance strength
    kl_beta: float = 1e-4             # weight of mean_dims (v - v_ref)^2; 0 skips the reference forward
    adv_clip_max: float = 5.0         # advantage clip for r, and the scale of the policy term
    timestep_fraction: float = 0.99   # the first int(T * fraction) of each sample's permuted timesteps
    decay_schedule: str = "default"   # policy.lora.nft_decay schedule of the old adapter
    sample_adapter: str = "old"       # rollouts come from the old (sampling) policy, as in DiffusionNFT
    group_noise: bool = False         # the samples of a group share their training timesteps and noise (common
                                      # random numbers: the noise terms cancel across the group's advantages,
                                      # which sum to zero); False draws them per sample
    adv_mode: str = "all"             # UniWorld-V2's variants, applied to A clipped to ±adv_clip_max before r:
                                      # all (unchanged), positive_only clamp(A, 0, max), negative_only
                                      # clamp(A, -max, 0), one_only 1 if A > 0 else 0, binary sign(A)

    def __post_init__(self):
        problems = []
        if not 0 < self.timestep_fraction <= 1:
            problems.append(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if not self.adv_clip_max > 0:
            problems.append(f"adv_clip_max must be > 0, got {self.adv_clip_max}")
        if self.kl_beta < 0:
            problems.append(f"kl_beta must be >= 0, got {self.kl_beta}")
        if self.sample_adapter not in SAMPLE_ADAPTERS:
            problems.append(f"sample_adapter must be one of {list(SAMPLE_ADAPTERS)}, got {self.sample_adapter!r}")
        if self.adv_mode not in ADV_MODES:
            problems.append(f"adv_mode must be one of {list(ADV_MODES)}, got {self.adv_mode!r}")
        if problems:
            raise ValueError("algo.nft: " + "; ".join(problems))


def optimality(advantages: torch.Tensor, config: NFTConfig = NFTConfig(), *, backend=None) -> torch.Tensor:
    """r [N] in [0, 1] from advantages [N] (after config.adv_mode)."""
    return ops.nft_optimality(mode_advantages(advantages, config), config.adv_clip_max, backend=backend)


def mode_advantages(advantages: torch.Tensor, config: NFTConfig = NFTConfig()) -> torch.Tensor:
    """advantages [N] under config.adv_mode: "all" returns them unchanged; the others clip to ±adv_clip_max first,
    then keep the positive part, the negative part, 1 where positive (else 0), or the sign (UniWorld-V2)."""
    mode, clip = config.adv_mode, config.adv_clip_max
    if mode == "all":
        return advantages
    a = advantages.clamp(-clip, clip)                                                 # [N]
    if mode == "positive_only":
        return a.clamp(min=0)
    if mode == "negative_only":
        return a.clamp(max=0)
    if mode == "one_only":
        return (a > 0).to(a.dtype)
    return torch.sign(a)                                                              # binary


def num_train_timesteps(num_timesteps: int, fraction: float = 0.99) -> int:
    """int(T * fraction), at least 1."""
    return max(1, int(num_timesteps * fraction))


def train_timesteps(timesteps: torch.Tensor, batch: int, fraction: float = 0.99, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """timesteps: [T] the rollout's t values (1 = noise). Returns [B, K] with K = int(T * fraction): row b holds
    the first K entries of an independent random permutation of `timesteps`."""
    T = timesteps.shape[0]
    keys = torch.rand(batch, T, generator=generator, device=timesteps.device)      # [B, T]
    perm = keys.argsort(dim=1)[:, :num_train_timesteps(T, fraction)]                # [B, K]
    return timesteps[perm]


def noisy_latents(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x0: [B, ...] clean latents, t: [B]. Returns (x_t, noise) with x_t = (1 - t) x0 + t noise, fresh
    standard normal noise unless given."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    tb = t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))                        # [B, 1, ...]
    return (1 - tb) * x0 + tb * noise, noise


def loss(v, v_old, x_t, x0, t, r, config: NFTConfig = NFTConfig(), *, v_ref=None, valid=None,
         backend=None) -> ops.NFTLoss:
    """mean over valid of adv_clip_max * policy + kl_beta * kl, through `ops.nft_loss` (policy and kl returned
    unscaled, [B]). v_ref is needed only when kl_beta != 0; it is ignored when kl_beta == 0."""
    if config.kl_beta != 0 and v_ref is None:
        raise ValueError(f"kl_beta={config.kl_beta} needs v_ref (the velocity with adapters disabled); "
                         "set kl_beta=0 to skip the reference forward")
    scale = config.adv_clip_max   # mean(scale * policy + kl_beta * kl) = scale * mean(policy + kl_beta/scale * kl)
    out = ops.nft_loss(v, v_old, x_t, x0, t, r, beta=config.beta, v_ref=v_ref if config.kl_beta else None,
                       kl_beta=config.kl_beta / scale, valid=valid, backend=backend)
    return ops.NFTLoss(out.loss * scale, out.policy, out.kl)
