"""Triton kernels of DiffusionNFT: nft_loss forward and backward, and nft_optimality."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._grid import ROW_WARPS, chunk_sums, finalize_block, load_f32, partials, row_split, row_stride, vector_block

# indices into the partial-sum buffer
ABS_POS = tl.constexpr(0)   # sum |e+|
SQ_POS = tl.constexpr(1)    # sum e+^2
ABS_NEG = tl.constexpr(2)   # sum |e-|
SQ_NEG = tl.constexpr(3)    # sum e-^2
SQ_REF = tl.constexpr(4)    # sum (v - v_ref)^2
W_MIN = tl.constexpr(1e-5)


@triton.jit
def _errors(v, v_old, x_t, x0, t, beta):
    """e+- = x_t - t v+- - x0 with v+ = beta v + (1 - beta) v_old, v- = (1 + beta) v_old - beta v."""
    v_pos = beta * v + (1.0 - beta) * v_old
    v_neg = (1.0 + beta) * v_old - beta * v
    return x_t - t * v_pos - x0, x_t - t * v_neg - x0


@triton.jit
def _nft_rows_kernel(v_ptr, v_old_ptr, x_t_ptr, x0_ptr, v_ref_ptr, part_ptr, t_ptr, stride_v, stride_v_old,
                     stride_x_t, stride_x0, stride_v_ref, batch, dim, chunk, chunks, beta, HAS_REF: tl.constexpr,
                     BLOCK: tl.constexpr):
    """One (row, chunk): partial sums of |e+|, e+^2, |e-|, e-^2 (and (v - v_ref)^2)."""
    row = tl.program_id(0)
    chunk_id = tl.program_id(1)
    row64 = row.to(tl.int64)
    t = tl.load(t_ptr + row)
    abs_pos = tl.zeros([BLOCK], dtype=tl.float32)
    sq_pos = tl.zeros([BLOCK], dtype=tl.float32)
    abs_neg = tl.zeros([BLOCK], dtype=tl.float32)
    sq_neg = tl.zeros([BLOCK], dtype=tl.float32)
    sq_ref = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, chunk, BLOCK):
        cols = chunk_id * chunk + start + tl.arange(0, BLOCK)       # [BLOCK]
        mask = cols < dim
        v = load_f32(v_ptr + row64 * stride_v, cols, mask)
        err_pos, err_neg = _errors(v, load_f32(v_old_ptr + row64 * stride_v_old, cols, mask),
                                   load_f32(x_t_ptr + row64 * stride_x_t, cols, mask),
                                   load_f32(x0_ptr + row64 * stride_x0, cols, mask), t, beta)
        abs_pos += tl.abs(err_pos)
        sq_pos += err_pos * err_pos
        abs_neg += tl.abs(err_neg)
        sq_neg += err_neg * err_neg
        if HAS_REF:
            dv = v - load_f32(v_ref_ptr + row64 * stride_v_ref, cols, mask)
            sq_ref += dv * dv
    part = part_ptr + row * chunks + chunk_id
    tl.store(part + ABS_POS * batch * chunks, tl.sum(abs_pos, axis=0))
    tl.store(part + SQ_POS * batch * chunks, tl.sum(sq_pos, axis=0))
    tl.store(part + ABS_NEG * batch * chunks, tl.sum(abs_neg, axis=0))
    tl.store(part + SQ_NEG * batch * chunks, tl.sum(sq_neg, axis=0))
    if HAS_REF:
        tl.store(part + SQ_REF * batch * chunks, tl.sum(sq_ref, axis=0))


@triton.jit
def _nft_finalize_kernel(part_ptr, r_ptr, valid_ptr, loss_ptr, policy_ptr, kl_ptr, w_pos_ptr, w_neg_ptr, n_valid_ptr,
                         batch, dim, chunks, beta, kl_beta, HAS_REF: tl.constexpr, BLOCK_B: tl.constexpr,
                         CHUNKS_POW2: tl.constexpr):
    """One program: per-row policy, kl, w+-, then the masked mean loss and n_valid, in a fixed order."""
    loss_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    valid_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    for start in range(0, batch, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)                        # [BLOCK_B]
        row_mask = rows < batch
        w_pos = tl.maximum(chunk_sums(part_ptr, ABS_POS, rows, row_mask, batch, chunks, CHUNKS_POW2) / dim, W_MIN)
        w_neg = tl.maximum(chunk_sums(part_ptr, ABS_NEG, rows, row_mask, batch, chunks, CHUNKS_POW2) / dim, W_MIN)
        loss_pos = chunk_sums(part_ptr, SQ_POS, rows, row_mask, batch, chunks, CHUNKS_POW2) / dim / w_pos
        loss_neg = chunk_sums(part_ptr, SQ_NEG, rows, row_mask, batch, chunks, CHUNKS_POW2) / dim / w_neg
        r = tl.load(r_ptr + rows, mask=row_mask, other=0.0)
        policy = (r * loss_pos + (1.0 - r) * loss_neg) / beta
        per_sample_loss = policy
        if HAS_REF:
            kl = chunk_sums(part_ptr, SQ_REF, rows, row_mask, batch, chunks, CHUNKS_POW2) / dim
            tl.store(kl_ptr + rows, kl, mask=row_mask)
            per_sample_loss += kl_beta * kl
        valid = tl.load(valid_ptr + rows, mask=row_mask, other=0.0)
        loss_sum += valid * per_sample_loss
        valid_sum += valid
        tl.store(policy_ptr + rows, policy, mask=row_mask)
        tl.store(w_pos_ptr + rows, w_pos, mask=row_mask)
        tl.store(w_neg_ptr + rows, w_neg, mask=row_mask)
    n_valid = tl.sum(valid_sum, axis=0)
    tl.store(loss_ptr, tl.sum(loss_sum, axis=0) / tl.maximum(n_valid, 1.0))
    tl.store(n_valid_ptr, n_valid)


@triton.jit
def _nft_backward_kernel(grad_v_ptr, grad_loss_ptr, grad_policy_ptr, grad_kl_ptr, v_ptr, v_old_ptr, x_t_ptr, x0_ptr,
                         v_ref_ptr, t_ptr, r_ptr, valid_ptr, w_pos_ptr, w_neg_ptr, n_valid_ptr, stride_v,
                         stride_v_old, stride_x_t, stride_x0, stride_v_ref, dim, chunk, beta, kl_beta,
                         HAS_REF: tl.constexpr, BLOCK: tl.constexpr):
    """One (row, chunk) of grad_v = gp (2t/D) (-r e+/w+ + (1 - r) e-/w-) + gk 2 (v - v_ref) / D."""
    row = tl.program_id(0)
    chunk_id = tl.program_id(1)
    row64 = row.to(tl.int64)
    t = tl.load(t_ptr + row)
    r = tl.load(r_ptr + row)
    loss_weight = tl.load(grad_loss_ptr) * tl.load(valid_ptr + row) / tl.maximum(tl.load(n_valid_ptr), 1.0)
    grad_policy = loss_weight + tl.load(grad_policy_ptr + row)
    coef_pos = -grad_policy * 2.0 * t * r / (dim * tl.load(w_pos_ptr + row))
    coef_neg = grad_policy * 2.0 * t * (1.0 - r) / (dim * tl.load(w_neg_ptr + row))
    if HAS_REF:
        coef_ref = (loss_weight * kl_beta + tl.load(grad_kl_ptr + row)) * 2.0 / dim
    for start in range(0, chunk, BLOCK):
        cols = chunk_id * chunk + start + tl.arange(0, BLOCK)       # [BLOCK]
        mask = cols < dim
        v = load_f32(v_ptr + row64 * stride_v, cols, mask)
        err_pos, err_neg = _errors(v, load_f32(v_old_ptr + row64 * stride_v_old, cols, mask),
                                   load_f32(x_t_ptr + row64 * stride_x_t, cols, mask),
                                   load_f32(x0_ptr + row64 * stride_x0, cols, mask), t, beta)
        grad_v = coef_pos * err_pos + coef_neg * err_neg
        if HAS_REF:
            grad_v += coef_ref * (v - load_f32(v_ref_ptr + row64 * stride_v_ref, cols, mask))
        tl.store(grad_v_ptr + row64 * dim + cols, grad_v.to(grad_v_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _nft_optimality_kernel(adv_ptr, r_ptr, n, clip, BLOCK: tl.constexpr):
    """r = clamp(1/2 + 1/2 clamp(A, -clip, clip) / clip, 0, 1)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)        # [BLOCK]
    mask = offsets < n
    adv = tl.clamp(tl.load(adv_ptr + offsets, mask=mask, other=0.0), -clip, clip, propagate_nan=tl.PropagateNan.ALL)
    r = tl.clamp(0.5 + 0.5 * adv / clip, 0.0, 1.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(r_ptr + offsets, r, mask=mask)


def nft_loss_forward(v, v_old, x_t, x0, v_ref, t, r, valid, beta, kl_beta):
    """loss f32 [], policy f32 [B], kl f32 [B] | None, w_pos f32 [B], w_neg f32 [B], n_valid f32 []."""
    batch, dim = v.shape
    split = row_split(v)
    part = partials(5 if v_ref is not None else 4, split, v)        # [num, B, chunks]
    _nft_rows_kernel[(batch, split.chunks)](
        v, v_old, x_t, x0, v_ref, part, t, v.stride(0), v_old.stride(0), x_t.stride(0), x0.stride(0),
        row_stride(v_ref), batch, dim, split.chunk, split.chunks, beta, HAS_REF=v_ref is not None, BLOCK=split.block,
        num_warps=ROW_WARPS)
    loss = torch.empty((), dtype=torch.float32, device=v.device)
    n_valid = torch.empty((), dtype=torch.float32, device=v.device)
    policy, w_pos, w_neg = torch.empty_like(t), torch.empty_like(t), torch.empty_like(t)    # [B]
    kl = None if v_ref is None else torch.empty_like(t)                                     # [B]
    block_b, chunks_pow2 = finalize_block(batch, split.chunks)
    _nft_finalize_kernel[(1,)](part, r, valid, loss, policy, kl, w_pos, w_neg, n_valid, batch, dim, split.chunks,
                               beta, kl_beta, HAS_REF=v_ref is not None, BLOCK_B=block_b, CHUNKS_POW2=chunks_pow2,
                               num_warps=4)
    return loss, policy, kl, w_pos, w_neg, n_valid


def nft_loss_backward(grad_loss, grad_policy, grad_kl, v, v_old, x_t, x0, v_ref, t, r, valid, w_pos, w_neg, n_valid,
                      beta, kl_beta):
    """grad_v [B, D] in v's dtype."""
    batch, dim = v.shape
    split = row_split(v)
    grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)  # [B, D]
    _nft_backward_kernel[(batch, split.chunks)](
        grad_v, grad_loss, grad_policy, grad_kl, v, v_old, x_t, x0, v_ref, t, r, valid, w_pos, w_neg, n_valid,
        v.stride(0), v_old.stride(0), x_t.stride(0), x0.stride(0), row_stride(v_ref), dim, split.chunk, beta, kl_beta,
        HAS_REF=v_ref is not None, BLOCK=split.block, num_warps=ROW_WARPS)
    return grad_v


def nft_optimality(adv, clip):
    """r f32 [N] from advantages f32 [N]."""
    n = adv.numel()
    block = vector_block(n, adv)
    r = torch.empty_like(adv)                                       # [N]
    _nft_optimality_kernel[(triton.cdiv(n, block),)](adv, r, n, clip, BLOCK=block)
    return r
