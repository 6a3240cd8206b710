"""Images over HTTP: base64 or raw PNG / JPEG bytes in, checked and decoded to RGB; PNG base64 out.

A bad input raises ImageError naming the field (e.g. "candidates[2]") and what is wrong with it; the server
answers it with 400 (or 413 for an image with too many pixels).
"""
from __future__ import annotations

import base64
import binascii
import io
import re

import torch
from PIL import Image, UnidentifiedImageError

from .outputs import to_pil

FORMATS = ("PNG", "JPEG")
_DATA_URL = re.compile(r"^data:image/[a-z+.-]+;base64,", re.IGNORECASE)


class ImageError(ValueError):
    """A request image that cannot be used; status is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_base64(text: str, field: str) -> bytes:
    """Bytes of standard base64 (a data:image/...;base64, prefix and whitespace are allowed)."""
    if not isinstance(text, str):
        raise ImageError(f"{field}: expected a base64 string, got {type(text).__name__}")
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageError(f"{field}: not valid base64 ({error}); send the PNG or JPEG file's bytes base64-encoded")
    if not data:
        raise ImageError(f"{field}: empty image")
    return data


def decode_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """A PNG or JPEG file's bytes -> PIL RGB image, fully decoded (so a truncated file fails here)."""
    if not data:
        raise ImageError(f"{field}: empty image")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"{field}: the image is {width}x{height} = {width * height} pixels, over the "
                                 f"server's limit of {max_pixels}; send a smaller image", status=413)
            return image.convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageError(f"{field}: not a PNG or JPEG image ({type(error).__name__}: {error})")
    except (OSError, ValueError, SyntaxError) as error:   # truncated or corrupt file
        raise ImageError(f"{field}: a broken image file ({type(error).__name__}: {error})")


def image_from_base64(text: str, field: str, max_pixels: int) -> Image.Image:
    return decode_image(decode_base64(text, field), field, max_pixels)


def png_base64(image: torch.Tensor | Image.Image) -> str:
    """A uint8 tensor [3, H, W] or PIL image as base64 of a PNG file."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
