"""What reranking writes: JSON-safe values, atomic JSON and PNG files, and the contact sheet of candidates.

Files are written to a temporary file beside the destination and renamed over it (os.replace), so a reader
never sees half a file. JSON has no NaN: non-finite numbers become null.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import write_atomic
from ..vlm.images import as_rgb_image

TILE_MIN = 160                # tiles are upscaled to at least this many pixels wide, so labels fit
LABEL_HEIGHT = 28
BEST_COLOUR = (40, 200, 90)
NAN_COLOUR = (200, 60, 60)


def jsonable(value: Any) -> Any:
    """value with tensors and arrays as lists, tuples as lists, and non-finite floats as None."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """data as indented JSON (NaN -> null), written atomically."""
    text = json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n"
    return write_atomic(Path(path), lambda handle: handle.write(text.encode()))


def to_pil(image: torch.Tensor | Image.Image) -> Image.Image:
    """A PIL RGB image from a uint8 tensor [3, H, W], a PIL image or a uint8 NumPy array [H, W, 3]
    (vlm/images.py's as_rgb_image)."""
    return as_rgb_image(image)


def write_png_atomic(path: str | os.PathLike, image: torch.Tensor | Image.Image) -> Path:
    picture = to_pil(image)
    return write_atomic(Path(path), lambda handle: picture.save(handle, format="PNG"))


def contact_sheet(images: Sequence[torch.Tensor | Image.Image], rewards: Sequence[float],
                  best: int | None = None, columns: int | None = None) -> Image.Image:
    """All candidates in a grid, each labelled with its index and reward; the best one framed in green,
    a NaN reward labelled in red."""
    if len(images) != len(rewards) or not images:
        raise ValueError(f"need one reward per image (>= 1 image), got {len(images)} images and {len(rewards)} "
                         "rewards")
    pictures = [to_pil(image) for image in images]
    width = max(p.width for p in pictures)
    height = max(p.height for p in pictures)
    scale = max(1, -(-TILE_MIN // width))                                            # integer upscale, nearest
    tile_w, tile_h = width * scale, height * scale
    columns = columns or math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    pad = 6
    sheet = Image.new("RGB", (columns * (tile_w + 2 * pad), rows * (tile_h + LABEL_HEIGHT + 2 * pad)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (picture, reward) in enumerate(zip(pictures, rewards)):
        x = (i % columns) * (tile_w + 2 * pad) + pad
        y = (i // columns) * (tile_h + LABEL_HEIGHT + 2 * pad) + pad
        sheet.paste(picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST), (x, y))
        finite = reward is not None and math.isfinite(reward)
        if i == best:
            draw.rectangle([x - pad + 1, y - pad + 1, x + tile_w + pad - 2, y + tile_h + pad - 2],
                           outline=BEST_COLOUR, width=4)
        label = f"#{i}  r={reward:.4f}" if finite else f"#{i}  r=NaN"
        label += "  best" if i == best else ""
        colour = BEST_COLOUR if i == best else (235, 235, 235) if finite else NAN_COLOUR
        draw.text((x, y + tile_h + 6), label, fill=colour, font=font)
    return sheet
