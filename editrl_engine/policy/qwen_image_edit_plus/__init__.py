"""Qwen-Image-Edit-Plus (Qwen-Image-Edit-2509 / 2511) editing policy: `load` builds it from a preset or a local
diffusers folder. Each sample edits with one or several reference images (encode's sources[i] is an image or a
list of images).

    policy = load(preset="tiny")                                         # random weights, tokenizer made in code
    policy = load(path="/models/Qwen-Image-Edit-2509", device="cuda", dtype=torch.bfloat16)
"""
from __future__ import annotations

import dataclasses
import os

import torch

from .components import Components, from_folder, missing_parts
from .config import PRESETS, QwenImageEditPlusConfig
from .policy import QwenImageEditPlusPolicy


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, attention: str = "auto", *, autocast: bool = False,
         gradient_checkpointing: bool = False, compile: bool = False, seed: int = 0,
         target_area: int | None = None, reference_area: int | None = None,
         condition_area: int | None = None) -> QwenImageEditPlusPolicy:
    """A QwenImageEditPlusPolicy from a local diffusers folder (`path`) or a preset (random weights from `seed`).

    target_area: pixels of the edited images (default: the config's, 1024² for the published models, as their
    pipeline); reference_area: pixels of each reference's VAE image (default: target_area, as the pipeline);
    condition_area: pixels of each reference's Qwen2.5-VL image (default 384², as the pipeline).
    autocast, gradient_checkpointing, compile: as qwen_image_edit.load."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local diffusers-format folder) or preset= (e.g. 'tiny')")
    if path is not None:
        config, origin = QwenImageEditPlusConfig(), f"path:{path}"
        components = from_folder(os.fspath(path), dtype)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown qwen-image-edit-plus preset {preset!r}; choose one of {', '.join(PRESETS)}")
        config, origin = dataclasses.replace(PRESETS[preset], seed=seed), f"preset:{preset}"
        components = config.build()
    target_area = target_area or config.target_area
    policy = QwenImageEditPlusPolicy(
        components, device=torch.device(device), dtype=dtype, attention_backend=attention, autocast=autocast,
        target_area=target_area, reference_area=reference_area or config.reference_area,
        condition_area=condition_area or config.condition_area, origin=origin)
    return policy.apply_run_options(gradient_checkpointing=gradient_checkpointing, compile=compile)


__all__ = ["Components", "PRESETS", "QwenImageEditPlusConfig", "QwenImageEditPlusPolicy", "from_folder", "load",
           "missing_parts"]
