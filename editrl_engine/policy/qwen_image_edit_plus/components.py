"""The six parts of Qwen-Image-Edit-Plus (2509 / 2511): the same as Qwen-Image-Edit's, in the same diffusers
folder layout (the one `QwenImageEditPlusPipeline.save_pretrained` writes), only the pipeline class differs.

Nothing is downloaded; a missing or incomplete folder is an error that names every missing part.
"""
from __future__ import annotations

import dataclasses

import torch

from ...errors import MissingPathError
from ..qwen_image_edit import components as edit_components
from ..qwen_image_edit.components import REQUIRED_PARTS, missing_parts


@dataclasses.dataclass
class Components(edit_components.Components):
    def pipeline(self):
        """A diffusers QwenImageEditPlusPipeline over these very modules (sharing weights and adapters)."""
        from diffusers import QwenImageEditPlusPipeline
        return QwenImageEditPlusPipeline(scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                         tokenizer=self.tokenizer, processor=self.processor,
                                         transformer=self.transformer)


def from_folder(path: str, dtype: torch.dtype) -> Components:
    """Load every part from a local diffusers folder (no download)."""
    missing = missing_parts(path)
    if missing:
        raise MissingPathError(f"Qwen-Image-Edit-Plus folder {path!r} is missing or incomplete; missing: "
                               f"{', '.join(missing)}. Expected a diffusers-format folder with model_index.json and "
                               f"{', '.join(p + '/' for p in REQUIRED_PARTS)}.")
    parts = edit_components.from_folder(path, dtype)
    return Components(**{field.name: getattr(parts, field.name) for field in dataclasses.fields(parts)})


__all__ = ["Components", "REQUIRED_PARTS", "from_folder", "missing_parts"]
