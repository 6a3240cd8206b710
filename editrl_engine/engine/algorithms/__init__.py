"""The RL algorithms the trainer runs, one file each, behind one interface (base.Algorithm).

Adding an algorithm: a file here with its Algorithm subclass, its line in ALGORITHMS, and its settings section as a
field of config.AlgoConfig (named like the algorithm: `[algo.<name>]`). The trainer never tests the name.
"""
from __future__ import annotations

from .base import Algorithm
from .grpo import GRPO
from .nft import NFT

ALGORITHMS: dict[str, type[Algorithm]] = {"nft": NFT, "grpo": GRPO}

__all__ = ["ALGORITHMS", "Algorithm", "GRPO", "NFT"]
