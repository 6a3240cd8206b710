"""The public fused RL ops (docs/design.md §3): argument checks, then dispatch to torch, triton or cpp.

Every op takes `backend=None | "torch" | "triton" | "cpp"`; None reads EDITRL_BACKEND, else picks triton for
CUDA tensors and cpp for CPU tensors (editrl_engine.backends). Latents are [B, ...] with any trailing shape and
any strides. torch and triton take float32, bfloat16 and float16 (statistics accumulate in float32; the torch
backend also takes float64 and then computes in float64). cpp computes in float32: a bf16 / fp16 CPU tensor
is upcast to a float32 copy and latent-sized results come back in the input dtype.

Checks that read tensor values (group_index range, sigma range) synchronise a CUDA device; inside
`skip_value_checks()` they are skipped, for hot loops whose inputs are known good.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import torch

from . import autograd as fused
from . import backends, reference

__all__ = ["group_advantages", "sde_step", "sde_logprob", "grpo_loss", "nft_loss", "nft_optimality", "cfg_combine",
           "GroupAdvantages", "NFTLoss", "skip_value_checks"]

_CHECK_VALUES = contextvars.ContextVar("editrl_check_values", default=True)
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # float32 [N], 0 where not valid
    valid: torch.Tensor       # bool [N]
    mean: torch.Tensor        # float32 [G], NaN for a group with no finite reward
    std: torch.Tensor         # float32 [G], the group's population std (what filter_std compares)


class NFTLoss(NamedTuple):
    loss: torch.Tensor            # float32 []
    policy: torch.Tensor          # float32 [B]
    kl: torch.Tensor | None       # float32 [B], None without v_ref


@contextlib.contextmanager
def skip_value_checks():
    """Skip the checks that read tensor values (and so would synchronise a CUDA device)."""
    token = _CHECK_VALUES.set(False)
    try:
        yield
    finally:
        _CHECK_VALUES.reset(token)


# ---------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------
def _float_tensor(name: str, t, min_dim: int = 1) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) ([B, ...]), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one sample")
    return t


def _same_as(name: str, t, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    _float_tensor(name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}; they must match")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move them to one device")
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; cast them to one dtype")
    return t


def _per_sample(name: str, value, batch: int, device: torch.device, dtype=None):
    """A float or a [B] / [] tensor; returns it unchanged after checking its shape and device."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if not torch.is_tensor(value):
        raise ValueError(f"{name} must be a float or a tensor of shape [B]={batch}, got {type(value).__name__}")
    if value.numel() not in (1, batch) or value.dim() > 1:
        raise ValueError(f"{name} must be a float or a tensor of shape [{batch}] (one per sample), "
                         f"got shape {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the latents are on {device}; move it to {device}")
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {value.dtype}")
    return value


def _values(value) -> torch.Tensor:
    return torch.as_tensor(value).detach().double().reshape(-1).cpu()


def _check_schedule(sigma, sigma_next, sigma_max, noise_level: float, kind: str, batch: int, device: torch.device):
    """Shapes and devices of the SDE schedule, then (unless skipped) its values."""
    for name, value in (("sigma", sigma), ("sigma_next", sigma_next), ("sigma_max", sigma_max)):
        if value is not None:
            _per_sample(name, value, batch, device)
    if kind not in reference.KINDS:
        raise ValueError(f"kind={kind!r} is not an SDE kind; choose one of {reference.KINDS}")
    if not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if not _CHECK_VALUES.get():
        return
    t, t_next = _values(sigma), _values(sigma_next)
    for name, s in (("sigma", t), ("sigma_next", t_next)):
        if not bool(((s >= 0) & (s <= 1)).all()):
            raise ValueError(f"{name} must lie in [0, 1] (t = 1 is pure noise), got {s.tolist()}")
    if not bool((t_next < t).all()):
        raise ValueError(f"sigma_next must be < sigma (sampling runs t from 1 to 0), got sigma={t.tolist()}, "
                         f"sigma_next={t_next.tolist()}")
    if sigma_max is not None and not bool(((_values(sigma_max) >= 0) & (_values(sigma_max) < 1)).all()):
        raise ValueError(f"sigma_max must lie in [0, 1) (it replaces t = 1 in sqrt(t / (1 - t))), "
                         f"got {_values(sigma_max).tolist()}")


