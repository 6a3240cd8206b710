"""FLUX.2 editing policy (dev: Mistral3 text encoder, distilled guidance; klein: Qwen3 text encoder, CFG), with
one or several reference images per sample. `load` builds it from a preset or a local diffusers folder (the
variant is read from the folder's model_index.json).

    policy = load(preset="tiny")                                      # klein, random weights, tokenizer made in code
    policy = load(path="/models/FLUX.2-klein-4B", device="cuda", dtype=torch.bfloat16)

Needs a diffusers with Flux2Pipeline and Flux2KleinPipeline (0.38, the declared floor, has them).
"""
from __future__ import annotations

import dataclasses
import os

import torch

from ...errors import UserError


def require_flux2() -> None:
    """A clear error where the installed diffusers has no FLUX.2."""
    import diffusers
    if not hasattr(diffusers, "Flux2KleinPipeline"):
        raise UserError(f"the flux2 family needs a diffusers with FLUX.2 (Flux2Pipeline, Flux2KleinPipeline); this "
                        f"environment has {diffusers.__version__}: pip install -U diffusers")


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, attention: str = "auto", *, autocast: bool = False,
         gradient_checkpointing: bool = False, compile: bool = False, seed: int = 0,
         guidance: float | None = None):
    """A Flux2Policy from a local diffusers folder (`path`) or a preset (random weights from `seed`).
    guidance: dev's distilled guidance or klein's CFG scale (default 4.0, the pipelines'); autocast,
    gradient_checkpointing, compile: as the other families."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local diffusers-format folder) or preset= (e.g. 'tiny')")
    require_flux2()
    from .components import from_folder
    from .config import PRESETS, Flux2Config
    from .policy import Flux2Policy
    if path is not None:
        config, origin = Flux2Config(), f"path:{path}"
        components = from_folder(os.fspath(path), dtype)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown flux2 preset {preset!r}; choose one of {', '.join(PRESETS)}")
        config, origin = dataclasses.replace(PRESETS[preset], seed=seed), f"preset:{preset}"
        components = config.build()
    policy = Flux2Policy(components, device=torch.device(device), dtype=dtype, attention_backend=attention,
                         guidance=config.guidance if guidance is None else guidance, autocast=autocast,
                         origin=origin)
    return policy.apply_run_options(gradient_checkpointing=gradient_checkpointing, compile=compile)


__all__ = ["load", "require_flux2"]
