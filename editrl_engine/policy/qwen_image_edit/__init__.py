"""Qwen-Image-Edit editing policy: `load` builds it from a preset or a local diffusers folder.

    policy = load(preset="tiny")                                         # random weights, tokenizer made in code
    policy = load(path="/models/Qwen-Image-Edit", device="cuda", dtype=torch.bfloat16, gradient_checkpointing=True)
"""
from __future__ import annotations

import dataclasses
import os

import torch

from .components import Components, from_folder, missing_parts
from .config import PRESETS, QwenImageEditConfig
from .policy import QwenImageEditPolicy


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, attention: str = "auto", *, autocast: bool = False,
         gradient_checkpointing: bool = False, compile: bool = False, seed: int = 0,
         target_area: int | None = None) -> QwenImageEditPolicy:
    """A QwenImageEditPolicy from a local diffusers folder (`path`) or a preset (random weights drawn from `seed`).

    target_area: pixels of the edited images (default: the config's, 1024² for the published model, as its
    pipeline; RL runs often use 512²); the attention backends are probed at that size.
    autocast: run the transformer under bf16 autocast (weights stay in `dtype`). gradient_checkpointing and
    compile are applied in that order (torchtitan's), compile through torch.compile of each transformer block."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local diffusers-format folder) or preset= (e.g. 'tiny')")
    if path is not None:
        config, origin = QwenImageEditConfig(), f"path:{path}"
        components = from_folder(os.fspath(path), dtype)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown qwen-image-edit preset {preset!r}; choose one of {', '.join(PRESETS)}")
        config, origin = dataclasses.replace(PRESETS[preset], seed=seed), f"preset:{preset}"
        components = config.build()
    policy = QwenImageEditPolicy(components, device=torch.device(device), dtype=dtype, attention_backend=attention,
                                 autocast=autocast, target_area=target_area or config.target_area,
                                 origin=origin)
    return policy.apply_run_options(gradient_checkpointing=gradient_checkpointing, compile=compile)


__all__ = ["Components", "PRESETS", "QwenImageEditConfig", "QwenImageEditPolicy", "from_folder", "load",
           "missing_parts"]
