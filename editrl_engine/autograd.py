"""Autograd Functions of the differentiable fused ops, shared by the triton and cpp backends.

Each compiled backend is a *launcher module* (`editrl_engine.triton_launchers` for Triton, `editrl_engine.cpp_launchers`
for C++) with the functions below. Latent-sized tensors are passed as 2-D row views [B, D] whose column stride
is 1 (any row stride); per-sample vectors are contiguous float32 [B]; scalars are Python floats. Launchers
allocate their outputs, accumulate in float32, and return latent-sized outputs in the dtype of `v` (or `x`).

    group_advantages(rewards f32[N], group_index i64[N], num_groups, std_global, eps, clip, filter_std|None,
                     filter_mean|None) -> advantages f32[N], valid bool[N], mean f32[G], std f32[G]
    sde_step(x, v, noise, t, t_next, t_max, noise_level, kind) -> x_next [B, D], logp f32[B]
    sde_logprob_forward(x_next, x, v, v_ref|None, t, t_next, t_max, noise_level, kind) -> logp f32[B], kl f32[B]|None
    sde_logprob_backward(grad_logp f32[B], grad_kl f32[B]|None, x_next, x, v, v_ref|None, t, t_next, t_max,
                         noise_level, kind) -> grad_v [B, D]
    nft_loss_forward(v, v_old, x_t, x0, v_ref|None, t, r, valid f32[B] of 0/1, beta, kl_beta)
        -> loss f32[], policy f32[B], kl f32[B]|None, w_pos f32[B], w_neg f32[B], n_valid f32[]
    nft_loss_backward(grad_loss f32[], grad_policy f32[B], grad_kl f32[B]|None, v, v_old, x_t, x0, v_ref|None, t, r,
                      valid, w_pos, w_neg, n_valid, beta, kl_beta) -> grad_v [B, D]
    grpo_loss_forward(logp, logp_old, adv, valid, kl|None, clip_low, clip_high, kl_beta)
        -> loss f32[], stats f32[5] (clipfrac, approx_kl, ratio_mean, ratio_min, ratio_max), n_valid f32[]
    grpo_loss_backward(grad_loss f32[], logp, logp_old, adv, valid, n_valid, clip_low, clip_high, kl_beta, has_kl)
        -> grad_logp f32[B], grad_kl f32[B]|None
    nft_optimality(adv f32[N], clip) -> r f32[N]
    cfg_combine_forward(v_cond [T, C], v_uncond [T, C], scale f32[B], rows_per_batch, rescale: bool) -> out [T, C]
    cfg_combine_backward(grad_out [T, C], v_cond, v_uncond, scale, rows_per_batch, rescale)
        -> grad_cond [T, C], grad_uncond [T, C]

`kind` is "flow_grpo" or "cps"; per-sample math is in editrl_engine.reference (the definition to match).
Only `v` (and logp / kl for grpo_loss, v_cond / v_uncond for cfg_combine) receive gradients here.
"""
from __future__ import annotations

import torch

STAT_NAMES = ("clipfrac", "approx_kl", "ratio_mean", "ratio_min", "ratio_max")


def _f32(grad: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.float().contiguous()


class SDELogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind):
        logp, kl = impl.sde_logprob_forward(x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind)
        ctx.impl, ctx.noise_level, ctx.kind, ctx.v_shape = impl, noise_level, kind, v.shape
        ctx.save_for_backward(x_next, x, v, v_ref, t, t_next, t_max)
        return logp, kl

    @staticmethod
    def backward(ctx, grad_logp, grad_kl):
        x_next, x, v, v_ref, t, t_next, t_max = ctx.saved_tensors
        grad_logp = _f32(grad_logp) if grad_logp is not None else torch.zeros_like(t)
        grad_kl = _f32(grad_kl) if v_ref is not None else None
        grad_v = ctx.impl.sde_logprob_backward(grad_logp, grad_kl, x_next, x, v, v_ref, t, t_next, t_max,
                                               ctx.noise_level, ctx.kind)
        return None, None, None, grad_v.reshape(ctx.v_shape), None, None, None, None, None, None


class NFTLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, v, v_old, x_t, x0, v_ref, t, r, valid, beta, kl_beta):
        loss, policy, kl, w_pos, w_neg, n_valid = impl.nft_loss_forward(v, v_old, x_t, x0, v_ref, t, r, valid,
                                                                        beta, kl_beta)
        ctx.impl, ctx.beta, ctx.kl_beta, ctx.v_shape = impl, beta, kl_beta, v.shape
        ctx.save_for_backward(v, v_old, x_t, x0, v_ref, t, r, valid, w_pos, w_neg, n_valid)
        return loss, policy, kl

    @staticmethod
    def backward(ctx, grad_loss, grad_policy, grad_kl):
        v, v_old, x_t, x0, v_ref, t, r, valid, w_pos, w_neg, n_valid = ctx.saved_tensors
        grad_loss = _f32(grad_loss) if grad_loss is not None else torch.zeros((), device=v.device)
        grad_policy = _f32(grad_policy) if grad_policy is not None else torch.zeros_like(t)
        grad_kl = _f32(grad_kl) if v_ref is not None and grad_kl is not None else (
            torch.zeros_like(t) if v_ref is not None else None)
        grad_v = ctx.impl.nft_loss_backward(grad_loss, grad_policy, grad_kl, v, v_old, x_t, x0, v_ref, t, r, valid,
                                            w_pos, w_neg, n_valid, ctx.beta, ctx.kl_beta)
        return (None, grad_v.reshape(ctx.v_shape)) + (None,) * 9


class GRPOLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, logp, logp_old, adv, valid, kl, clip_low, clip_high, kl_beta):
        loss, stats, n_valid = impl.grpo_loss_forward(logp, logp_old, adv, valid, kl, clip_low, clip_high, kl_beta)
        ctx.impl, ctx.clip, ctx.kl_beta, ctx.has_kl = impl, (clip_low, clip_high), kl_beta, kl is not None
        ctx.logp_dtype, ctx.kl_dtype = logp.dtype, None if kl is None else kl.dtype
        ctx.save_for_backward(logp, logp_old, adv, valid, n_valid)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        logp, logp_old, adv, valid, n_valid = ctx.saved_tensors
        grad_logp, grad_kl = ctx.impl.grpo_loss_backward(_f32(grad_loss), logp, logp_old, adv, valid, n_valid,
                                                         *ctx.clip, ctx.kl_beta, ctx.has_kl)
        grad_kl = None if grad_kl is None else grad_kl.to(ctx.kl_dtype)
        return None, grad_logp.to(ctx.logp_dtype), None, None, None, grad_kl, None, None, None


class CFGCombineFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, v_cond, v_uncond, scale, rows_per_batch, rescale):
        out = impl.cfg_combine_forward(v_cond, v_uncond, scale, rows_per_batch, rescale)
        ctx.impl, ctx.rows_per_batch, ctx.rescale = impl, rows_per_batch, rescale
        ctx.save_for_backward(v_cond, v_uncond, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        v_cond, v_uncond, scale = ctx.saved_tensors
        grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
        grad_cond, grad_uncond = ctx.impl.cfg_combine_backward(grad_out, v_cond, v_uncond, scale,
                                                               ctx.rows_per_batch, ctx.rescale)
        return None, grad_cond, grad_uncond, None, None, None
