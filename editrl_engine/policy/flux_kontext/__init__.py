"""FLUX.1-Kontext editing policy: `load` builds it from a preset or a local diffusers folder.

    policy = load(preset="tiny")                                                  # random weights, for tests
    policy = load(path="/models/FLUX.1-Kontext-dev", device=cuda, dtype=torch.bfloat16,
                  gradient_checkpointing=True, compile=True)
"""
from __future__ import annotations

import os

import torch

from .config import PRESETS, FluxKontextConfig
from .config import preset as preset_config
from .folder import load_components, missing_parts
from .model import FluxKontextComponents
from .policy import FluxKontextPolicy


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, attention: str = "auto", *, autocast: bool = False,
         gradient_checkpointing: bool = False, compile: bool = False, seed: int = 0) -> FluxKontextPolicy:
    """A FluxKontextPolicy from a local diffusers folder (`path`) or a preset (random weights drawn from `seed`).

    autocast: run the transformer under bf16 autocast (weights stay in `dtype`). gradient_checkpointing and
    compile are applied in that order (torchtitan's), compile through torch.compile of each transformer block."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local diffusers-format folder) or preset=")
    device = torch.device(device)
    if path is not None:
        components, config, origin = load_components(path, dtype), FluxKontextConfig(), f"path:{path}"
    else:
        config, origin = preset_config(preset), f"preset:{preset}"
        forked = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked, device_type=device.type if forked else "cuda"):
            torch.manual_seed(seed)
            components = config.build(device, dtype)       # built in place: no fp32 CPU copy of a 12 B model
    policy = FluxKontextPolicy(components, device=device, dtype=dtype, attention_backend=attention,
                               guidance=config.guidance, autocast=autocast, origin=origin)
    return policy.apply_run_options(gradient_checkpointing=gradient_checkpointing, compile=compile)


__all__ = ["PRESETS", "FluxKontextComponents", "FluxKontextConfig", "FluxKontextPolicy", "load", "load_components",
           "missing_parts"]
