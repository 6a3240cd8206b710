"""The NVIDIA DALI decoder backend: a DALI pipeline fed encoded bytes from Python.

On the CPU (device_id=None) DALI decodes with libjpeg-turbo / libpng on its own threads and resizes there;
with a CUDA device it uses the "mixed" decoder (nvJPEG, the hardware JPEG decoder where present) and resizes
on the GPU, and the batch stays on the GPU. Resizing is INTERP_LINEAR with antialiasing, to exactly (H, W);
images already at (H, W) skip it. The batch is copied once, into a torch tensor [N, 3, H, W] uint8.

A sample DALI cannot decode fails the whole pipeline run and leaves the pipeline unusable, so on a failure
this backend rebuilds the pipeline (milliseconds) and decodes that batch one sample at a time to find the
bad ones; the good samples still come back.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from .decoding import Decoded

INPUT_NAME = "encoded"


@pipeline_def(enable_conditionals=True)
def _decode_resize_pipeline(size: tuple[int, int], on_gpu: bool):
    """Encoded bytes -> RGB [3, H, W] uint8 per sample. On the CPU, images already at `size` skip the resize
    (DALI's resize has no identity shortcut and costs more than the decode there)."""
    encoded = fn.external_source(name=INPUT_NAME, dtype=types.UINT8, ndim=1)
    decoder_options = {"jpeg_fancy_upsampling": True} if on_gpu else {}     # match libjpeg-turbo's chroma
    images = fn.decoders.image(encoded, device="mixed" if on_gpu else "cpu", output_type=types.RGB,
                               **decoder_options)                                    # [H0, W0, 3] each
    if on_gpu:                                     # cheap there: keep the GPU graph free of conditionals
        resized = fn.resize(images, size=list(size), interp_type=types.INTERP_LINEAR, antialias=True)
    elif (images.shape()[0] == size[0]) & (images.shape()[1] == size[1]):
        resized = images
    else:
        resized = fn.resize(images, size=list(size), interp_type=types.INTERP_LINEAR, antialias=True)
    return fn.transpose(resized, perm=[2, 0, 1])                                      # [3, H, W] each


class DaliDecoder:
    name = "dali"

    def __init__(self, size: tuple[int, int], *, max_batch: int, device: torch.device = torch.device("cpu"),
                 num_threads: int | None = None):
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"DALI decodes on 'cpu' or 'cuda', not {device}")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.size = size
        self.device = device
        self.max_batch = max_batch
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        self._pipeline: Pipeline | None = None

    def _build(self) -> Pipeline:
        on_gpu = self.device.type == "cuda"
        pipeline = _decode_resize_pipeline(
            size=self.size, on_gpu=on_gpu, batch_size=self.max_batch, num_threads=self.num_threads,
            device_id=self.device.index if on_gpu else None,
            exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        pipeline.build()
        return pipeline

    def _run(self, encoded: Sequence[bytes]) -> torch.Tensor:
        """Decode a batch that DALI must decode whole: uint8 [N, 3, H, W] on self.device."""
        if self._pipeline is None:
            self._pipeline = self._build()
        self._pipeline.feed_input(INPUT_NAME, [np.frombuffer(data, dtype=np.uint8) for data in encoded])
        (output,) = self._pipeline.run()
        images = torch.empty((len(encoded), 3, *self.size), dtype=torch.uint8, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(output.as_tensor(), images, cuda_stream=stream)                  # one copy into torch
        return images

    def _try_run(self, encoded: Sequence[bytes]) -> torch.Tensor | str:
        try:
            return self._run(encoded)
        except Exception as exc:  # DALI raises RuntimeError, IndexError, ... and invalidates the pipeline
            self._pipeline = None
            return f"DALI {type(exc).__name__}: {_cause(str(exc))}"

    def decode(self, encoded: Sequence[bytes]) -> Decoded:
        parts, ok, failed = [], [], {}
        for start in range(0, len(encoded), self.max_batch):
            chunk = encoded[start: start + self.max_batch]
            images = self._try_run(chunk)
            if isinstance(images, torch.Tensor):
                parts.append(images)
                ok += range(start, start + len(chunk))
                continue
            for offset, data in enumerate(chunk):                     # find the samples DALI cannot decode
                single = self._try_run([data])
                if isinstance(single, torch.Tensor):
                    parts.append(single)
                    ok.append(start + offset)
                else:
                    failed[start + offset] = single
        images = torch.cat(parts) if parts else torch.empty(0, 3, *self.size, dtype=torch.uint8, device=self.device)
        return Decoded(images, ok, failed)

    def close(self) -> None:
        self._pipeline = None


def _cause(message: str) -> str:
    """The operator's own words from a DALI pipeline error (the text after "encountered:")."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Current pipeline object is no longer valid")]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1:]
    return "; ".join(lines[-3:]) if lines else "pipeline error"
