"""Block and chunk sizing shared by the kernels, the deterministic reduction of per-chunk partial sums, and the
float32 row load.

On a GPU a latent row [D] is split into chunks so that rows x chunks fill the device; each (row, chunk) program
writes partial sums that a small finalize kernel adds up in a fixed order. Under TRITON_INTERPRET=1 (CPU
tensors) every program costs Python time, so rows are not split and blocks are large.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import _interpreter

_interpreter.patch()       # Triton < 3.9's interpreter under NumPy 2 (see _interpreter.py)

PROGRAMS_PER_SM = 8         # (row, chunk) programs per SM on a GPU: one resident wave
GPU_ROW_BLOCK = 1024        # elements of a latent row per loop step on a GPU
GPU_VECTOR_BLOCK = 1024     # elements of a per-sample vector per loop step on a GPU
GPU_TILE = 2048             # elements of a [rows, channels] tile on a GPU
ROW_WARPS = 4               # warps of a (row, chunk) program: 8 elements of each input per thread and step
CPU_BLOCK = 16384           # under the interpreter: fewer, larger steps (each costs Python time)
CPU_TILE = 65536


class RowSplit(NamedTuple):
    """How the rows [B, D] of a latent are cut into (row, chunk) programs."""
    block: int       # elements per loop step (a power of two)
    chunk: int       # elements per program (a multiple of block)
    chunks: int      # programs per row


def on_gpu(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def row_split(like: torch.Tensor) -> RowSplit:
    """Chunking of `like` ([B, D]) so that B x chunks programs fill the GPU (one chunk per row on CPU)."""
    batch, dim = like.shape
    if not on_gpu(like):
        block = min(triton.next_power_of_2(dim), CPU_BLOCK)
        chunk = triton.cdiv(dim, block) * block
        return RowSplit(block, chunk, 1)
    block = min(triton.next_power_of_2(dim), GPU_ROW_BLOCK)
    chunks_wanted = triton.cdiv(PROGRAMS_PER_SM * _sm_count(like.device.index or 0), batch)
    chunk = triton.cdiv(triton.cdiv(dim, chunks_wanted), block) * block
    return RowSplit(block, chunk, triton.cdiv(dim, chunk))


def vector_block(n: int, like: torch.Tensor, gpu_block: int = GPU_VECTOR_BLOCK) -> int:
    """Loop step over a per-sample vector of n entries (at most gpu_block on a GPU)."""
    return min(triton.next_power_of_2(n), gpu_block if on_gpu(like) else CPU_BLOCK)


def tile_rows(rows: int, cols_block: int, like: torch.Tensor) -> int:
    """Rows per [rows, cols_block] tile so that a tile holds about GPU_TILE (CPU_TILE) elements."""
    tile = GPU_TILE if on_gpu(like) else CPU_TILE
    return max(1, min(triton.next_power_of_2(rows), tile // cols_block))


def row_stride(rows: torch.Tensor | None) -> int:
    """Row stride of an optional [B, D] view (0 for an absent one)."""
    return 0 if rows is None else rows.stride(0)


def partials(num: int, split: RowSplit, like: torch.Tensor) -> torch.Tensor:
    """Buffer of `num` per-(row, chunk) partial sums: float32 [num, B, chunks]."""
    return torch.empty((num, like.shape[0], split.chunks), dtype=torch.float32, device=like.device)


def finalize_block(batch: int, chunks: int) -> tuple[int, int]:
    """(BLOCK_B, CHUNKS_POW2) of a finalize kernel that reads [BLOCK_B, CHUNKS_POW2] partials per step."""
    chunks_pow2 = triton.next_power_of_2(chunks)
    return min(triton.next_power_of_2(batch), max(1, 4096 // chunks_pow2)), chunks_pow2


@triton.jit
def chunk_sums(part_ptr, quantity, rows, row_mask, batch, chunks, CHUNKS_POW2: tl.constexpr):
    """Sum over chunks of partial `quantity` for `rows` ([BLOCK_B]) of a [num, B, chunks] buffer -> [BLOCK_B]."""
    cols = tl.arange(0, CHUNKS_POW2)
    offsets = (quantity * batch + rows[:, None]) * chunks + cols[None, :]     # [BLOCK_B, CHUNKS_POW2]
    mask = row_mask[:, None] & (cols[None, :] < chunks)
    return tl.sum(tl.load(part_ptr + offsets, mask=mask, other=0.0), axis=1)


@triton.jit
def load_f32(row_ptr, cols, mask):
    """Masked load of row entries `cols` as float32 (0 where masked)."""
    return tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
