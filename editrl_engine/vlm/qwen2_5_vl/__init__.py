"""Qwen2.5-VL shared by policies (text encoder) and judges: presets with random weights, or a local folder.

    vlm = load(preset="tiny", templates=(MY_PROMPT,))       # tokenizer learnt on the given prompt templates
    vlm = load(path="/models/Qwen2.5-VL-32B-Instruct", device="cuda", dtype=torch.bfloat16)
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import torch

from ..handle import VLM, load_family
from .config import TINY_MODEL, TINY_PROCESSOR, ModelConfig, ProcessorConfig
from .folder import REQUIRED_FILES, load_folder, missing_files
from .processor import ImageTextProcessor, build_processor
from .tokenizer import SPECIAL_TOKENS, build_tokenizer

# "qwen2.5-vl-7b": the published 7B sizes (ModelConfig's defaults) with random weights, for benchmarks on a GPU
# "demo": the verifier-training demo's size (width 96, 4 layers): the 2-layer width-32 "tiny" cannot keep a ~70-token
# verdict JSON in order however long it trains (measured: SFT loss 0.15 a token, yet every greedy trace breaks); its
# images are resized to 112 x 112 (16 image tokens each, the tiny processor's 4 cover a 32 x 32 image in 16 x 16 blocks)
DEMO_MODEL = dataclasses.replace(TINY_MODEL, hidden_size=96, num_layers=4, num_heads=4, num_kv_heads=2,
                                 intermediate_size=192, mrope_section=(4, 4, 4))
DEMO_PROCESSOR = ProcessorConfig(min_pixels=112 * 112, max_pixels=112 * 112)
PRESETS: dict[str, tuple[ModelConfig, ProcessorConfig]] = {"tiny": (TINY_MODEL, TINY_PROCESSOR),
                                                           "demo": (DEMO_MODEL, DEMO_PROCESSOR),
                                                           "qwen2.5-vl-7b": (ModelConfig(), ProcessorConfig())}


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, *, templates: Sequence[str] = (), seed: int = 0) -> VLM:
    """A Qwen2.5-VL from a local folder (`path`) or a preset (handle.load_family says how)."""
    return load_family("Qwen2.5-VL", path, preset, PRESETS, load_folder, build_tokenizer, device, dtype, templates,
                       seed)


__all__ = ["ImageTextProcessor", "ModelConfig", "PRESETS", "ProcessorConfig", "REQUIRED_FILES", "SPECIAL_TOKENS",
           "TINY_MODEL", "TINY_PROCESSOR", "VLM", "build_processor", "build_tokenizer", "load", "load_folder",
           "missing_files"]
