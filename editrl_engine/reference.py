"""Plain-torch reference implementations of the fused RL ops (docs/design.md §3).

These are the readable definitions every other backend is tested against. They are differentiable through
ordinary autograd, run in float64 when given float64 inputs and otherwise accumulate in float32, and serve
as the `backend="torch"` implementation. Arguments arrive already validated by `editrl_engine.ops`.
"""
from __future__ import annotations

import math

import torch

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
KINDS = ("flow_grpo", "cps")


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16 and fp16 accumulate in float32)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def mean_dims(x: torch.Tensor) -> torch.Tensor:
    """Mean over every non-batch dimension: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def per_sample(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or a [B] tensor as a [B, 1, ..., 1] tensor that broadcasts against `like` ([B, ...])."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape(-1).expand(batch).reshape(batch, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------------------------------
# group advantages
# ---------------------------------------------------------------------------------------------------------
def group_advantages(rewards, group_index, num_groups, *, std="group", eps=1e-4, clip=5.0, filter_std=None,
                     filter_mean=None):
    """Per-group normalised advantages; see `editrl_engine.ops.group_advantages`."""
    dtype = compute_dtype(rewards)
    r = rewards.to(dtype)                                                   # [N]
    finite = torch.isfinite(r)                                              # [N]
    r0 = torch.where(finite, r, torch.zeros_like(r))
    zeros = torch.zeros(num_groups, dtype=dtype, device=r.device)
    count = zeros.index_add(0, group_index, finite.to(dtype))               # [G]
    mean = zeros.index_add(0, group_index, r0) / count                      # [G], NaN where count == 0
    dev = torch.where(finite, r - mean[group_index], torch.zeros_like(r))   # [N]
    group_std = (zeros.index_add(0, group_index, dev * dev) / count).sqrt()  # [G]
    if std == "global":
        n = finite.sum().to(dtype)
        global_mean = r0.sum() / n
        global_dev = torch.where(finite, r - global_mean, torch.zeros_like(r))
        norm_std = ((global_dev * global_dev).sum() / n).sqrt().expand(num_groups)
    else:
        norm_std = group_std
    group_ok = torch.ones(num_groups, dtype=torch.bool, device=r.device)
    if filter_std is not None:
        group_ok &= group_std > filter_std
    if filter_mean is not None:
        group_ok &= mean < filter_mean
    valid = finite & group_ok[group_index]                                  # [N]
    adv = ((r - mean[group_index]) / (norm_std[group_index] + eps)).clamp(-clip, clip)
    adv = torch.where(valid, adv, torch.zeros_like(adv))
    return adv, valid, mean, group_std


# ---------------------------------------------------------------------------------------------------------
# SDE step and log-probability
# ---------------------------------------------------------------------------------------------------------
def sde_coefficients(sigma, sigma_next, noise_level, kind, sigma_max):
    """Per-sample scalars of one SDE step, all [B] in the compute dtype.

    Both kinds are linear in (x, v): mu = a_x * x + a_v * v, x_next = mu + s * noise, and
    logp = -c * mean_dims((x_next - mu)^2) + d. `std_t` is Flow-GRPO's sigma_t (used by the KL).
    """
    t, t_next = sigma, sigma_next
    dt = t_next - t
    a = noise_level
    if kind == "flow_grpo":
        t_star = torch.where(t == 1, sigma_max, t)
        std_t = a * torch.sqrt(t / (1 - t_star))
        s = std_t * torch.sqrt(-dt)
        a_x = 1 + std_t ** 2 * dt / (2 * t)
        a_v = (1 + std_t ** 2 * (1 - t) / (2 * t)) * dt
        c = 1 / (2 * s ** 2)
        d = -torch.log(s) - LOG_SQRT_2PI
    else:  # cps
        s = t_next * math.sin(a * math.pi / 2)
        cos_coef = torch.sqrt((t_next ** 2 - s ** 2).clamp_min(0))       # t_next * cos(a pi / 2)
        # mu = (1 - t_next) * (x - t v) + cos_coef * (x + (1 - t) v)
        a_x = (1 - t_next) + cos_coef
        a_v = -(1 - t_next) * t + cos_coef * (1 - t)
        std_t = torch.full_like(t, float("nan"))
        c = torch.ones_like(t)
        d = torch.zeros_like(t)
    return a_x, a_v, s, c, d, std_t


def _schedule(sigma, sigma_next, sigma_max, batch, dtype, device):
    as_vec = lambda value: torch.as_tensor(value, dtype=dtype, device=device).reshape(-1).expand(batch)
    t, t_next = as_vec(sigma), as_vec(sigma_next)
    t_max = t_next if sigma_max is None else as_vec(sigma_max)
    return t, t_next, t_max


def sde_step(x, v, sigma, sigma_next, noise, *, noise_level=0.7, kind="flow_grpo", sigma_max=None):
    """One stochastic sampling step and the log-density of the sample it draws; see `ops.sde_step`."""
    dtype = compute_dtype(x, v, noise)
    batch = x.shape[0]
    t, t_next, t_max = _schedule(sigma, sigma_next, sigma_max, batch, dtype, x.device)
    xf, vf, nf = x.to(dtype), v.to(dtype), noise.to(dtype)                     # [B, ...]
    if noise_level == 0:
        x_next = xf + vf * per_sample(t_next - t, batch, xf)
        return x_next.to(x.dtype), torch.full((batch,), float("nan"), dtype=dtype, device=x.device)
    a_x, a_v, s, c, d, _ = sde_coefficients(t, t_next, noise_level, kind, t_max)
    mu = per_sample(a_x, batch, xf) * xf + per_sample(a_v, batch, xf) * vf
    x_next = mu + per_sample(s, batch, xf) * nf
    logp = -c * mean_dims((x_next - mu) ** 2) + d
    return x_next.to(x.dtype), logp


def sde_logprob(x_next, x, v, sigma, sigma_next, *, noise_level=0.7, kind="flow_grpo", v_ref=None,
                sigma_max=None):
    """Log-density of `x_next` under the SDE step from (x, v), and the KL to the step from v_ref."""
    dtype = compute_dtype(x_next, x, v, v_ref)
    batch = x.shape[0]
    t, t_next, t_max = _schedule(sigma, sigma_next, sigma_max, batch, dtype, x.device)
    a_x, a_v, s, c, d, std_t = sde_coefficients(t, t_next, noise_level, kind, t_max)
    xf, vf = x.to(dtype), v.to(dtype)
    a_v_b = per_sample(a_v, batch, xf)
    mu = per_sample(a_x, batch, xf) * xf + a_v_b * vf
    logp = -c * mean_dims((x_next.to(dtype) - mu) ** 2) + d
    kl = None
    if v_ref is not None:
        # mu(v) - mu(v_ref) = a_v * (v - v_ref)
        kl = mean_dims((a_v_b * (vf - v_ref.to(dtype))) ** 2) / (2 * std_t ** 2)
    return logp, kl


# ---------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over mask; 0 when the mask is empty (an empty batch contributes no gradient)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def _stat_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over mask; NaN when the mask is empty."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum()


def grpo_loss(logp, logp_old, advantages, *, clip_range=1e-4, valid=None, kl=None, kl_beta=0.0):
    """PPO-clipped policy-gradient loss of Flow-GRPO; see `ops.grpo_loss`."""
    dtype = compute_dtype(logp, logp_old, advantages, kl)
    clip_low, clip_high = (clip_range, clip_range) if isinstance(clip_range, (int, float)) else clip_range
    logp, logp_old, adv = logp.to(dtype), logp_old.to(dtype), advantages.to(dtype)
    mask = torch.ones_like(logp, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    ratio = torch.exp(logp - logp_old)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    per_sample_loss = pg if kl is None else pg + kl_beta * kl.to(dtype)
    loss = masked_mean(per_sample_loss, mask)
    with torch.no_grad():
        ratio_d, delta = ratio.detach(), (logp - logp_old).detach()
        clipped = ((ratio_d < 1 - clip_low) | (ratio_d > 1 + clip_high)).to(dtype)
        any_valid = mask.any()
        inf = ratio_d.new_full((), float("inf"))
        nan = ratio_d.new_full((), float("nan"))
        stats = {
            "clipfrac": _stat_mean(clipped, mask),
            "approx_kl": 0.5 * _stat_mean(delta * delta, mask),
            "ratio_mean": _stat_mean(ratio_d, mask),
            "ratio_min": torch.where(any_valid, torch.where(mask, ratio_d, inf).min(), nan),
            "ratio_max": torch.where(any_valid, torch.where(mask, ratio_d, -inf).max(), nan),
        }
    return loss, stats


def nft_loss(v, v_old, x_t, x0, t, r, *, beta=1.0, v_ref=None, kl_beta=0.0, valid=None):
    """DiffusionNFT's implicit positive/negative policy loss; see `ops.nft_loss`."""
    dtype = compute_dtype(v, v_old, x_t, x0, v_ref)
    batch = v.shape[0]
    vf, v_oldf, x_tf, x0f = v.to(dtype), v_old.to(dtype), x_t.to(dtype), x0.to(dtype)   # [B, ...]
    t_b = per_sample(torch.as_tensor(t).to(dtype), batch, vf)
    r_vec = torch.as_tensor(r, device=v.device).to(dtype).reshape(-1).expand(batch)   # [B]
    v_pos = beta * vf + (1 - beta) * v_oldf
    v_neg = (1 + beta) * v_oldf - beta * vf
    err_pos = x_tf - t_b * v_pos - x0f
    err_neg = x_tf - t_b * v_neg - x0f
    w_pos = mean_dims(err_pos.abs()).clamp_min(1e-5).detach()                  # [B]
    w_neg = mean_dims(err_neg.abs()).clamp_min(1e-5).detach()
    loss_pos = mean_dims(err_pos ** 2) / w_pos
    loss_neg = mean_dims(err_neg ** 2) / w_neg
    policy = (r_vec * loss_pos + (1 - r_vec) * loss_neg) / beta                 # [B]
    kl = None if v_ref is None else mean_dims((vf - v_ref.to(dtype)) ** 2)      # [B]
    mask = torch.ones(batch, dtype=torch.bool, device=v.device) if valid is None else valid.to(torch.bool)
    per_sample_loss = policy if kl is None else policy + kl_beta * kl
    return masked_mean(per_sample_loss, mask), policy, kl


def nft_optimality(advantages, clip=5.0):
    """Optimality probability r in [0, 1] from advantages: clamp(1/2 + 1/2 * clamp(A, -c, c) / c, 0, 1)."""
    a = advantages.to(compute_dtype(advantages))
    return (0.5 + 0.5 * a.clamp(-clip, clip) / clip).clamp(0, 1)


def cfg_combine(v_cond, v_uncond, scale, *, rescale="none", norm_eps=1e-12):
    """Classifier-free guidance: v_uncond + g (v_cond - v_uncond); "norm" rescales each token to |v_cond|."""
    dtype = compute_dtype(v_cond, v_uncond)
    cond, uncond = v_cond.to(dtype), v_uncond.to(dtype)                         # [B, ..., C]
    g = per_sample(torch.as_tensor(scale).to(dtype), cond.shape[0], cond) if torch.is_tensor(scale) else scale
    out = uncond + g * (cond - uncond)
    if rescale == "norm":
        cond_norm = cond.norm(dim=-1, keepdim=True)                             # [B, ..., 1]
        out_norm = out.norm(dim=-1, keepdim=True).clamp_min(norm_eps)
        out = out * (cond_norm / out_norm)
    return out
