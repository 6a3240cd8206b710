"""Loading Qwen3-VL from a local transformers-format folder (what `save_pretrained` of the model and of its
processor write). Nothing is downloaded; a missing or incomplete folder, or one holding another family, is an
error naming what is wrong.
"""
from __future__ import annotations

import json
import os

import torch

from ...errors import MissingPathError
from ..qwen2_5_vl.folder import REQUIRED_FILES, missing_files  # the same files as a Qwen2.5-VL folder
from .support import require_qwen3_vl

MODEL_TYPE = "qwen3_vl"


def load_folder(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, processor) from a local folder; the model is Qwen3VLForConditionalGeneration in `dtype`."""
    require_qwen3_vl()
    from transformers import Qwen3VLForConditionalGeneration

    from .processor import ImageTextProcessor
    path = os.fspath(path)
    missing = missing_files(path)
    if missing:
        raise MissingPathError(f"Qwen3-VL folder {path!r} is missing or incomplete; missing: {', '.join(missing)}."
                               f" Expected a transformers-format folder (model and processor save_pretrained).")
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path!r} holds a {model_type!r} model, not Qwen3-VL ({MODEL_TYPE!r}); "
                         f"load it with its own family")
    model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    return model, ImageTextProcessor.load(path)


__all__ = ["MODEL_TYPE", "REQUIRED_FILES", "load_folder", "missing_files"]
