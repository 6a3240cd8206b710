"""measure_loader: decoded images per second of an EditLoader backend, for bench/ and quick checks.

The timed loop is the loader as training uses it: read files, check them, decode, resize, collate into
[B, 3, H, W] uint8 (and, on the GPU, wait for the batch to be ready). Warm-up batches (pipeline build, thread
pools, page cache) are not timed; the manifest is cycled over epochs when it holds fewer images than asked.
`write_textured_images` writes photo-like test images (smooth colour fields plus grain, so JPEGs compress
like photographs, not like flat synthetic shapes) and their manifest, to time decoding on realistic input:

    manifest = write_textured_images("/tmp/loader-bench", 256, size=(512, 512), image_format="jpeg")
    for backend in available_backends():
        print(measure_loader(manifest, backend=backend, batch_size=32, size=512, num_batches=16))
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .loaders import EditLoader
from .manifest import EditRow, write_manifest


@dataclasses.dataclass
class LoaderTiming:
    backend: str                  # "dali" or "pillow"
    device: str                   # where the images landed
    batch_size: int
    size: tuple[int, int]         # (H, W) of the decoded images
    batches: int                  # timed batches
    images: int                   # timed images
    seconds: float
    images_per_s: float
    skipped: int                  # images skipped (missing or corrupt) during the timed batches


def measure_loader(source: str | os.PathLike | Sequence[EditRow], *, backend: str = "auto", batch_size: int = 32,
                   size: int | tuple[int, int] = 512, num_batches: int = 20, warmup_batches: int = 2,
                   prefetch: int = 0, **loader_options) -> LoaderTiming:
    """Time `num_batches` batches of an EditLoader over `source` after `warmup_batches` untimed ones.

    prefetch=0 (default) decodes in the calling thread, which measures the backend itself; other
    EditLoader options (num_threads, device, shuffle, ...) pass through."""
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    with EditLoader(source, batch_size=batch_size, size=size, backend=backend, prefetch=prefetch,
                    **loader_options) as loader:
        if len(loader) == 0:
            raise ValueError("the loader yields no batches (empty manifest or shard)")
        batches = _cycle(loader)
        for _ in range(warmup_batches):
            next(batches)
        on_gpu = loader.decoder.device.type == "cuda"
        skipped_before, images = loader.stats.skipped, 0
        start = time.perf_counter()
        for _ in range(num_batches):
            images += len(next(batches))
        if on_gpu:
            torch.cuda.synchronize(loader.decoder.device)
        seconds = time.perf_counter() - start
        return LoaderTiming(loader.backend, str(loader.decoder.device), batch_size, tuple(loader.size), num_batches,
                            images, seconds, images / seconds, loader.stats.skipped - skipped_before)


def _cycle(loader: EditLoader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("every image of the manifest was skipped")
        epoch += 1


def write_textured_images(folder: str | os.PathLike, n: int, size: int | tuple[int, int] = 512, *, seed: int = 0,
                          image_format: str = "jpeg", jpeg_quality: int = 90,
                          manifest_name: str = "manifest.jsonl") -> Path:
    """Write n photo-like images of `size` (H, W) and a manifest (instruction "Keep the image unchanged.")."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    height, width = (size, size) if isinstance(size, int) else size
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = []
    for index in range(n):
        coarse = rng.uniform(0, 255, size=(3, 9, 9)).astype(np.float32)                   # [3, 9, 9]
        smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(height, width),
                                                 mode="bicubic", align_corners=False)[0]   # [3, H, W]
        grain = rng.normal(0, 12, size=(3, height, width)).astype(np.float32)
        pixels = (smooth.numpy() + grain).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)  # [H, W, 3]
        path = folder / "images" / f"textured-{index:06d}.{'jpg' if image_format == 'jpeg' else 'png'}"
        Image.fromarray(pixels).save(path, format=image_format.upper(),
                                     **({"quality": jpeg_quality} if image_format == "jpeg" else {}))
        rows.append(EditRow(id=f"textured-{index:06d}", source=path, instruction="Keep the image unchanged."))
    return write_manifest(folder / manifest_name, rows)