def _fused_latents(backend: str, **tensors):
    """dtype support and differentiability limits of the fused backends."""
    for name, t in tensors.items():
        if t is None:
            continue
        if t.dtype not in _FUSED_DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; backend {backend!r} takes float32, bfloat16 or float16 "
                             "(use backend='torch' for float64)")
        if name != "v" and t.requires_grad:
            raise ValueError(f"{name} requires grad, but backend {backend!r} differentiates only v; "
                             f"detach {name} or use backend='torch'")


def _rows(t: torch.Tensor | None, cols: int | None = None) -> torch.Tensor | None:
    """[B, ...] -> [B, D] (or [-1, cols]) with unit column stride (a view when the layout allows)."""
    if t is None:
        return None
    rows = t.reshape(t.shape[0], -1) if cols is None else t.reshape(-1, cols)
    return rows if rows.stride(1) == 1 or rows.shape[1] == 1 else rows.contiguous()


def _vec(value, batch: int, device: torch.device) -> torch.Tensor:
    """A float or [B] / [] tensor as a contiguous float32 [B] tensor."""
    return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1).expand(batch).contiguous()


def _schedule_vectors(sigma, sigma_next, sigma_max, batch: int, device: torch.device):
    """(t, t_next, t_max) as float32 [B]; t_max (used where t == 1) defaults to sigma_next."""
    t, t_next = _vec(sigma, batch, device), _vec(sigma_next, batch, device)
    return t, t_next, t_next if sigma_max is None else _vec(sigma_max, batch, device)


def _mask(valid, batch: int, device: torch.device, name="valid") -> torch.Tensor | None:
    if valid is None:
        return None
    if not torch.is_tensor(valid) or valid.shape != (batch,):
        raise ValueError(f"{name} must be a bool tensor of shape [{batch}], got "
                         f"{tuple(valid.shape) if torch.is_tensor(valid) else type(valid).__name__}")
    if valid.device != device:
        raise ValueError(f"{name} is on {valid.device} but the inputs are on {device}; move it to {device}")
    return valid.to(torch.bool)


