"""Triton kernels of the SDE step: sde_step, sde_logprob forward and backward (flow_grpo and cps kinds)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._grid import ROW_WARPS, chunk_sums, finalize_block, load_f32, partials, row_split, row_stride

LOG_SQRT_2PI = tl.constexpr(0.9189385332046727)
HALF_PI = tl.constexpr(1.5707963267948966)
# indices into the partial-sum buffer
SQ_RESIDUAL = tl.constexpr(0)   # sum (x_next - mu)^2
SQ_REF = tl.constexpr(1)        # sum (v - v_ref)^2


@triton.jit
def sde_coefficients(t, t_next, t_max, noise_level, FLOW_GRPO: tl.constexpr):
    """Scalars of one step, as reference.sde_coefficients: mu = a_x x + a_v v, x_next = mu + s noise,
    logp = -c mean (x_next - mu)^2 + d; std_t is Flow-GRPO's sigma_t (cps: unused)."""
    dt = t_next - t
    if FLOW_GRPO:
        t_star = tl.where(t == 1.0, t_max, t)
        std_t = noise_level * tl.sqrt(t / (1.0 - t_star))
        s = std_t * tl.sqrt(-dt)
        a_x = 1.0 + std_t * std_t * dt / (2.0 * t)
        a_v = (1.0 + std_t * std_t * (1.0 - t) / (2.0 * t)) * dt
        c = 1.0 / (2.0 * s * s)
        d = -tl.log(s) - LOG_SQRT_2PI
    else:
        s = t_next * tl.sin(noise_level * HALF_PI)
        cos_coef = tl.sqrt(tl.maximum(t_next * t_next - s * s, 0.0))     # t_next cos(a pi / 2)
        a_x = (1.0 - t_next) + cos_coef
        a_v = -(1.0 - t_next) * t + cos_coef * (1.0 - t)
        std_t = s
        c = 1.0
        d = 0.0
    return a_x, a_v, s, c, d, std_t


@triton.jit
def _sde_rows_kernel(x_next_ptr, x_ptr, v_ptr, noise_ptr, v_ref_ptr, part_ptr, t_ptr, t_next_ptr, t_max_ptr,
                     stride_x_next, stride_x, stride_v, stride_noise, stride_v_ref, batch, dim, chunk, chunks,
                     noise_level, SAMPLE: tl.constexpr, HAS_REF: tl.constexpr, FLOW_GRPO: tl.constexpr,
                     BLOCK: tl.constexpr):
    """One (row, chunk): partial sums of (x_next - mu)^2 (and (v - v_ref)^2); SAMPLE also writes x_next."""
    row = tl.program_id(0)
    chunk_id = tl.program_id(1)
    row64 = row.to(tl.int64)
    t = tl.load(t_ptr + row)
    a_x, a_v, s, c, d, std_t = sde_coefficients(t, tl.load(t_next_ptr + row), tl.load(t_max_ptr + row),
                                                noise_level, FLOW_GRPO)
    sq_residual = tl.zeros([BLOCK], dtype=tl.float32)
    sq_ref = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, chunk, BLOCK):
        cols = chunk_id * chunk + start + tl.arange(0, BLOCK)       # [BLOCK]
        mask = cols < dim
        v = load_f32(v_ptr + row64 * stride_v, cols, mask)
        mu = a_x * load_f32(x_ptr + row64 * stride_x, cols, mask) + a_v * v
        if SAMPLE:
            x_next = mu + s * load_f32(noise_ptr + row64 * stride_noise, cols, mask)
            tl.store(x_next_ptr + row64 * stride_x_next + cols, x_next.to(x_next_ptr.dtype.element_ty), mask=mask)
        else:
            x_next = load_f32(x_next_ptr + row64 * stride_x_next, cols, mask)
        residual = x_next - mu
        sq_residual += residual * residual
        if HAS_REF:
            dv = v - load_f32(v_ref_ptr + row64 * stride_v_ref, cols, mask)
            sq_ref += dv * dv
    part = part_ptr + row * chunks + chunk_id
    tl.store(part + SQ_RESIDUAL * batch * chunks, tl.sum(sq_residual, axis=0))
    if HAS_REF:
        tl.store(part + SQ_REF * batch * chunks, tl.sum(sq_ref, axis=0))


@triton.jit
def _sde_finalize_kernel(part_ptr, t_ptr, t_next_ptr, t_max_ptr, logp_ptr, kl_ptr, batch, dim, chunks, noise_level,
                         HAS_REF: tl.constexpr, FLOW_GRPO: tl.constexpr, BLOCK_B: tl.constexpr,
                         CHUNKS_POW2: tl.constexpr):
    """One program: logp [B] (and kl [B]) from the per-chunk partial sums."""
    for start in range(0, batch, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)                        # [BLOCK_B]
        row_mask = rows < batch
        t = tl.load(t_ptr + rows, mask=row_mask, other=0.5)
        t_next = tl.load(t_next_ptr + rows, mask=row_mask, other=0.25)
        t_max = tl.load(t_max_ptr + rows, mask=row_mask, other=0.25)
        a_x, a_v, s, c, d, std_t = sde_coefficients(t, t_next, t_max, noise_level, FLOW_GRPO)
        sq_residual = chunk_sums(part_ptr, SQ_RESIDUAL, rows, row_mask, batch, chunks, CHUNKS_POW2)
        tl.store(logp_ptr + rows, -c * (sq_residual / dim) + d, mask=row_mask)
        if HAS_REF:
            sq_ref = chunk_sums(part_ptr, SQ_REF, rows, row_mask, batch, chunks, CHUNKS_POW2)
            tl.store(kl_ptr + rows, a_v * a_v * (sq_ref / dim) / (2.0 * std_t * std_t), mask=row_mask)


