"""Qwen3-VL shared by judges (e.g. EditScore's Qwen3-VL-4B/8B adapters): presets with random weights, or a local
folder. Needs a transformers with Qwen3-VL (`support.MIN_TRANSFORMERS`); without one, load raises ImportError.

    vlm = load(preset="tiny", templates=(MY_PROMPT,))       # tokenizer learnt on the given prompt templates
    vlm = load(path="/models/Qwen3-VL-8B-Instruct", device="cuda", dtype=torch.bfloat16)

The tokenizer is Qwen2.5-VL's: Qwen3-VL uses the same Qwen2 byte-level BPE and the same vision special tokens.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..handle import VLM
from ..qwen2_5_vl.tokenizer import SPECIAL_TOKENS, build_tokenizer
from .config import TINY_MODEL, TINY_PROCESSOR, ModelConfig, ProcessorConfig
from .folder import MODEL_TYPE, REQUIRED_FILES, load_folder, missing_files
from .support import MIN_TRANSFORMERS, require_qwen3_vl, transformers_has_qwen3_vl

PRESETS: dict[str, tuple[ModelConfig, ProcessorConfig]] = {"tiny": (TINY_MODEL, TINY_PROCESSOR)}


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, *, templates: Sequence[str] = (), seed: int = 0) -> VLM:
    """A VLM from a local folder (`path`) or a preset (random weights drawn from `seed`, made on the CPU in float32
    so every machine gets the same ones; the tokenizer is learnt from `templates`)."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local Qwen3-VL folder) or preset= (e.g. 'tiny')")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown Qwen3-VL preset {preset!r}; choose one of {', '.join(PRESETS)}")
    require_qwen3_vl()
    if path is not None:
        model, processor = load_folder(path, dtype)
        origin = f"path:{os.fspath(path)}"
    else:
        model_config, processor_config = PRESETS[preset]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokenizer = build_tokenizer(templates)
            model, processor = model_config.build(tokenizer), processor_config.build(tokenizer)
        origin = f"preset:{preset}"
    model = model.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    return VLM(model=model, processor=processor, origin=origin)


__all__ = ["MIN_TRANSFORMERS", "MODEL_TYPE", "ModelConfig", "PRESETS", "ProcessorConfig", "REQUIRED_FILES",
           "SPECIAL_TOKENS", "TINY_MODEL", "TINY_PROCESSOR", "VLM", "build_tokenizer", "load", "load_folder",
           "missing_files", "require_qwen3_vl", "transformers_has_qwen3_vl"]