# ---------------------------------------------------------------------------------------------------------
# ops
# ---------------------------------------------------------------------------------------------------------
def group_advantages(rewards, group_index, *, std="group", eps=1e-4, clip=5.0, filter_std=None, filter_mean=None,
                     num_groups=None, backend=None) -> GroupAdvantages:
    """Group-normalised advantages with UniWorld-V2-style low-variance filtering.

    rewards: float [N], NaN = missing (an unparseable judge answer); group_index: int [N] in [0, G), groups may
    be ragged and unordered. mean_g / std_g are over each group's finite rewards (population std, ddof=0);
    std="global" normalises every group by one std over all finite rewards (Flow-GRPO's default).
    advantages = clamp((r - mean_g) / (std + eps), -clip, clip), exactly 0 where not valid;
    valid = finite AND std_g > filter_std (if given) AND mean_g < filter_mean (if given).
    num_groups (G) defaults to max(group_index) + 1, which reads the tensor (a host sync on CUDA).
    """
    _float_tensor("rewards", rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if not torch.is_tensor(group_index) or group_index.dtype not in (torch.int64, torch.int32):
        raise ValueError("group_index must be an int64 (or int32) tensor [N]")
    if group_index.shape != rewards.shape:
        raise ValueError(f"group_index has shape {tuple(group_index.shape)} but rewards has "
                         f"{tuple(rewards.shape)}; they must match")
    if group_index.device != rewards.device:
        raise ValueError(f"group_index is on {group_index.device} but rewards is on {rewards.device}")
    if std not in ("group", "global"):
        raise ValueError(f"std={std!r}: choose 'group' or 'global'")
    if not clip > 0 or not eps >= 0:
        raise ValueError(f"clip must be > 0 and eps >= 0, got clip={clip}, eps={eps}")
    if num_groups is None:
        num_groups = int(group_index.max()) + 1
    if _CHECK_VALUES.get():
        lo, hi = int(group_index.min()), int(group_index.max())
        if lo < 0 or hi >= num_groups:
            raise ValueError(f"group_index out of range: values span [{lo}, {hi}] but must lie in "
                             f"[0, num_groups={num_groups})")
    group_index = group_index.to(torch.int64).contiguous()
    chosen = backends.resolve(backend, rewards.device)
    if chosen == "torch":
        out = reference.group_advantages(rewards, group_index, num_groups, std=std, eps=eps, clip=clip,
                                         filter_std=filter_std, filter_mean=filter_mean)
    else:
        out = backends.launchers(chosen).group_advantages(
            rewards.float().contiguous(), group_index, num_groups, std == "global", float(eps), float(clip),
            None if filter_std is None else float(filter_std), None if filter_mean is None else float(filter_mean))
    return GroupAdvantages(*out)


def sde_step(x, v, sigma, sigma_next, noise, *, noise_level=0.7, kind="flow_grpo", sigma_max=None, backend=None):
    """One stochastic flow-matching step: returns (x_next [B, ...] in x's dtype, logp float32 [B]).

    kind="flow_grpo": sigma_t = a * sqrt(t / (1 - t*)) (t* = sigma_max, default sigma_next, where t == 1),
    s = sigma_t sqrt(-dt), mu = x (1 + sigma_t^2 dt / 2t) + v (1 + sigma_t^2 (1 - t) / 2t) dt,
    logp = mean_dims[-(x_next - mu)^2 / 2s^2 - log s - log sqrt(2 pi)].
    kind="cps": s = t_next sin(a pi / 2), mu = (1 - t_next) x0_hat + sqrt(t_next^2 - s^2) x1_hat,
    logp = -mean_dims (x_next - mu)^2. noise_level = 0 gives the Euler step x + v dt and logp all NaN.
    sigma, sigma_next, sigma_max: float or [B]; t = sigma runs from 1 (noise) to 0.
    """
    _float_tensor("x", x)
    _same_as("v", v, "x", x)
    _same_as("noise", noise, "x", x)
    batch = x.shape[0]
    _check_schedule(sigma, sigma_next, sigma_max, noise_level, kind, batch, x.device)
    chosen = backends.resolve(backend, x.device)
    if chosen == "torch":
        return reference.sde_step(x, v, sigma, sigma_next, noise, noise_level=noise_level, kind=kind,
                                  sigma_max=sigma_max)
    _fused_latents(chosen, x=x, v=v, noise=noise)
    if v.requires_grad:
        raise ValueError(f"sde_step is not differentiable with backend {chosen!r}; it samples the rollout. "
                         "Run it under torch.no_grad() and take gradients through sde_logprob")
    t, t_next, t_max = _schedule_vectors(sigma, sigma_next, sigma_max, batch, x.device)
    x_next, logp = backends.launchers(chosen).sde_step(_rows(x), _rows(v), _rows(noise), t, t_next, t_max,
                                                       float(noise_level), kind)
    if noise_level == 0:
        logp = torch.full_like(logp, float("nan"))
    return x_next.reshape(x.shape), logp


def sde_logprob(x_next, x, v, sigma, sigma_next, *, noise_level=0.7, kind="flow_grpo", v_ref=None, sigma_max=None,
                backend=None):
    """Log-density of x_next under the SDE step from (x, v): returns (logp float32 [B], kl float32 [B] or None).

    Differentiable in v. kl = mean_dims (mu(v) - mu(v_ref))^2 / (2 sigma_t^2), Flow-GRPO's convention
    (kind="flow_grpo" only). Same schedule arguments as sde_step; noise_level must be > 0.
    """
    _float_tensor("x", x)
    _same_as("x_next", x_next, "x", x)
    _same_as("v", v, "x", x)
    if v_ref is not None:
        _same_as("v_ref", v_ref, "v", v)
    batch = x.shape[0]
    _check_schedule(sigma, sigma_next, sigma_max, noise_level, kind, batch, x.device)
    if noise_level == 0:
        raise ValueError("sde_logprob needs noise_level > 0: the noise_level = 0 step is deterministic and has "
                         "no density")
    if v_ref is not None and kind != "flow_grpo":
        raise ValueError("the KL to v_ref is defined for kind='flow_grpo' only; pass v_ref=None with kind='cps'")
    chosen = backends.resolve(backend, x.device)
    if chosen == "torch":
        return reference.sde_logprob(x_next, x, v, sigma, sigma_next, noise_level=noise_level, kind=kind,
                                     v_ref=v_ref, sigma_max=sigma_max)
    _fused_latents(chosen, x_next=x_next, x=x, v=v, v_ref=v_ref)
    t, t_next, t_max = _schedule_vectors(sigma, sigma_next, sigma_max, batch, x.device)
    return fused.SDELogProb.apply(backends.launchers(chosen), _rows(x_next), _rows(x), _rows(v), _rows(v_ref),
                                  t, t_next, t_max, float(noise_level), kind)


def grpo_loss(logp, logp_old, advantages, *, clip_range=1e-4, valid=None, kl=None, kl_beta=0.0, backend=None):
    """Flow-GRPO's PPO-clipped loss over samples: returns (loss float32 [], stats dict of float32 []).

    ratio = exp(logp - logp_old); clip_range is eps or (eps_low, eps_high);
    pg = max(-A ratio, -A clamp(ratio, 1 - eps_low, 1 + eps_high)); loss = mean over valid of pg + kl_beta kl
    (0 when nothing is valid). stats: clipfrac, approx_kl = mean(dlogp^2) / 2, ratio_mean / min / max over
    valid (NaN when nothing is valid). Differentiable in logp and kl.
    """
    _float_tensor("logp", logp)
    if logp.dim() != 1:
        raise ValueError(f"logp must be 1-D [B], got shape {tuple(logp.shape)}")
    _same_as("logp_old", logp_old, "logp", logp)
    _same_as("advantages", advantages, "logp", logp)
    if kl is not None:
        _same_as("kl", kl, "logp", logp)
    elif kl_beta != 0:
        raise ValueError(f"kl_beta={kl_beta} needs kl (the per-sample KL to the reference, e.g. from sde_logprob)")
    clip_low, clip_high = (clip_range, clip_range) if isinstance(clip_range, (int, float)) else tuple(clip_range)
    if not (clip_low >= 0 and clip_high >= 0):
        raise ValueError(f"clip_range must be >= 0, got {clip_range}")
    valid = _mask(valid, logp.shape[0], logp.device)
    chosen = backends.resolve(backend, logp.device)
    if chosen == "torch":
        return reference.grpo_loss(logp, logp_old, advantages, clip_range=(clip_low, clip_high), valid=valid,
                                   kl=kl, kl_beta=kl_beta)
    for name, t in (("logp_old", logp_old), ("advantages", advantages)):
        if t.requires_grad:
            raise ValueError(f"{name} requires grad; backend {chosen!r} differentiates logp and kl only")
    as_f32 = lambda t: None if t is None else t.float().contiguous()
    valid_f = torch.ones_like(logp, dtype=torch.float32) if valid is None else valid.float()
    loss, stats = fused.GRPOLossFn.apply(backends.launchers(chosen), as_f32(logp), as_f32(logp_old),
                                         as_f32(advantages), valid_f, as_f32(kl), float(clip_low),
                                         float(clip_high), float(kl_beta))
    return loss, dict(zip(fused.STAT_NAMES, stats.unbind(0)))


def nft_loss(v, v_old, x_t, x0, t, r, *, beta=1.0, v_ref=None, kl_beta=0.0, valid=None, backend=None) -> NFTLoss:
    """DiffusionNFT's loss; differentiable in v. Returns NFTLoss(loss [], policy [B], kl [B] or None).

    v+ = beta v + (1 - beta) v_old; v- = (1 + beta) v_old - beta v; x0_hat± = x_t - t v±;
    w± = stopgrad(max(mean_dims |x0_hat± - x0|, 1e-5)); L± = mean_dims (x0_hat± - x0)^2 / w±;
    policy = (r L+ + (1 - r) L-) / beta; kl = mean_dims (v - v_ref)^2; loss = mean over valid of
    policy + kl_beta kl (0 when nothing is valid). t, r: float or [B]; r is the optimality in [0, 1].
    """
    _float_tensor("v", v)
    for name, t_ in (("v_old", v_old), ("x_t", x_t), ("x0", x0)):
        _same_as(name, t_, "v", v)
    if v_ref is not None:
        _same_as("v_ref", v_ref, "v", v)
    batch = v.shape[0]
    _per_sample("t", t, batch, v.device)
    _per_sample("r", r, batch, v.device)
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (NFT's guidance strength), got {beta}")
    if kl_beta != 0 and v_ref is None:
        raise ValueError(f"kl_beta={kl_beta} needs v_ref (the reference model's velocity)")
    valid = _mask(valid, batch, v.device)
    chosen = backends.resolve(backend, v.device)
    if chosen == "torch":
        return NFTLoss(*reference.nft_loss(v, v_old, x_t, x0, t, r, beta=beta, v_ref=v_ref, kl_beta=kl_beta,
                                           valid=valid))
    _fused_latents(chosen, v=v, v_old=v_old, x_t=x_t, x0=x0, v_ref=v_ref)
    valid_f = torch.ones(batch, dtype=torch.float32, device=v.device) if valid is None else valid.float()
    return NFTLoss(*fused.NFTLossFn.apply(backends.launchers(chosen), _rows(v), _rows(v_old), _rows(x_t), _rows(x0),
                                          _rows(v_ref), _vec(t, batch, v.device), _vec(r, batch, v.device), valid_f,
                                          float(beta), float(kl_beta)))


def nft_optimality(advantages, clip=5.0, *, backend=None) -> torch.Tensor:
    """Optimality probability r = clamp(1/2 + 1/2 clamp(A, -clip, clip) / clip, 0, 1), float32, A's shape."""
    _float_tensor("advantages", advantages)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    chosen = backends.resolve(backend, advantages.device)
    if chosen == "torch":
        return reference.nft_optimality(advantages, clip)
    flat = advantages.detach().float().reshape(-1).contiguous()
    return backends.launchers(chosen).nft_optimality(flat, float(clip)).reshape(advantages.shape)


def cfg_combine(v_cond, v_uncond, scale, *, rescale="none", backend=None) -> torch.Tensor:
    """Classifier-free guidance v_uncond + g (v_cond - v_uncond), g a float or [B].

    rescale="norm" multiplies each token's vector (last dim) by |v_cond| / |combined| (Qwen-Image's true CFG).
    Differentiable in v_cond and v_uncond. Input [B, ..., C]; output in the inputs' dtype.
    """
    _float_tensor("v_cond", v_cond, min_dim=2)
    _same_as("v_uncond", v_uncond, "v_cond", v_cond)
    if rescale not in ("none", "norm"):
        raise ValueError(f"rescale={rescale!r}: choose 'none' or 'norm'")
    batch = v_cond.shape[0]
    _per_sample("scale", scale, batch, v_cond.device)
    chosen = backends.resolve(backend, v_cond.device)
    if chosen == "torch":
        return reference.cfg_combine(v_cond, v_uncond, scale, rescale=rescale).to(v_cond.dtype)
    for name, t_ in (("v_cond", v_cond), ("v_uncond", v_uncond)):
        if t_.dtype not in _FUSED_DTYPES:
            raise ValueError(f"{name} has dtype {t_.dtype}; backend {chosen!r} takes float32, bfloat16 or float16")
    channels = v_cond.shape[-1]
    out = fused.CFGCombineFn.apply(backends.launchers(chosen), _rows(v_cond, channels), _rows(v_uncond, channels),
                                   _vec(scale, batch, v_cond.device), v_cond.numel() // channels // batch,
                                   rescale == "norm")
    return out.reshape(v_cond.shape)
