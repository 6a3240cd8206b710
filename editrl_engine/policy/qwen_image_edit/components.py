"""The six parts of Qwen-Image-Edit, and loading them from a local diffusers-format folder (presets build
them in config.py).

A folder holds model_index.json and transformer/, vae/, text_encoder/, tokenizer/, processor/, scheduler/ (the
layout `QwenImageEditPipeline.save_pretrained` writes). Nothing is downloaded; a missing or incomplete folder
is an error that names every missing part.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any

import torch

from ...errors import MissingPathError

WEIGHTS = ("*.safetensors", "*.bin")
# part -> (files that must all exist, file patterns of which one must match)
REQUIRED_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transformer": (("config.json",), WEIGHTS),
    "vae": (("config.json",), WEIGHTS),
    "text_encoder": (("config.json",), WEIGHTS),
    "tokenizer": (("tokenizer_config.json",), ("tokenizer.json", "vocab.json")),
    "processor": ((), ("preprocessor_config.json", "processor_config.json")),
    "scheduler": (("scheduler_config.json",), ()),
}


@dataclasses.dataclass
class Components:
    transformer: torch.nn.Module            # QwenImageTransformer2DModel
    vae: torch.nn.Module                    # AutoencoderKLQwenImage
    text_encoder: torch.nn.Module           # Qwen2_5_VLForConditionalGeneration
    tokenizer: Any                          # Qwen2Tokenizer
    processor: Any                          # ImageTextProcessor (Qwen2VLProcessor without video)
    scheduler: Any                          # FlowMatchEulerDiscreteScheduler

    def to(self, device: torch.device, dtype: torch.dtype) -> "Components":
        for model in (self.transformer, self.vae, self.text_encoder):
            model.to(device=device)
            if model.dtype != dtype:
                model.to(dtype=dtype)
            model.eval().requires_grad_(False)                  # only LoRA adapters train
        return self

    def pipeline(self):
        """A diffusers QwenImageEditPipeline over these very modules (sharing weights and adapters)."""
        from diffusers import QwenImageEditPipeline
        return QwenImageEditPipeline(scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                     tokenizer=self.tokenizer, processor=self.processor, transformer=self.transformer)


def missing_parts(path: str) -> list[str]:
    """What a Qwen-Image-Edit diffusers folder lacks, e.g. ['vae/config.json', 'text_encoder/ weights']."""
    if not os.path.isdir(path):
        return [f"the folder itself ({path} does not exist)"]
    missing = [] if os.path.isfile(os.path.join(path, "model_index.json")) else ["model_index.json"]
    for part, (files, any_of) in REQUIRED_PARTS.items():
        folder = os.path.join(path, part)
        if not os.path.isdir(folder):
            missing.append(f"{part}/")
            continue
        missing += [f"{part}/{f}" for f in files if not os.path.isfile(os.path.join(folder, f))]
        if any_of and not any(glob.glob(os.path.join(folder, pattern)) for pattern in any_of):
            missing.append(f"{part}/ ({' or '.join(any_of)})")
    return missing


def from_folder(path: str, dtype: torch.dtype) -> Components:
    """Load every part from a local diffusers folder (no download)."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from editrl_engine.vlm.qwen2_5_vl.processor import ImageTextProcessor
    missing = missing_parts(path)
    if missing:
        raise MissingPathError(f"Qwen-Image-Edit folder {path!r} is missing or incomplete; missing: "
                               f"{', '.join(missing)}. Expected a diffusers-format folder with model_index.json and "
                               f"{', '.join(p + '/' for p in REQUIRED_PARTS)}.")
    local = dict(local_files_only=True)
    return Components(
        transformer=QwenImageTransformer2DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype,
                                                                **local),
        vae=AutoencoderKLQwenImage.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **local),
        text_encoder=Qwen2_5_VLForConditionalGeneration.from_pretrained(os.path.join(path, "text_encoder"),
                                                                        dtype=dtype, **local),
        tokenizer=AutoTokenizer.from_pretrained(os.path.join(path, "tokenizer"), **local),
        processor=ImageTextProcessor.load(os.path.join(path, "processor")),
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", **local),
    )
