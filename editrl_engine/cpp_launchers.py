"""Launchers of the C++ CPU backend (`backend="cpp"`): the protocol of editrl_engine.autograd over editrl_engine._C.

Each launcher allocates its outputs with torch.empty (the kernels write every element) and passes the kernels
raw addresses: a row view [B, D] as (data_ptr, row stride in elements), a contiguous vector as data_ptr.
Kernels compute in float32 (per-sample scalars in float64) on torch.get_num_threads() OpenMP threads; their
reductions add fixed chunks in a fixed order, so results do not depend on the thread count.
dtypes: float32 inputs are read in place; bfloat16 / float16 inputs are upcast to a float32 copy, and the
latent-sized outputs (x_next, grad_v, cfg outputs and gradients) come back in the input dtype. Per-sample
outputs (logp, kl, loss, statistics) are always float32.
"""
from __future__ import annotations

import torch

from . import _C


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """float32 as is (any row stride); bf16 / fp16 as a contiguous float32 copy."""
    return t if t is None or t.dtype == torch.float32 else t.float()


def _rows(t: torch.Tensor | None) -> tuple[int, int] | None:
    """A float32 [B, D] row view (unit column stride) as (address, row stride)."""
    return None if t is None else (t.data_ptr(), t.stride(0))


def _vec(t: torch.Tensor | None) -> int | None:
    """A contiguous vector (or 0-d tensor) as its address."""
    return None if t is None else t.data_ptr()


def _kind(kind: str):
    return getattr(_C.SDEKind, kind)


def _rows_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=torch.float32)


def _vector(n: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float32)


def group_advantages(rewards, group_index, num_groups, std_global, eps, clip, filter_std, filter_mean):
    n = rewards.shape[0]
    advantages, valid = _vector(n), torch.empty(n, dtype=torch.bool)           # [N]
    mean, std = _vector(num_groups), _vector(num_groups)                         # [G]
    _C.group_advantages(_vec(rewards), _vec(group_index), n, num_groups, std_global, eps, clip, filter_std,
                        filter_mean, _vec(advantages), _vec(valid), _vec(mean), _vec(std))
    return advantages, valid, mean, std


def sde_step(x, v, noise, t, t_next, t_max, noise_level, kind):
    x32, v32, noise32 = _f32(x), _f32(v), _f32(noise)                            # [B, D]
    x_next, logp = _rows_like(x32), _vector(x.shape[0])
    _C.sde_step(_rows(x32), _rows(v32), _rows(noise32), _vec(t), _vec(t_next), _vec(t_max), noise_level,
                _kind(kind), *x.shape, _rows(x_next), _vec(logp), torch.get_num_threads())
    return x_next.to(x.dtype), logp


def sde_logprob_forward(x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind):
    x_next32, x32, v32, v_ref32 = _f32(x_next), _f32(x), _f32(v), _f32(v_ref)   # [B, D]
    logp, kl = _vector(x.shape[0]), None if v_ref is None else _vector(x.shape[0])
    _C.sde_logprob_forward(_rows(x_next32), _rows(x32), _rows(v32), _rows(v_ref32), _vec(t), _vec(t_next),
                           _vec(t_max), noise_level, _kind(kind), *x.shape, _vec(logp), _vec(kl),
                           torch.get_num_threads())
    return logp, kl


def sde_logprob_backward(grad_logp, grad_kl, x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind):
    x_next32, x32, v32, v_ref32 = _f32(x_next), _f32(x), _f32(v), _f32(v_ref)   # [B, D]
    grad_v = _rows_like(v32)
    _C.sde_logprob_backward(_vec(grad_logp), _vec(grad_kl), _rows(x_next32), _rows(x32), _rows(v32),
                            _rows(v_ref32), _vec(t), _vec(t_next), _vec(t_max), noise_level, _kind(kind), *v.shape,
                            _rows(grad_v), torch.get_num_threads())
    return grad_v.to(v.dtype)


