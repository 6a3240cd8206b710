"""The loaded-VLM handle every family returns: the model, its processor, and where it came from."""
from __future__ import annotations

import dataclasses
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
