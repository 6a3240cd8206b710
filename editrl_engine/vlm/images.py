"""Images as a VLM processor takes them: PIL RGB, from PIL images or uint8 tensors [3, H, W]."""
from __future__ import annotations

import torch
from PIL import Image


def as_rgb_image(image) -> Image.Image:
    """A PIL RGB image from a PIL image or a uint8 tensor [3, H, W]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
        return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    raise TypeError(f"an image must be a PIL image or a uint8 tensor [3, H, W], got {type(image).__name__} "
                    f"{getattr(image, 'shape', '')}")
