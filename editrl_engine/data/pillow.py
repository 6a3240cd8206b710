"""The Pillow decoder backend: decode, convert to RGB, apply EXIF orientation, resize, on a thread pool.

Pillow releases the GIL while it decodes and resamples, so a few threads decode a batch in parallel. The
resize is Pillow's BILINEAR filter, which widens its support when shrinking (antialiased), as DALI's
INTERP_LINEAR with antialias does.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps

from .decoding import Decoded


def decode_resize(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """One encoded image -> uint8 [H, W, 3] at `size` = (H, W). Raises on undecodable data."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        image = _to_rgb(ImageOps.exif_transpose(image))
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16-bit grey scaled to 8 bits as round(v / 257) (Pillow's own conversion would clip it)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image).astype(np.float32).clip(0, 65535)                  # [H, W]
        image = Image.fromarray(np.round(grey / 257).astype(np.uint8), mode="L")
    return image.convert("RGB")


class PillowDecoder:
    name = "pillow"

    def __init__(self, size: tuple[int, int], *, device: torch.device = torch.device("cpu"),
                 num_threads: int | None = None):
        self.size = size
        self.device = device
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="pillow-decode") \
            if self.num_threads > 1 else None

    def _try_decode(self, data: bytes) -> np.ndarray | str:
        try:
            return decode_resize(data, self.size)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            return f"{type(exc).__name__}: {exc}"

    def decode(self, encoded: Sequence[bytes]) -> Decoded:
        results = list(self._pool.map(self._try_decode, encoded) if self._pool else map(self._try_decode, encoded))
        ok = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
        failed = {i: r for i, r in enumerate(results) if isinstance(r, str)}
        if ok:
            images = torch.from_numpy(np.stack([results[i] for i in ok])).permute(0, 3, 1, 2)  # [N, 3, H, W]
        else:
            images = torch.empty(0, 3, *self.size, dtype=torch.uint8)
        return Decoded(images.contiguous().to(self.device), ok, failed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
