"""Deterministic sharding of a dataset across ranks, with an optional per-epoch shuffle.

Every rank computes the same epoch order (the manifest order, or a permutation drawn from (seed, epoch)) and
takes every world_size-th item starting at its rank. The shards of one epoch are disjoint and together cover
every item; their sizes differ by at most one. With `equal=True` each shard is cut to the smallest size, so
that every rank runs the same number of steps (a few items of the epoch are then left out; the shuffle
moves which ones from epoch to epoch).
"""
from __future__ import annotations

import numpy as np


def epoch_order(num_items: int, *, epoch: int = 0, shuffle: bool = False, seed: int = 0) -> np.ndarray:
    """The order in which one epoch visits items 0..num_items-1: int64 [num_items]."""
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    if not shuffle:
        return np.arange(num_items, dtype=np.int64)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0 to shuffle, got seed={seed}, epoch={epoch}")
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(num_items).astype(np.int64)


def shard_indices(num_items: int, rank: int = 0, world_size: int = 1, *, epoch: int = 0, shuffle: bool = False,
                  seed: int = 0, equal: bool = False) -> np.ndarray:
    """Indices of the items rank `rank` of `world_size` visits this epoch, in visiting order: int64 [n_rank]."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    order = epoch_order(num_items, epoch=epoch, shuffle=shuffle, seed=seed)
    if equal:
        order = order[: (num_items // world_size) * world_size]
    return order[rank::world_size]
