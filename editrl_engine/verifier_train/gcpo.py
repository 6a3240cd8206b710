"""GCPO, Edit-R1's RL for its principle verifier, as pure tensor functions (no model).

For one preference pair, N traces are sampled for the preferred image (final scores τ_w,1..N) and N for the
rejected one (τ_l,1..N). A trace's reward is how many traces of the other side it beats:
    r_w,j = (1/N) Σ_k 1[τ_w,j > τ_l,k]        r_l,j = (1/N) Σ_k 1[τ_l,j < τ_w,k]
A tie beats nothing. A trace without a score (NaN: unparseable) gets reward 0, and as an opponent it is beaten by
every parseable trace and beats none (its side failed to say anything; the other side's traces are not punished
for it). Advantages are normalised within each group of N traces (one image of one pair): (r - mean) / (std + eps);
a group whose rewards are all equal has advantage 0 and is counted. The token loss is PPO's clipped surrogate
against the sampling policy's token log-probs, plus β times a per-token KL to the SFT model estimated with k3:
exp(ref − new) − (ref − new) − 1 (non-negative, unbiased for KL(new ‖ ref) under samples of new).
"""
from __future__ import annotations

import torch


def pair_rewards(tau_preferred: torch.Tensor, tau_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r_w [N], r_l [N] (float32) from the final scores τ_w [N], τ_l [N] (NaN = unparseable)."""
    pref, rej = tau_preferred.double(), tau_rejected.double()                 # [N], [N]
    pref_ok, rej_ok = ~torch.isnan(pref), ~torch.isnan(rej)
    # beats[j, k]: preferred trace j beats rejected trace k (NaN opponents are beaten by every parseable trace)
    beats = (pref[:, None] > rej[None, :]) | (pref_ok[:, None] & ~rej_ok[None, :])      # [N, N]
    below = (rej[:, None] < pref[None, :]) | (rej_ok[:, None] & ~pref_ok[None, :])      # [N, N]: rejected j < pref k
    r_w = torch.where(pref_ok, beats.double().mean(dim=1), 0.0)
    r_l = torch.where(rej_ok, below.double().mean(dim=1), 0.0)
    return r_w.float(), r_l.float()


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [G, N] -> (advantages [G, N], zero_variance [G] bool): (r - mean) / (std + eps) per group, 0 for a
    group whose rewards are all equal."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)                     # [G, 1]
    zero = (rewards == rewards[:, :1]).all(dim=1)                              # [G]
    advantages = torch.where(zero[:, None], torch.zeros_like(rewards), (rewards - mean) / (std + eps))
    return advantages, zero


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π ‖ π_ref): exp(ref − logp) − (ref − logp) − 1 (same shape)."""
    delta = logp_ref - logp
    return torch.exp(delta) - delta - 1


def token_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
               clip_eps: float = 0.2, kl_beta: float = 0.0, logp_ref: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate over trace tokens. logp, logp_old, logp_ref: [B, T] token log-probs (new policy with
    grad, sampling policy, SFT reference); advantages [B]; mask [B, T] (1 on trace tokens). The loss is the mean
    over all trace tokens of −min(ρA, clip(ρ, 1 ± ε)A) + β·k3. Returns (loss, stats: clip fraction, KL, ratio)."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - logp_old)                                                     # [B, T]
    adv = advantages.to(logp.dtype)[:, None]                                               # [B, 1]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    per_token = -surrogate
    kl = kl_k3(logp, logp_ref) if logp_ref is not None else torch.zeros_like(logp)
    if kl_beta:
        per_token = per_token + kl_beta * kl
    tokens = mask.sum().clamp_min(1)
    loss = (per_token * mask).sum() / tokens
    clipped = ((ratio - 1).abs() > clip_eps).to(logp.dtype)
    stats = {"clip_fraction": (clipped * mask).sum() / tokens, "kl": (kl * mask).sum() / tokens,
             "ratio_max": (ratio * mask).max()}
    return loss, {k: v.detach() for k, v in stats.items()}
