"""Loading Qwen2.5-VL from a local transformers-format folder (what `save_pretrained` of the model and of its
processor write). Nothing is downloaded; a missing or incomplete folder is an error naming every missing file.
"""
from __future__ import annotations

import glob
import os

import torch

from ...errors import MissingPathError

# what a folder must hold: (a description, file patterns of which one must match)
REQUIRED_FILES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("config.json", ("config.json",)),
    ("weights (*.safetensors or *.bin)", ("*.safetensors", "*.bin")),
    ("tokenizer_config.json", ("tokenizer_config.json",)),
    ("tokenizer.json or vocab.json", ("tokenizer.json", "vocab.json")),
    ("preprocessor_config.json or processor_config.json", ("preprocessor_config.json", "processor_config.json")),
)


def missing_files(path: str | os.PathLike) -> list[str]:
    """What a Qwen2.5-VL folder lacks, e.g. ['config.json', 'weights (*.safetensors or *.bin)']."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return [f"the folder itself ({path} does not exist)"]
    return [what for what, patterns in REQUIRED_FILES
            if not any(glob.glob(os.path.join(path, pattern)) for pattern in patterns)]


def load_folder(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, processor) from a local folder; the model is Qwen2_5_VLForConditionalGeneration in `dtype`."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from .processor import ImageTextProcessor
    path = os.fspath(path)
    missing = missing_files(path)
    if missing:
        raise MissingPathError(f"Qwen2.5-VL folder {path!r} is missing or incomplete; missing: {', '.join(missing)}."
                               f" Expected a transformers-format folder (model and processor save_pretrained).")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    return model, ImageTextProcessor.load(path)