@triton.jit
def _sde_logprob_backward_kernel(grad_v_ptr, grad_logp_ptr, grad_kl_ptr, x_next_ptr, x_ptr, v_ptr, v_ref_ptr,
                                 t_ptr, t_next_ptr, t_max_ptr, stride_x_next, stride_x, stride_v, stride_v_ref,
                                 dim, chunk, noise_level, HAS_REF: tl.constexpr, FLOW_GRPO: tl.constexpr,
                                 BLOCK: tl.constexpr):
    """One (row, chunk) of grad_v = grad_logp 2 c a_v (x_next - mu) / D + grad_kl a_v^2 (v - v_ref) / (D std_t^2)."""
    row = tl.program_id(0)
    chunk_id = tl.program_id(1)
    row64 = row.to(tl.int64)
    a_x, a_v, s, c, d, std_t = sde_coefficients(tl.load(t_ptr + row), tl.load(t_next_ptr + row),
                                                tl.load(t_max_ptr + row), noise_level, FLOW_GRPO)
    coef_residual = tl.load(grad_logp_ptr + row) * 2.0 * c * a_v / dim
    if HAS_REF:
        coef_ref = tl.load(grad_kl_ptr + row) * a_v * a_v / (dim * std_t * std_t)
    for start in range(0, chunk, BLOCK):
        cols = chunk_id * chunk + start + tl.arange(0, BLOCK)       # [BLOCK]
        mask = cols < dim
        v = load_f32(v_ptr + row64 * stride_v, cols, mask)
        mu = a_x * load_f32(x_ptr + row64 * stride_x, cols, mask) + a_v * v
        grad_v = coef_residual * (load_f32(x_next_ptr + row64 * stride_x_next, cols, mask) - mu)
        if HAS_REF:
            grad_v += coef_ref * (v - load_f32(v_ref_ptr + row64 * stride_v_ref, cols, mask))
        tl.store(grad_v_ptr + row64 * dim + cols, grad_v.to(grad_v_ptr.dtype.element_ty), mask=mask)


def _row_sums_and_finalize(x_next, x, v, noise, v_ref, t, t_next, t_max, noise_level, kind, sample):
    """Launch the (row, chunk) kernel and the finalize kernel: logp f32 [B], kl f32 [B] | None."""
    batch, dim = x.shape
    split = row_split(x)
    flow_grpo = kind == "flow_grpo"
    part = partials(2 if v_ref is not None else 1, split, x)         # [num, B, chunks]
    _sde_rows_kernel[(batch, split.chunks)](
        x_next, x, v, noise, v_ref, part, t, t_next, t_max, x_next.stride(0), x.stride(0), v.stride(0),
        row_stride(noise), row_stride(v_ref), batch, dim, split.chunk, split.chunks, noise_level, SAMPLE=sample,
        HAS_REF=v_ref is not None, FLOW_GRPO=flow_grpo, BLOCK=split.block, num_warps=ROW_WARPS)
    logp = torch.empty_like(t)                                      # [B]
    kl = None if v_ref is None else torch.empty_like(t)             # [B]
    block_b, chunks_pow2 = finalize_block(batch, split.chunks)
    _sde_finalize_kernel[(1,)](part, t, t_next, t_max, logp, kl, batch, dim, split.chunks, noise_level,
                               HAS_REF=v_ref is not None, FLOW_GRPO=flow_grpo, BLOCK_B=block_b,
                               CHUNKS_POW2=chunks_pow2, num_warps=4)
    return logp, kl


def sde_step(x, v, noise, t, t_next, t_max, noise_level, kind):
    """x_next [B, D] in x's dtype and logp f32 [B] (from the float32 x_next)."""
    x_next = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [B, D]
    logp, _ = _row_sums_and_finalize(x_next, x, v, noise, None, t, t_next, t_max, noise_level, kind, sample=True)
    return x_next, logp


def sde_logprob_forward(x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind):
    """logp f32 [B] and kl f32 [B] | None."""
    return _row_sums_and_finalize(x_next, x, v, None, v_ref, t, t_next, t_max, noise_level, kind, sample=False)


def sde_logprob_backward(grad_logp, grad_kl, x_next, x, v, v_ref, t, t_next, t_max, noise_level, kind):
    """grad_v [B, D] in v's dtype."""
    batch, dim = v.shape
    split = row_split(v)
    grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)  # [B, D]
    _sde_logprob_backward_kernel[(batch, split.chunks)](
        grad_v, grad_logp, grad_kl, x_next, x, v, v_ref, t, t_next, t_max, x_next.stride(0), x.stride(0),
        v.stride(0), row_stride(v_ref), dim, split.chunk, noise_level, HAS_REF=v_ref is not None,
        FLOW_GRPO=kind == "flow_grpo", BLOCK=split.block, num_warps=ROW_WARPS)
    return grad_v
