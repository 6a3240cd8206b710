"""Editing policies: one folder per model family, one entry point.

    policy = load_policy("flux-kontext", preset="tiny")                  # random weights, built from a config
    policy = load_policy("qwen-image-edit", path="/models/Qwen-Image-Edit", dtype=torch.bfloat16)

A family module exposes `load(path, preset, device, dtype, attention) -> EditPolicy`; weights load from a local
diffusers-format folder only (nothing is downloaded).
"""
from __future__ import annotations

import importlib

import torch

from .base import Condition, EditPolicy

FAMILIES = {
    "flux-kontext": "editrl_engine.policy.flux_kontext",
    "qwen-image-edit": "editrl_engine.policy.qwen_image_edit",
    "qwen-image-edit-plus": "editrl_engine.policy.qwen_image_edit_plus",           # 2509 / 2511, several references
    "flux2": "editrl_engine.policy.flux2",                                         # FLUX.2 dev and klein
}


def load_policy(family: str, path: str | None = None, preset: str | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, attention: str = "auto", autocast: bool = False) -> EditPolicy:
    """Build a family's policy from a local diffusers folder (`path`) or a named preset (`preset`, e.g. "tiny").
    autocast: the transformer runs under bf16 autocast (weights stay in `dtype`); set here, so the attention
    backend is chosen for the dtype it will compute in."""
    if family not in FAMILIES:
        raise ValueError(f"unknown policy family {family!r}; choose one of {', '.join(FAMILIES)}")
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local diffusers-format folder) or preset= (e.g. 'tiny')")
    module = importlib.import_module(FAMILIES[family])
    return module.load(path=path, preset=preset, device=torch.device(device), dtype=dtype, attention=attention,
                       autocast=autocast)


__all__ = ["Condition", "EditPolicy", "FAMILIES", "load_policy"]
