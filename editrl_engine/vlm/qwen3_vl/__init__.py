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

from ..handle import VLM, load_family
from ..qwen2_5_vl.tokenizer import SPECIAL_TOKENS, build_tokenizer
from .config import TINY_MODEL, TINY_PROCESSOR, ModelConfig, ProcessorConfig
from .folder import MODEL_TYPE, REQUIRED_FILES, load_folder, missing_files
from .support import MIN_TRANSFORMERS, require_qwen3_vl, transformers_has_qwen3_vl

PRESETS: dict[str, tuple[ModelConfig, ProcessorConfig]] = {"tiny": (TINY_MODEL, TINY_PROCESSOR)}


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, *, templates: Sequence[str] = (), seed: int = 0) -> VLM:
    """A Qwen3-VL from a local folder (`path`) or a preset (handle.load_family says how); needs a transformers
    with Qwen3-VL."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown Qwen3-VL preset {preset!r}; choose one of {', '.join(PRESETS)}")
    require_qwen3_vl()
    return load_family("Qwen3-VL", path, preset, PRESETS, load_folder, build_tokenizer, device, dtype, templates,
                       seed)


__all__ = ["MIN_TRANSFORMERS", "MODEL_TYPE", "ModelConfig", "PRESETS", "ProcessorConfig", "REQUIRED_FILES",
           "SPECIAL_TOKENS", "TINY_MODEL", "TINY_PROCESSOR", "VLM", "build_tokenizer", "load", "load_folder",
           "missing_files", "require_qwen3_vl", "transformers_has_qwen3_vl"]
