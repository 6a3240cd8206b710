"""Loading FLUX.1-Kontext from a local diffusers-format folder, after checking that every part is there.

    folder/model_index.json
    folder/transformer/  vae/  text_encoder/  text_encoder_2/   (config.json + *.safetensors or *.bin)
    folder/tokenizer/  tokenizer_2/                              (tokenizer files)
    folder/scheduler/scheduler_config.json

Nothing is downloaded: a missing or incomplete folder raises FileNotFoundError naming every missing part.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ...errors import MissingPathError
from .model import FluxKontextComponents

MODEL_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")
TOKENIZER_PARTS = ("tokenizer", "tokenizer_2")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def missing_parts(folder: str | os.PathLike) -> list[str]:
    """What a complete FLUX.1-Kontext folder needs and this one lacks ('' list when complete)."""
    root = Path(folder)
    if not root.is_dir():
        return [f"the folder itself ({root} does not exist or is not a directory)"]
    missing = [] if (root / "model_index.json").is_file() else ["model_index.json"]
    for part in MODEL_PARTS:
        if not (root / part / "config.json").is_file():
            missing.append(f"{part}/config.json")
        if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in (root / part).glob("*")):
            missing.append(f"{part}/ weights (*.safetensors or *.bin)")
    for part in TOKENIZER_PARTS:
        if not any((root / part / name).is_file() for name in TOKENIZER_FILES):
            missing.append(f"{part}/ (one of {', '.join(TOKENIZER_FILES)})")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def load_components(folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> FluxKontextComponents:
    """Every component from the folder, on the CPU in `dtype` (text encoders and VAE too, as the pipeline).
    Prompts get min(512, the T5 tokenizer's model_max_length) tokens (512 for FLUX.1-Kontext-dev)."""
    missing = missing_parts(folder)
    if missing:
        raise MissingPathError(f"{folder} is not a complete FLUX.1-Kontext diffusers folder; missing: "
                               + "; ".join(missing))
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer
    root = Path(folder)
    tokenizer_2 = T5Tokenizer.from_pretrained(root / "tokenizer_2")
    return FluxKontextComponents(
        transformer=FluxTransformer2DModel.from_pretrained(root, subfolder="transformer", torch_dtype=dtype),
        vae=AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        text_encoder_2=T5EncoderModel.from_pretrained(root / "text_encoder_2", dtype=dtype),
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler"),
        max_sequence_length=min(512, tokenizer_2.model_max_length),
    )
