"""Triton kernels of classifier-free guidance on token rows: cfg_combine forward and backward (optional norm
rescale)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._grid import tile_rows

NORM_EPS = tl.constexpr(1e-12)


@triton.jit
def _tile(rows_total, channels, rows_per_batch, scale_ptr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's token rows [ROWS], channel columns [BLOCK_C], tile mask [ROWS, BLOCK_C] and scale g [ROWS, 1]."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < rows_total
    mask = row_mask[:, None] & (cols[None, :] < channels)
    g = tl.load(scale_ptr + rows // rows_per_batch, mask=row_mask, other=0.0)
    return rows.to(tl.int64), cols, mask, g[:, None]


@triton.jit
def _load_tile(ptr, rows, cols, stride, mask):
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _cfg_forward_kernel(out_ptr, cond_ptr, uncond_ptr, scale_ptr, stride_cond, stride_uncond, rows_total, channels,
                        rows_per_batch, RESCALE: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = u + g (k - u), times |k| / max(|out|, eps) per row when RESCALE."""
    rows, cols, mask, g = _tile(rows_total, channels, rows_per_batch, scale_ptr, ROWS, BLOCK_C)
    cond = _load_tile(cond_ptr, rows, cols, stride_cond, mask)           # [ROWS, BLOCK_C]
    uncond = _load_tile(uncond_ptr, rows, cols, stride_uncond, mask)
    out = uncond + g * (cond - uncond)
    if RESCALE:
        cond_norm = tl.sqrt(tl.sum(cond * cond, axis=1))                 # [ROWS]
        out_norm = tl.maximum(tl.sqrt(tl.sum(out * out, axis=1)), NORM_EPS)
        out = out * (cond_norm / out_norm)[:, None]
    tl.store(out_ptr + rows[:, None] * channels + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cfg_backward_kernel(grad_cond_ptr, grad_uncond_ptr, grad_out_ptr, cond_ptr, uncond_ptr, scale_ptr,
                         stride_grad_out, stride_cond, stride_uncond, rows_total, channels, rows_per_batch,
                         RESCALE: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """grad_cond = g gc (+ (go.c) / n_c k / n_k), grad_uncond = (1 - g) gc; gc = grad wrt the combined c."""
    rows, cols, mask, g = _tile(rows_total, channels, rows_per_batch, scale_ptr, ROWS, BLOCK_C)
    grad_out = _load_tile(grad_out_ptr, rows, cols, stride_grad_out, mask)   # [ROWS, BLOCK_C]
    if RESCALE:
        cond = _load_tile(cond_ptr, rows, cols, stride_cond, mask)
        uncond = _load_tile(uncond_ptr, rows, cols, stride_uncond, mask)
        combined = uncond + g * (cond - uncond)
        cond_norm = tl.sqrt(tl.sum(cond * cond, axis=1))[:, None]            # [ROWS, 1]
        combined_norm = tl.maximum(tl.sqrt(tl.sum(combined * combined, axis=1)), NORM_EPS)[:, None]
        grad_dot = tl.sum(grad_out * combined, axis=1)[:, None] / combined_norm
        grad_combined = (cond_norm / combined_norm) * (grad_out - combined * grad_dot / combined_norm)
        through_norm = tl.where(cond_norm > 0.0, grad_dot / cond_norm, 0.0)
        grad_cond = g * grad_combined + through_norm * cond
    else:
        grad_combined = grad_out
        grad_cond = g * grad_out
    offsets = rows[:, None] * channels + cols[None, :]
    tl.store(grad_cond_ptr + offsets, grad_cond.to(grad_cond_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_uncond_ptr + offsets, ((1.0 - g) * grad_combined).to(grad_uncond_ptr.dtype.element_ty), mask=mask)


def _launch_shape(v_cond):
    """(grid, ROWS, BLOCK_C) of [ROWS, BLOCK_C] tiles over the rows [T, C]."""
    rows_total, channels = v_cond.shape
    block_c = triton.next_power_of_2(channels)
    rows = tile_rows(rows_total, block_c, v_cond)
    return (triton.cdiv(rows_total, rows),), rows, block_c


def cfg_combine_forward(v_cond, v_uncond, scale, rows_per_batch, rescale):
    """out [T, C] in v_cond's dtype."""
    grid, rows, block_c = _launch_shape(v_cond)
    out = torch.empty(v_cond.shape, dtype=v_cond.dtype, device=v_cond.device)     # [T, C]
    _cfg_forward_kernel[grid](out, v_cond, v_uncond, scale, v_cond.stride(0), v_uncond.stride(0), v_cond.shape[0],
                              v_cond.shape[1], rows_per_batch, RESCALE=rescale, ROWS=rows, BLOCK_C=block_c)
    return out


def cfg_combine_backward(grad_out, v_cond, v_uncond, scale, rows_per_batch, rescale):
    """grad_cond, grad_uncond [T, C] in v_cond's dtype."""
    grid, rows, block_c = _launch_shape(v_cond)
    grad_cond = torch.empty(v_cond.shape, dtype=v_cond.dtype, device=v_cond.device)   # [T, C]
    grad_uncond = torch.empty(v_cond.shape, dtype=v_cond.dtype, device=v_cond.device)
    _cfg_backward_kernel[grid](grad_cond, grad_uncond, grad_out, v_cond, v_uncond, scale, grad_out.stride(0),
                               v_cond.stride(0), v_uncond.stride(0), v_cond.shape[0], v_cond.shape[1],
                               rows_per_batch, RESCALE=rescale, ROWS=rows, BLOCK_C=block_c)
    return grad_cond, grad_uncond
