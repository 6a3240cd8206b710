"""The loaded-VLM handle every family returns (the model, its processor, where it came from), and the loading
steps every family shares: a local folder, or a preset built with random weights and a tokenizer learnt in code."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


@dataclasses.dataclass
class VLM:
    model: torch.nn.Module                  # e.g. Qwen2_5_VLForConditionalGeneration, eval mode, no grad
    processor: Any                          # image + text processor (its .tokenizer is the Qwen2 tokenizer)
    origin: str                             # "preset:tiny" or "path:/models/..."

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def load_family(name: str, path: str | os.PathLike | None, preset: str | None, presets: Mapping[str, tuple],
                load_folder: Callable, build_tokenizer: Callable, device: str | torch.device, dtype: torch.dtype,
                templates: Sequence[str], seed: int) -> VLM:
    """A VLM of family `name` from a local folder (`path`) or a preset (random weights drawn from `seed`, made on
    the CPU in float32 so every machine gets the same ones; the tokenizer is learnt from `templates`)."""
    if (path is None) == (preset is None):
        raise ValueError(f"pass exactly one of path= (a local {name} folder) or preset= (e.g. 'tiny')")
    if path is not None:
        model, processor = load_folder(path, dtype)
        origin = f"path:{os.fspath(path)}"
    else:
        if preset not in presets:
            raise ValueError(f"unknown {name} preset {preset!r}; choose one of {', '.join(presets)}")
        model_config, processor_config = presets[preset]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokenizer = build_tokenizer(templates)
            model, processor = model_config.build(tokenizer), processor_config.build(tokenizer)
        origin = f"preset:{preset}"
    model = model.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    return VLM(model=model, processor=processor, origin=origin)
