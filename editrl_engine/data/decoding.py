"""The decoder-backend interface (encoded bytes -> resized uint8 images) and the choice of a backend.

Two backends implement it: "dali" (NVIDIA DALI: CPU decode and resize, or the mixed GPU decoder; data/dali.py)
and "pillow" (data/pillow.py). Both convert to RGB, apply the EXIF orientation, resize to exactly (H, W) with
antialiased bilinear filtering (the aspect ratio is not kept) and return [N, 3, H, W] uint8. A sample that
cannot be decoded is reported in `failed` with the reason; the others still come back.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Protocol

import torch

BACKENDS = ("dali", "pillow")


@dataclasses.dataclass
class Decoded:
    images: torch.Tensor          # uint8 [n_ok, 3, H, W] (on the GPU for DALI's mixed decoder)
    ok: list[int]                 # position in the input of each row of `images`
    failed: dict[int, str]        # position in the input -> why it could not be decoded


class Decoder(Protocol):
    name: str                     # "dali" or "pillow"
    device: torch.device          # where decoded images land
    size: tuple[int, int]         # (H, W) of the output

    def decode(self, encoded: Sequence[bytes]) -> Decoded: ...


@functools.cache
def dali_unavailable_reason() -> str | None:
    """Why DALI cannot be used here (not installed, or fails to import), or None when it can."""
    try:
        import nvidia.dali  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name in ("nvidia", "nvidia.dali"):
            return "nvidia-dali is not installed (pip install 'editrl-engine[dali]')"
        return f"nvidia.dali failed to import: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken install raises anything from OSError to AttributeError
        return f"nvidia.dali failed to import: {type(exc).__name__}: {exc}"
    return None


def available_backends() -> list[str]:
    return [name for name in BACKENDS if name != "dali" or dali_unavailable_reason() is None]


def make_decoder(backend: str, size: int | tuple[int, int], *, max_batch: int, device: str | torch.device | None = None,
                 num_threads: int | None = None) -> Decoder:
    """A decoder for `backend` ("auto", "dali" or "pillow"). "auto" picks DALI when it imports, else Pillow.
    `device`: where images land; None = "cuda" for DALI when a CUDA device is visible (the mixed GPU decoder),
    else CPU. Pillow always decodes on the CPU and moves the batch to `device` if one is given."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if backend == "auto":
        backend = "dali" if dali_unavailable_reason() is None else "pillow"
    if backend == "dali":
        reason = dali_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"loader backend 'dali' is unavailable: {reason}")
        from .dali import DaliDecoder
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return DaliDecoder((height, width), max_batch=max_batch, device=torch.device(device), num_threads=num_threads)
    if backend == "pillow":
        from .pillow import PillowDecoder
        return PillowDecoder((height, width), device=torch.device(device or "cpu"), num_threads=num_threads)
    raise ValueError(f"unknown loader backend {backend!r}; choose from 'auto', {', '.join(map(repr, BACKENDS))}")