def nft_loss_forward(v, v_old, x_t, x0, v_ref, t, r, valid, beta, kl_beta):
    latents = [_f32(a) for a in (v, v_old, x_t, x0, v_ref)]                     # [B, D]
    batch = v.shape[0]
    loss, n_valid = torch.empty((), dtype=torch.float32), torch.empty((), dtype=torch.float32)
    policy, w_pos, w_neg = _vector(batch), _vector(batch), _vector(batch)
    kl = None if v_ref is None else _vector(batch)
    _C.nft_loss_forward(*map(_rows, latents), _vec(t), _vec(r), _vec(valid), beta, kl_beta, *v.shape, _vec(loss),
                        _vec(policy), _vec(kl), _vec(w_pos), _vec(w_neg), _vec(n_valid), torch.get_num_threads())
    return loss, policy, kl, w_pos, w_neg, n_valid


def nft_loss_backward(grad_loss, grad_policy, grad_kl, v, v_old, x_t, x0, v_ref, t, r, valid, w_pos, w_neg,
                      n_valid, beta, kl_beta):
    latents = [_f32(a) for a in (v, v_old, x_t, x0, v_ref)]                     # [B, D]
    grad_v = _rows_like(latents[0])
    _C.nft_loss_backward(_vec(grad_loss), _vec(grad_policy), _vec(grad_kl), *map(_rows, latents), _vec(t), _vec(r),
                         _vec(valid), _vec(w_pos), _vec(w_neg), _vec(n_valid), beta, kl_beta, *v.shape,
                         _rows(grad_v), torch.get_num_threads())
    return grad_v.to(v.dtype)


def grpo_loss_forward(logp, logp_old, adv, valid, kl, clip_low, clip_high, kl_beta):
    loss, n_valid, stats = torch.empty((), dtype=torch.float32), torch.empty((), dtype=torch.float32), _vector(5)
    _C.grpo_loss_forward(_vec(logp), _vec(logp_old), _vec(adv), _vec(valid), _vec(kl), clip_low, clip_high, kl_beta,
                         logp.shape[0], _vec(loss), _vec(stats), _vec(n_valid))
    return loss, stats, n_valid


def grpo_loss_backward(grad_loss, logp, logp_old, adv, valid, n_valid, clip_low, clip_high, kl_beta, has_kl):
    grad_logp, grad_kl = _vector(logp.shape[0]), _vector(logp.shape[0]) if has_kl else None
    _C.grpo_loss_backward(_vec(grad_loss), _vec(logp), _vec(logp_old), _vec(adv), _vec(valid), _vec(n_valid),
                          clip_low, clip_high, kl_beta, logp.shape[0], _vec(grad_logp), _vec(grad_kl))
    return grad_logp, grad_kl


def nft_optimality(adv, clip):
    r = _vector(adv.shape[0])
    _C.nft_optimality(_vec(adv), adv.shape[0], clip, _vec(r))
    return r


def cfg_combine_forward(v_cond, v_uncond, scale, rows_per_batch, rescale):
    cond, uncond = _f32(v_cond), _f32(v_uncond)                                  # [T, C]
    out = _rows_like(cond)
    _C.cfg_combine_forward(_rows(cond), _rows(uncond), _vec(scale), rows_per_batch, rescale, *v_cond.shape,
                           _rows(out), torch.get_num_threads())
    return out.to(v_cond.dtype)


def cfg_combine_backward(grad_out, v_cond, v_uncond, scale, rows_per_batch, rescale):
    grad, cond, uncond = _f32(grad_out), _f32(v_cond), _f32(v_uncond)            # [T, C]
    grad_cond, grad_uncond = _rows_like(cond), _rows_like(uncond)
    _C.cfg_combine_backward(_rows(grad), _rows(cond), _rows(uncond), _vec(scale), rows_per_batch, rescale,
                            *v_cond.shape, _rows(grad_cond), _rows(grad_uncond), torch.get_num_threads())
    return grad_cond.to(v_cond.dtype), grad_uncond.to(v_uncond.dtype)
