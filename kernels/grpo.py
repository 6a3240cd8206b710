"""Triton kernels of Flow-GRPO's PPO-clipped loss over per-sample vectors: grpo_loss forward and backward."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._grid import vector_block


@triton.jit
def _ratio_and_clip(logp_ptr, logp_old_ptr, offsets, mask, ratio_low, ratio_high):
    """delta = logp - logp_old, ratio = exp(delta), and ratio clamped to [ratio_low, ratio_high]."""
    delta = tl.load(logp_ptr + offsets, mask=mask, other=0.0) - tl.load(logp_old_ptr + offsets, mask=mask, other=0.0)
    ratio = tl.exp(delta)
    return delta, ratio, tl.minimum(tl.maximum(ratio, ratio_low), ratio_high)


@triton.jit
def _grpo_forward_kernel(logp_ptr, logp_old_ptr, adv_ptr, valid_ptr, kl_ptr, loss_ptr, stats_ptr, n_valid_ptr, batch,
                         ratio_low, ratio_high, kl_beta, HAS_KL: tl.constexpr, BLOCK: tl.constexpr):
    """One program over B: masked mean loss, n_valid, and stats (clipfrac, approx_kl, ratio mean / min / max)."""
    loss_sum = tl.zeros([BLOCK], dtype=tl.float32)
    valid_sum = tl.zeros([BLOCK], dtype=tl.float32)
    clipped_sum = tl.zeros([BLOCK], dtype=tl.float32)
    sq_delta_sum = tl.zeros([BLOCK], dtype=tl.float32)
    ratio_sum = tl.zeros([BLOCK], dtype=tl.float32)
    ratio_min = tl.full([BLOCK], float("inf"), dtype=tl.float32)
    ratio_max = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    for start in range(0, batch, BLOCK):
        offsets = start + tl.arange(0, BLOCK)                       # [BLOCK]
        mask = offsets < batch
        delta, ratio, ratio_clipped = _ratio_and_clip(logp_ptr, logp_old_ptr, offsets, mask, ratio_low, ratio_high)
        adv = tl.load(adv_ptr + offsets, mask=mask, other=0.0)
        per_sample_loss = tl.maximum(-adv * ratio, -adv * ratio_clipped)
        if HAS_KL:
            per_sample_loss += kl_beta * tl.load(kl_ptr + offsets, mask=mask, other=0.0)
        valid = tl.load(valid_ptr + offsets, mask=mask, other=0.0)
        is_valid = valid != 0.0
        loss_sum += valid * per_sample_loss
        valid_sum += valid
        clipped = (ratio < ratio_low) | (ratio > ratio_high)
        clipped_sum += tl.where(is_valid & clipped, 1.0, 0.0)
        sq_delta_sum += tl.where(is_valid, delta * delta, 0.0)
        ratio_sum += tl.where(is_valid, ratio, 0.0)
        ratio_min = tl.minimum(ratio_min, tl.where(is_valid, ratio, float("inf")))
        ratio_max = tl.maximum(ratio_max, tl.where(is_valid, ratio, float("-inf")))
    n_valid = tl.sum(valid_sum, axis=0)
    any_valid = n_valid > 0.0
    tl.store(loss_ptr, tl.sum(loss_sum, axis=0) / tl.maximum(n_valid, 1.0))
    tl.store(n_valid_ptr, n_valid)
    tl.store(stats_ptr + 0, tl.where(any_valid, tl.sum(clipped_sum, axis=0) / n_valid, float("nan")))
    tl.store(stats_ptr + 1, tl.where(any_valid, 0.5 * tl.sum(sq_delta_sum, axis=0) / n_valid, float("nan")))
    tl.store(stats_ptr + 2, tl.where(any_valid, tl.sum(ratio_sum, axis=0) / n_valid, float("nan")))
    tl.store(stats_ptr + 3, tl.where(any_valid, tl.min(ratio_min, axis=0), float("nan")))
    tl.store(stats_ptr + 4, tl.where(any_valid, tl.max(ratio_max, axis=0), float("nan")))


@triton.jit
def _grpo_backward_kernel(grad_loss_ptr, logp_ptr, logp_old_ptr, adv_ptr, valid_ptr, n_valid_ptr, grad_logp_ptr,
                          grad_kl_ptr, batch, ratio_low, ratio_high, kl_beta, HAS_KL: tl.constexpr,
                          BLOCK: tl.constexpr):
    """grad_logp = w (-A ratio) where the max picks the unclipped branch or ratio is inside the clip range, else 0;
    grad_kl = w kl_beta; w = grad_loss valid / max(n_valid, 1)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)        # [BLOCK]
    mask = offsets < batch
    _, ratio, ratio_clipped = _ratio_and_clip(logp_ptr, logp_old_ptr, offsets, mask, ratio_low, ratio_high)
    adv = tl.load(adv_ptr + offsets, mask=mask, other=0.0)
    weight = tl.load(grad_loss_ptr) * tl.load(valid_ptr + offsets, mask=mask, other=0.0) / tl.maximum(
        tl.load(n_valid_ptr), 1.0)
    unclipped, clipped = -adv * ratio, -adv * ratio_clipped
    in_range = (ratio >= ratio_low) & (ratio <= ratio_high)
    tl.store(grad_logp_ptr + offsets, weight * tl.where((unclipped >= clipped) | in_range, unclipped, 0.0), mask=mask)
    if HAS_KL:
        tl.store(grad_kl_ptr + offsets, weight * kl_beta, mask=mask)


def grpo_loss_forward(logp, logp_old, adv, valid, kl, clip_low, clip_high, kl_beta):
    """loss f32 [], stats f32 [5], n_valid f32 [] from per-sample f32 [B] vectors."""
    batch = logp.shape[0]
    loss = torch.empty((), dtype=torch.float32, device=logp.device)
    n_valid = torch.empty((), dtype=torch.float32, device=logp.device)
    stats = torch.empty(5, dtype=torch.float32, device=logp.device)
    _grpo_forward_kernel[(1,)](logp, logp_old, adv, valid, kl, loss, stats, n_valid, batch, 1.0 - clip_low,
                               1.0 + clip_high, kl_beta, HAS_KL=kl is not None, BLOCK=vector_block(batch, logp))
    return loss, stats, n_valid


def grpo_loss_backward(grad_loss, logp, logp_old, adv, valid, n_valid, clip_low, clip_high, kl_beta, has_kl):
    """grad_logp f32 [B], grad_kl f32 [B] | None."""
    batch = logp.shape[0]
    block = vector_block(batch, logp)
    grad_logp = torch.empty_like(logp)                              # [B]
    grad_kl = torch.empty_like(logp) if has_kl else None            # [B]
    _grpo_backward_kernel[(triton.cdiv(batch, block),)](grad_loss, logp, logp_old, adv, valid, n_valid, grad_logp,
                                                        grad_kl, batch, 1.0 - clip_low, 1.0 + clip_high, kl_beta,
                                                        HAS_KL=has_kl, BLOCK=block)
    return grad_logp, grad_kl
