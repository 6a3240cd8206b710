"""A toy EditPolicy for sampler tests: a fixed linear velocity field, a FLUX-style shifted schedule, counters.

v(x, t) = (x - target) + 0.2 (1 + t) W x, with W a fixed random nn.Linear (so bf16 autocast changes it) and
`target` [N, L, C] made from the instruction and the source image at encode time. It counts encode calls and
velocity batch sizes, and can record every velocity input, so tests can watch the sampler step by step.
"""
from __future__ import annotations

import contextlib
import zlib

import torch

from editrl_engine.policy.base import Condition, EditPolicy


def shifted_sigmas(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    """linspace(1, 1/N, N) under the time shift s -> shift s / (1 + (shift - 1) s), then 0: float32 [N + 1]."""
    base = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    shifted = shift * base / (1 + (shift - 1) * base)
    return torch.cat([shifted, shifted.new_zeros(1)]).float()


class ToyPolicy(EditPolicy):
    family = "toy"

    def __init__(self, length: int = 16, channels: int = 12, shift: float = 3.0, seed: int = 0):
        torch.manual_seed(seed)
        self.transformer = torch.nn.Linear(channels, channels, bias=False)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.attention_backend = "none"
        self.latent_shape = (length, channels)
        self.shift = shift
        self.encode_calls = 0
        self.velocity_batches: list[int] = []
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] | None = None   # (x_t, t) when recording

    def encode(self, sources, instructions) -> Condition:
        self.encode_calls += 1
        targets = []
        for source, instruction in zip(sources, instructions):
            gen = torch.Generator().manual_seed(zlib.crc32(instruction.encode()))
            targets.append(torch.randn(self.latent_shape, generator=gen) + source.float().mean() / 255)
        return Condition(tensors={"target": torch.stack(targets)}, latent_shape=self.latent_shape, image_size=(8, 8))

    def velocity(self, x_t, t, cond, guidance=None):
        self.velocity_batches.append(x_t.shape[0])
        if self.recorded is not None:
            self.recorded.append((x_t.clone(), t.clone()))
        target = cond.tensors["target"]                                    # [B, L, C]
        with self.autocast_context():                                       # bf16 when autocast is set
            return (x_t - target) + 0.2 * (1 + t[:, None, None]) * self.transformer(x_t)

    def decode(self, x0, cond):
        pixels = ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [B, L, C]
        return pixels.reshape(x0.shape[0], 3, *cond.image_size)

    def sigmas(self, num_steps, cond):
        return shifted_sigmas(num_steps, self.shift)

    def add_lora(self, rank=32, alpha=64.0, target_modules=None, adapter="default"):
        raise NotImplementedError

    def lora_parameters(self, adapter="default"):
        raise NotImplementedError

    def save_lora(self, directory, adapter="default"):
        raise NotImplementedError

    @contextlib.contextmanager
    def use_adapter(self, adapter):
        yield


def toy_condition(policy: ToyPolicy, pairs: int = 2) -> Condition:
    """Encode `pairs` (source, instruction) pairs once."""
    sources = [torch.full((3, 8, 8), 40 * (p + 1), dtype=torch.uint8) for p in range(pairs)]
    return policy.encode(sources, [f"make shape {p} red" for p in range(pairs)])
