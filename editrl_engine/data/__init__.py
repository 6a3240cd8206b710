"""Edit data: manifests of editing tasks, image loaders (NVIDIA DALI or Pillow), synthetic tasks with exact targets.

- manifest.py   EditRow, read_manifest / write_manifest (JSONL, validated, atomic), group keys
- loaders.py    EditLoader: sharded, shuffled batches of decoded, resized uint8 images [B, 3, H, W]
- decoding.py   the decoder-backend interface and the choice of backend; dali.py and pillow.py implement it
- sharding.py   disjoint, covering per-rank shards with a per-epoch shuffle
- integrity.py  truncation checks that make every backend reject the same broken files
- shapes.py     flat-shape scenes: palette, 3x3 placement grid, exact rendering
- synthetic.py  synthetic edit tasks (recolor, move, remove, background) with ground-truth targets
- throughput.py measure_loader (images/s of a backend) and photo-like benchmark images
"""
from .decoding import BACKENDS, Decoded, Decoder, available_backends, dali_unavailable_reason, make_decoder
from .integrity import encoded_problem
from .loaders import EditBatch, EditLoader, LoaderStats, SkippedImageWarning
from .manifest import (
                       EditRow,
                       GroupKey,
                       ManifestError,
                       file_digest,
                       group_key,
                       image_digest,
                       parse_row,
                       read_manifest,
                       write_manifest,
)
from .shapes import CELLS, PALETTE, SHAPE_KINDS, Shape, render
from .sharding import epoch_order, shard_indices
from .synthetic import EDIT_KINDS, Edit, ShapeTask, make_task, make_tasks, task_images, write_synthetic
from .throughput import LoaderTiming, measure_loader, write_textured_images

__all__ = [
    "BACKENDS", "CELLS", "EDIT_KINDS", "PALETTE", "SHAPE_KINDS",
    "Decoded", "Decoder", "Edit", "EditBatch", "EditLoader", "EditRow", "GroupKey", "LoaderStats", "LoaderTiming",
    "ManifestError", "Shape", "ShapeTask", "SkippedImageWarning",
    "available_backends", "dali_unavailable_reason", "encoded_problem", "epoch_order", "file_digest", "group_key",
    "image_digest", "make_decoder", "make_task", "make_tasks", "measure_loader", "parse_row", "read_manifest",
    "render", "shard_indices", "task_images", "write_manifest", "write_synthetic", "write_textured_images",
]
