"""FLUX.2's parts (dev: Mistral3 text encoder, guidance-distilled; klein: Qwen3 text encoder, true CFG unless
step-distilled), and loading them from a local diffusers-format folder.

A folder holds model_index.json and transformer/, vae/, text_encoder/, tokenizer/, scheduler/ (the layout
`Flux2Pipeline` / `Flux2KleinPipeline.save_pretrained` writes). The variant is read from the folder: model_index's
`_class_name` (Flux2Pipeline: dev; Flux2KleinPipeline: klein, with its `is_distilled`). Nothing is downloaded; a
missing or incomplete folder is an error that names every missing part.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import torch

from ...errors import MissingPathError

VARIANTS = {"Flux2Pipeline": "dev", "Flux2KleinPipeline": "klein"}
TEXT_LAYERS = {"dev": (10, 20, 30), "klein": (9, 18, 27)}    # the pipelines' text_encoder_out_layers
WEIGHTS = ("*.safetensors", "*.bin")
REQUIRED_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {   # part -> (all of, one of)
    "transformer": (("config.json",), WEIGHTS),
    "vae": (("config.json",), WEIGHTS),
    "text_encoder": (("config.json",), WEIGHTS),
    "tokenizer": ((), ("tokenizer.json", "tokenizer_config.json", "tekken.json")),
    "scheduler": (("scheduler_config.json",), ()),
}


@dataclasses.dataclass
class Components:
    transformer: torch.nn.Module            # Flux2Transformer2DModel
    vae: torch.nn.Module                    # AutoencoderKLFlux2
    text_encoder: torch.nn.Module           # Mistral3ForConditionalGeneration (dev) | Qwen3ForCausalLM (klein)
    tokenizer: Any                          # its processor / tokenizer, with the chat template
    scheduler: Any                          # FlowMatchEulerDiscreteScheduler (dynamic shift)
    variant: str = "klein"                  # "dev" | "klein"
    is_distilled: bool = False              # klein: step-distilled, no CFG (the pipeline's config)
    text_layers: tuple[int, ...] = TEXT_LAYERS["klein"]     # hidden states stacked into the prompt embedding
    max_sequence_length: int = 512          # prompt tokens (padded to it, as the pipelines)

    def __post_init__(self):
        if self.variant not in TEXT_LAYERS:
            raise ValueError(f"unknown FLUX.2 variant {self.variant!r}; choose dev or klein")

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def pipeline_class(self) -> type:
        from diffusers import Flux2KleinPipeline, Flux2Pipeline
        return Flux2Pipeline if self.variant == "dev" else Flux2KleinPipeline

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    def to(self, device: torch.device, dtype: torch.dtype) -> "Components":
        from diffusers.utils import logging as diffusers_logging
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()     # its FLUX.2 models warn on every cast about an empty fp32 list
        try:
            for module in self.modules().values():
                module.to(device=device)
                if any(p.dtype != dtype for p in module.parameters()):
                    module.to(dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(level)
        return self

    def pipeline(self):
        """diffusers' Flux2Pipeline / Flux2KleinPipeline over these very modules (shared, not copied)."""
        parts = dict(scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                     tokenizer=self.tokenizer, transformer=self.transformer)
        if self.variant == "klein":
            parts["is_distilled"] = self.is_distilled
        return self.pipeline_class(**parts)


def missing_parts(folder: str | os.PathLike) -> list[str]:
    """What a complete FLUX.2 folder needs and this one lacks (an empty list when complete)."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        return [f"the folder itself ({root} does not exist or is not a directory)"]
    missing = [] if os.path.isfile(os.path.join(root, "model_index.json")) else ["model_index.json"]
    for part, (all_of, one_of) in REQUIRED_PARTS.items():
        missing += [f"{part}/{name}" for name in all_of if not os.path.isfile(os.path.join(root, part, name))]
        if one_of and not any(glob.glob(os.path.join(root, part, pattern)) for pattern in one_of):
            missing.append(f"{part}/ (one of {', '.join(one_of)})")
    return missing


def read_variant(folder: str) -> tuple[str, bool]:
    """(variant, is_distilled) from model_index.json."""
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    name = index.get("_class_name")
    if name not in VARIANTS:
        raise MissingPathError(f"{folder}/model_index.json names {name!r}, not a FLUX.2 pipeline "
                               f"({' or '.join(VARIANTS)}); give a FLUX.2 dev or klein folder")
    return VARIANTS[name], bool(index.get("is_distilled", False))


def from_folder(folder: str, dtype: torch.dtype = torch.float32) -> Components:
    """Every part from the folder, on the CPU in `dtype`."""
    missing = missing_parts(folder)
    if missing:
        raise MissingPathError(f"{folder} is not a complete FLUX.2 diffusers folder; missing: " + "; ".join(missing))
    variant, is_distilled = read_variant(folder)
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    if variant == "dev":
        from transformers import AutoProcessor
        from transformers import Mistral3ForConditionalGeneration as TextEncoder
        tokenizer = AutoProcessor.from_pretrained(os.path.join(folder, "tokenizer"))
    else:
        from transformers import AutoTokenizer
        from transformers import Qwen3ForCausalLM as TextEncoder
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    return Components(
        transformer=Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype),
        vae=AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", torch_dtype=dtype),
        text_encoder=TextEncoder.from_pretrained(os.path.join(folder, "text_encoder"), dtype=dtype),
        tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler"),
        variant=variant, is_distilled=is_distilled, text_layers=TEXT_LAYERS[variant])
