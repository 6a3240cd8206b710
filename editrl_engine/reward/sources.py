"""A sample's source: one image, or several (a list or tuple, in order: e.g. Qwen-Image-Edit-Plus references).
The judges show every source image, labelled; these helpers give the list and its count."""
from __future__ import annotations

from ..vlm.images import as_rgb_image


def source_list(source) -> list:
    """The sample's source images as a list (one image: a list of one); a clear error for an empty list."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("a sample's source is an empty list; give one image or a non-empty list of images")
        return list(source)
    return [source]


def rgb_sources(source) -> tuple:
    """The source images as RGB PIL images, in order."""
    return tuple(as_rgb_image(image) for image in source_list(source))


def source_count(source) -> int:
    return len(source_list(source))
