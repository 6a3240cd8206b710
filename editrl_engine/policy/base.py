"""The editing-policy interface every model family implements, and the Condition it passes around.

A policy owns one model family (transformer, VAE, text encoders, LoRA adapters). Latents travel as packed
sequences [B, L, C] (2x2 patches of the VAE latent, as the diffusers pipelines pack them); t is the flow time
in [0, 1] (t = 1 is noise). Samplers (policy/samplers.py) only call the methods below, so they know no family.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .lora import copy_adapter, soft_update


@dataclasses.dataclass
class Condition:
    """What a family needs to predict velocities for a batch of (source image, instruction) pairs.

    Encoded once per group and shared by its G samples: `tensors` hold one row per pair on their first
    dimension (or no batch dimension, e.g. position ids, listed in `shared`); `select(index)` gathers rows for
    the samples of a rollout batch without re-encoding.
    """
    tensors: dict[str, torch.Tensor]
    latent_shape: tuple[int, int]                   # (L, C) of the packed target latents
    image_size: tuple[int, int]                     # (H, W) in pixels of the edited image
    shared: frozenset[str] = frozenset()            # keys without a batch dimension
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return next(t.shape[0] for k, t in self.tensors.items() if k not in self.shared)

    def select(self, index: torch.Tensor | Sequence[int]) -> "Condition":
        """Rows `index` of every batched tensor (e.g. repeat_interleave(G) for G samples per pair)."""
        index = torch.as_tensor(index, dtype=torch.long)
        tensors = {k: t if k in self.shared else t.index_select(0, index.to(t.device)) for k, t in self.tensors.items()}
        return dataclasses.replace(self, tensors=tensors)

    def to(self, device: torch.device | str) -> "Condition":
        return dataclasses.replace(self, tensors={k: t.to(device) for k, t in self.tensors.items()})


def single_sources(family: str, sources: Sequence) -> Sequence:
    """`sources` for a family that edits one source image per sample: a one-element list / tuple stands for its
    image; several raise a ValueError naming the family. Returns `sources` itself when no sample is a list."""
    if not any(isinstance(source, (list, tuple)) for source in sources):
        return sources
    out = []
    for index, source in enumerate(sources):
        if isinstance(source, (list, tuple)):
            if len(source) != 1:
                raise ValueError(f"{family} takes one source image per sample, but sample {index} has "
                                 f"{len(source)}; use qwen-image-edit-plus or flux2 for edits of several source images")
            source = source[0]
        out.append(source)
    return out


class EditPolicy(abc.ABC):
    multi_source: bool = False          # encode takes a list of source images per sample (qwen-image-edit-plus, flux2)
    """An instruction-guided image editor built on a flow-matching transformer."""

    family: str
    transformer: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    attention_backend: str             # the attention implementation chosen for this run (see policy/attention.py)

    # ---- model -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, sources: Sequence, instructions: Sequence[str]) -> Condition:
        """Encode N (source image, instruction) pairs once: text embeddings, source latents, position ids.
        sources: PIL images, uint8 tensors [3, H, W] or uint8 NumPy arrays [H, W, 3] (vlm/images.py)."""

    @abc.abstractmethod
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
                 ) -> torch.Tensor:
        """v = eps - x0 predicted at x_t [B, L, C], t [B] in [0, 1]; cond has B rows. Returns [B, L, C]."""

    @abc.abstractmethod
    def decode(self, x0: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Packed clean latents [B, L, C] -> uint8 images [B, 3, H, W]."""

    @abc.abstractmethod
    def sigmas(self, num_steps: int, cond: Condition) -> torch.Tensor:
        """The family's (shifted) sampling schedule: float32 [num_steps + 1] from ~1 down to 0."""

    def noise(self, cond: Condition, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Initial noise [B, L, C], one generator per sample (so a sample does not depend on its batch)."""
        length, channels = cond.latent_shape
        return torch.stack([torch.randn(length, channels, generator=g, device=g.device, dtype=torch.float32)
                            for g in generators]).to(self.device)

    # ---- LoRA ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_lora(self, rank: int = 32, alpha: float = 64.0, target_modules: Sequence[str] | None = None,
                 adapter: str = "default", init: str = "default") -> None:
        """Attach a trainable LoRA adapter (peft) to the transformer; init "gaussian" draws A from peft's Gaussian."""

    @abc.abstractmethod
    def lora_parameters(self, adapter: str = "default") -> list[torch.nn.Parameter]:
        """The trainable parameters of one adapter."""

    @abc.abstractmethod
    def save_lora(self, directory: str, adapter: str = "default") -> str:
        """Write the adapter as safetensors that the family's diffusers pipeline `load_lora_weights` loads."""

    @contextlib.contextmanager
    @abc.abstractmethod
    def use_adapter(self, adapter: str | None) -> Iterator[None]:
        """Within the block velocities come from `adapter`; None disables every adapter (the reference model)."""

    # ---- run options (bf16 autocast, gradient checkpointing, compile) ------------------------------------------
    autocast: bool = False             # run the transformer under bf16 autocast while weights stay in `dtype`
    gradient_checkpointing: bool = False
    compiled: bool = False

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the transformer computes in."""
        return torch.bfloat16 if self.autocast else self.dtype

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        self.gradient_checkpointing = True

    def compile_transformer(self, **compile_kwargs) -> None:
        """torch.compile each transformer block in place (diffusers' compile_repeated_blocks); call after
        enable_gradient_checkpointing, as torchtitan orders them."""
        self.transformer.compile_repeated_blocks(**compile_kwargs)
        self.compiled = True

    def apply_run_options(self, *, gradient_checkpointing: bool = False, compile: bool = False) -> "EditPolicy":
        """Checkpointing, then compile (that order); returns the policy."""
        if gradient_checkpointing:
            self.enable_gradient_checkpointing()
        if compile:
            self.compile_transformer()
        return self

    def autocast_context(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around transformer calls when the policy was loaded with autocast=True."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def add_old_adapter(self, source: str = "default", target: str = "old") -> None:
        """DiffusionNFT: add `target`, a frozen copy of adapter `source` (same config and weights)."""
        copy_adapter(self.transformer, source, target)

    def update_old_adapter(self, decay: float, source: str = "default", target: str = "old") -> None:
        """DiffusionNFT: θ_target ← decay·θ_target + (1 − decay)·θ_source (decay from lora.nft_decay(step))."""
        soft_update(self.transformer, decay, source, target)

    def metadata(self) -> dict[str, Any]:
        """What a run records about this policy (family, dtype, attention backend, parameter counts)."""
        return {
            "family": self.family,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "attention": self.attention_backend,
            "transformer_parameters": sum(p.numel() for p in self.transformer.parameters()),
            "autocast": "bfloat16" if self.autocast else None,
            "gradient_checkpointing": self.gradient_checkpointing,
            "compiled": self.compiled,
        }
