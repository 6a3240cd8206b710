"""Images as users hold them -> the forms the models take. The one image converter of the package: every entry
point that accepts an image (policy.encode, reward.score / score_groups, the programmatic reward, rerank, the
serve outputs) goes through it, so every one accepts the same forms and rejects the rest with the same message.

Accepted forms (each is the same picture as the others):
  a PIL image               any mode, converted with Image.convert("RGB") (grey is replicated, alpha is dropped)
  a uint8 tensor [3, H, W]  channels-first RGB, 0-255 (what policy.decode returns); any device
  a uint8 NumPy array       channels-last [H, W, 3] RGB, 0-255: what np.asarray(pil_image) gives and what the
                            diffusers pipelines take. Any strides (a flipped or cropped view works). The arrays
                            np.asarray gives for PIL's other common modes are converted exactly as those PIL images
                            are: [H, W] as grey ("L", replicated) and [H, W, 4] as RGBA (alpha dropped).

Anything else raises ImageInputError (a TypeError and a ValueError, so callers that catch either keep working)
naming the accepted forms and, for near misses (float pixels, channels on the wrong axis), how to convert.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

ACCEPTED_FORMS = ("a PIL image", "a uint8 tensor [3, H, W]", "a uint8 NumPy array [H, W, 3]")


class ImageInputError(TypeError, ValueError):
    """An image in none of the accepted forms (ACCEPTED_FORMS)."""


def _forms(also: str | None) -> str:
    forms = [*ACCEPTED_FORMS, *([also] if also else [])]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def _reject(name: str, also: str | None, got: str, hint: str = "") -> ImageInputError:
    return ImageInputError(f"{name} must be {_forms(also)}, got {got}" + (f": {hint}" if hint else ""))


def check_image(image: Any, name: str = "an image", *, also: str | None = None) -> str:
    """Which accepted form `image` is in: "pil", "tensor" or "array"; ImageInputError naming the accepted forms
    (and `also`, one more form the caller accepts itself, e.g. "an image path") when it is in none."""
    if isinstance(image, Image.Image):
        return "pil"
    if isinstance(image, torch.Tensor):
        shape = tuple(image.shape)
        if image.dtype != torch.uint8:
            raise _reject(name, also, f"a {str(image.dtype).removeprefix('torch.')} tensor {shape}",
                          "give uint8 pixels 0-255, e.g. (tensor * 255).round().to(torch.uint8) for floats in [0, 1]")
        if image.dim() != 3 or shape[0] != 3:
            hint = "tensors are channels-first [3, H, W]"
            if image.dim() == 3 and shape[-1] == 3:
                hint += "; for a channels-last [H, W, 3] tensor use tensor.permute(2, 0, 1)"
            raise _reject(name, also, f"a uint8 tensor of shape {shape}", hint)
        if image.numel() == 0:
            raise _reject(name, also, f"an empty uint8 tensor {shape}")
        return "tensor"
    if isinstance(image, np.ndarray):
        shape = tuple(image.shape)
        if image.dtype != np.uint8:
            raise _reject(name, also, f"a {image.dtype} NumPy array {shape}",
                          "give uint8 pixels 0-255: array.astype(np.uint8), or "
                          "(array * 255).round().astype(np.uint8) for floats in [0, 1]")
        if not (image.ndim == 2 or (image.ndim == 3 and shape[-1] in (3, 4))):
            hint = ("NumPy arrays are channels-last [H, W, 3] ([H, W] grey and [H, W, 4] RGBA arrays are converted "
                    "to RGB as PIL converts those images)")
            if image.ndim == 3 and shape[0] in (3, 4) and shape[-1] > 4:
                hint += "; for a channels-first [3, H, W] array use array.transpose(1, 2, 0)"
            raise _reject(name, also, f"a uint8 NumPy array of shape {shape}", hint)
        if image.size == 0:
            raise _reject(name, also, f"an empty uint8 NumPy array {shape}")
        return "array"
    shape = f" {tuple(image.shape)}" if isinstance(getattr(image, "shape", None), tuple) else ""
    raise _reject(name, also, f"{type(image).__name__}{shape}")


def as_rgb_image(image: Any, name: str = "an image", *, also: str | None = None) -> Image.Image:
    """A PIL RGB image (a new one, sharing no memory with `image`) from any accepted form (see the module doc):
    a PIL image of any mode, a uint8 tensor [3, H, W], or a uint8 NumPy array [H, W, 3] ([H, W] grey and
    [H, W, 4] RGBA arrays become RGB exactly as the PIL images np.asarray made them from would).
    ImageInputError (TypeError and ValueError) naming the accepted forms otherwise; `name` starts the message."""
    kind = check_image(image, name, also=also)
    if kind == "pil":
        return image.convert("RGB")
    if kind == "tensor":
        return Image.fromarray(image.detach().permute(1, 2, 0).cpu().numpy())           # [H, W, 3]
    return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")                  # L / RGB / RGBA -> RGB


def as_rgb_array(image: Any, name: str = "an image", *, also: str | None = None) -> np.ndarray:
    """A new, writable, C-contiguous uint8 NumPy array [H, W, 3] from any accepted form (as as_rgb_image)."""
    kind = check_image(image, name, also=also)
    if kind == "tensor":
        return image.detach().permute(1, 2, 0).cpu().numpy().copy()                     # [H, W, 3]
    if kind == "array" and image.ndim == 3 and image.shape[-1] == 3:
        return np.array(image, order="C", copy=True)
    return np.array(as_rgb_image(image, name, also=also))                              # through PIL's conversion


def as_uint8_tensor(image: Any, name: str = "an image", *, also: str | None = None) -> torch.Tensor:
    """uint8 [3, H, W] on the CPU from any accepted form (as as_rgb_image). A tensor comes back as it is (moved
    to the CPU); anything else as a new tensor."""
    if check_image(image, name, also=also) == "tensor":
        return image.cpu()
    return torch.from_numpy(as_rgb_array(image, name, also=also)).permute(2, 0, 1)
