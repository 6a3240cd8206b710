"""Choosing a VLM family: by name, or from a local folder's config.json `model_type`.

    vlm = load(path="/models/Qwen3-VL-8B-Instruct")              # family read from config.json
    vlm = load(preset="tiny", family="qwen3-vl", templates=(MY_PROMPT,))
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence

import torch

from ..errors import MissingPathError
from .handle import VLM

FAMILIES: dict[str, str] = {"qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}          # name -> module
MODEL_TYPES: dict[str, str] = {"qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl"}       # config.json -> name
DEFAULT_FAMILY = "qwen2.5-vl"


def family_of(path: str | os.PathLike) -> str:
    """The family of a local folder, from its config.json `model_type` (e.g. "qwen3_vl" -> "qwen3-vl")."""
    config = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config):
        raise MissingPathError(f"cannot tell the VLM family of {os.fspath(path)!r}: missing: config.json "
                               f"(pass family= one of {', '.join(FAMILIES)}, or a transformers-format folder)")
    with open(config) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{os.fspath(path)!r} holds model_type {model_type!r}; known VLM model types: "
                         f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def family_module(family: str):
    """The module (with `load`, `PRESETS`, `build_tokenizer`, ...) of a family name."""
    if family not in FAMILIES:
        raise ValueError(f"unknown VLM family {family!r}; choose one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__package__}.{FAMILIES[family]}")


def load(path: str | os.PathLike | None = None, preset: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, *, family: str | None = None, templates: Sequence[str] = (),
         seed: int = 0) -> VLM:
    """A VLM of `family` (default: read from the folder at `path`, or DEFAULT_FAMILY for a preset); the other
    arguments are those of the family's own `load`."""
    if family is None:   # read from the folder; without a config.json the default family's loader names what is missing
        config_file = None if path is None else os.path.join(os.fspath(path), "config.json")
        detectable = preset is None and config_file is not None and os.path.isfile(config_file)
        family = family_of(path) if detectable else DEFAULT_FAMILY
    return family_module(family).load(path=path, preset=preset, device=device, dtype=dtype, templates=templates,
                                      seed=seed)
