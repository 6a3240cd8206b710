"""Qwen2.5-VL shared by policies (text encoder) and judges: presets with random weights, or a local folder.

    vlm = load(preset="tiny", templates=(MY_PROMPT,))       # tokenizer learnt on the given prompt templates
    vlm = load(path="/models/Qwen2.5-VL-32B-Instruct", device="cuda", dtype=torch.bfloat16)
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..handle import VLM
from .config import TINY_MODEL, TINY_PROCESSOR, ModelConfig, ProcessorConfig
from .folder import REQUIRED_FILES, load_folder, missing_files
from .processor import ImageTextProcessor, build_processor
from .tokenizer import SPECIAL_TOKENS, build_tokenizer

# "qwen2.5-vl-7b": the published 7B sizes (ModelConfig's defaults) with random weights, for benchmarks on a GPU
PRESETS: dict[str, tuple[ModelConfig, ProcessorConfig]] = {"tiny": (TINY_MODEL, TINY_PROCESSOR),
                                                           "qwen2.5-vl-7b": (ModelConfig(), ProcessorConfig())}


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, *, templates: Sequence[str] = (), seed: int = 0) -> VLM:
    """A VLM from a local folder (`path`) or a preset (random weights drawn from `seed`, made on the CPU in float32
    so every machine gets the same ones; the tokenizer is learnt from `templates`)."""
    if (path is None) == (preset is None):
        raise ValueError("pass exactly one of path= (a local Qwen2.5-VL folder) or preset= (e.g. 'tiny')")
    if path is not None:
        model, processor = load_folder(path, dtype)
        origin = f"path:{os.fspath(path)}"
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown Qwen2.5-VL preset {preset!r}; choose one of {', '.join(PRESETS)}")
        model_config, processor_config = PRESETS[preset]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokenizer = build_tokenizer(templates)
            model, processor = model_config.build(tokenizer), processor_config.build(tokenizer)
        origin = f"preset:{preset}"
    model = model.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    return VLM(model=model, processor=processor, origin=origin)


__all__ = ["ImageTextProcessor", "ModelConfig", "PRESETS", "ProcessorConfig", "REQUIRED_FILES", "SPECIAL_TOKENS",
           "TINY_MODEL", "TINY_PROCESSOR", "VLM", "build_processor", "build_tokenizer", "load", "load_folder",
           "missing_files"]
