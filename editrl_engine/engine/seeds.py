"""Every random draw of a run comes from a seed of (run seed, step, global sample index, stream), so a sample is the
same whichever rank handles it and however a batch is chunked: 1 rank and 2 ranks see the same samples.

Streams: 0 the rollout's noise, 1 a sample's NFT training timesteps and noise, 2 the step's Flow-GRPO SDE window
(index 0), 3 a group's NFT training timesteps and noise (algo.nft.group_noise; index = the group).
"""
from __future__ import annotations


def sample_seed(run_seed: int, step: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for (run, step, global sample, stream), mixed so nearby inputs give unrelated seeds."""
    x = (run_seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + stream) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return (x ^ (x >> 32)) & (2**63 - 1)
