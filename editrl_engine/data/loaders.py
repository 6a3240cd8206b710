"""EditLoader: batches of decoded, resized source images (uint8 [B, 3, H, W]) with their manifest rows.

Each rank reads its own shard of the manifest (data/sharding.py: disjoint, covering, stable order, optional
shuffle per (seed, epoch)); files are read on a thread pool, checked for truncation (data/integrity.py) and
decoded by a backend ("dali" or "pillow", data/decoding.py). A missing, unreadable or corrupt image never
stops a run: its row is left out of the batch, counted in `loader.stats`, and a SkippedImageWarning names the
file once per loader. A batch whose every image was skipped is not yielded, so batches may be smaller than
`batch_size`.

    loader = EditLoader("tasks.jsonl", batch_size=16, size=512, rank=rank, world_size=world, shuffle=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:        # batch.images [B, 3, 512, 512] uint8, batch.rows, batch.group_keys
            ...                     # batch.sources: per row the image, or the list of a multi-source row's images
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .decoding import make_decoder
from .integrity import encoded_problem
from .manifest import EditRow, GroupKey, image_digest, read_manifest, sources_digest
from .prefetch import prefetched
from .sharding import shard_indices


class SkippedImageWarning(UserWarning):
    """An image was missing, unreadable or corrupt; its row was left out of the batch."""


@dataclasses.dataclass
class EditBatch:
    images: torch.Tensor                  # uint8 [B, 3, H, W]: the (first) source image of each row
    rows: list[EditRow]                   # B manifest rows, in the order of `images`
    source_sha256: list[str]              # B digests of the source files' bytes (several: joined by commas)
    targets: torch.Tensor | None = None   # uint8 [B, 3, H, W] ground-truth targets when load_targets=True
    sources: list = dataclasses.field(default_factory=list)   # B: uint8 [3, H, W], or a list of them for a row
                                                              # with several sources (what policy.encode takes)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def group_keys(self) -> list[GroupKey]:
        return [GroupKey(row.instruction, digest) for row, digest in zip(self.rows, self.source_sha256)]


@dataclasses.dataclass
class LoaderStats:
    batches: int = 0                      # batches yielded
    images: int = 0                       # samples yielded
    missing: int = 0                      # samples skipped: a file missing or unreadable
    corrupt: int = 0                      # samples skipped: a file read but not decodable
    skipped_files: dict[str, str] = dataclasses.field(default_factory=dict)   # path -> first reason

    @property
    def skipped(self) -> int:
        return self.missing + self.corrupt


@dataclasses.dataclass(frozen=True)
class _Skip:
    row_id: str
    path: str
    kind: str                             # "missing" or "corrupt"
    reason: str


class EditLoader:
    """Iterate a manifest's rows (this rank's shard) as EditBatch objects. See the module docstring.

    source: a manifest path or a sequence of EditRow. size: (H, W) or an int for square outputs.
    backend: "auto" (DALI when it imports, else Pillow), "dali" or "pillow". device: where images land
    (None: CPU, or the GPU for DALI when CUDA is available). prefetch: batches decoded ahead in a background
    thread (0: decode in the caller's thread). equal_shards: cut every rank's shard to the same length.
    """

    def __init__(self, source: str | os.PathLike | Sequence[EditRow], *, batch_size: int,
                 size: int | tuple[int, int], backend: str = "auto", rank: int = 0, world_size: int = 1,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, equal_shards: bool = False,
                 load_targets: bool = False, device: str | torch.device | None = None,
                 num_threads: int | None = None, prefetch: int = 2):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = read_manifest(source) if isinstance(source, (str, os.PathLike)) else list(source)
        if load_targets:
            without = [row.id for row in self.rows if row.target is None]
            if without:
                raise ValueError(f"load_targets=True but {len(without)} row(s) have no target, e.g. {without[0]!r}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle, self.seed, self.drop_last, self.equal_shards = shuffle, seed, drop_last, equal_shards
        self.load_targets, self.prefetch = load_targets, prefetch
        shard_indices(0, rank, world_size)                                     # validates rank / world_size
        files_per_row = max((len(row.sources) for row in self.rows), default=1) + (1 if load_targets else 0)
        self.decoder = make_decoder(backend, size, max_batch=batch_size * files_per_row, device=device,
                                    num_threads=num_threads)
        self.backend = self.decoder.name
        self.size = self.decoder.size
        self.epoch = 0
        self.stats = LoaderStats()
        self._warned: set[str] = set()
        self._reader = ThreadPoolExecutor(max(1, num_threads or min(8, os.cpu_count() or 1)),
                                          thread_name_prefix="edit-loader-read")

    # ---- order -----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order (seed, epoch) the next iteration follows."""
        self.epoch = epoch

    def shard(self) -> np.ndarray:
        """Indices into `self.rows` that this rank visits in the current epoch, in order: int64 [n]."""
        return shard_indices(len(self.rows), self.rank, self.world_size, epoch=self.epoch, shuffle=self.shuffle,
                             seed=self.seed, equal=self.equal_shards)

    def __len__(self) -> int:
        """Batches this epoch before any skipping."""
        count = len(self.shard())
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    # ---- iteration -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[EditBatch]:
        produced = self._produce(self.shard())
        if self.prefetch > 0:
            produced = prefetched(produced, self.prefetch)
        try:
            for batch, skips in produced:
                self._record(skips)                  # in the caller's thread, so warnings reach its filters
                if batch is not None:
                    self.stats.batches += 1
                    self.stats.images += len(batch)
                    yield batch
        finally:
            produced.close()                         # stops the prefetch thread when the caller stops early

    def _produce(self, indices: np.ndarray) -> Iterator[tuple[EditBatch | None, list[_Skip]]]:
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start: start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield self._load([self.rows[i] for i in chunk])

    def _load(self, rows: list[EditRow]) -> tuple[EditBatch | None, list[_Skip]]:
        """Read and decode the files of `rows` (every source, then the targets when load_targets); leave out rows
        with a source (or target) missing or broken."""
        files = [(r, "source", k, path) for r, row in enumerate(rows) for k, path in enumerate(row.sources)]
        if self.load_targets:
            files += [(r, "target", 0, row.target) for r, row in enumerate(rows)]
        reads = list(self._reader.map(_read_checked, [f[3] for f in files]))     # bytes, or (kind, reason)
        skips: dict[int, _Skip] = {}                                              # row index -> first reason

        def skip(file: int, kind: str, reason: str) -> None:
            r = files[file][0]
            skips.setdefault(r, _Skip(rows[r].id, str(files[file][3]), kind, reason))

        for file, result in enumerate(reads):
            if isinstance(result, tuple):
                skip(file, *result)
        readable = [file for file, result in enumerate(reads) if isinstance(result, bytes)]
        decoded = self.decoder.decode([reads[file] for file in readable])
        for local, reason in decoded.failed.items():
            skip(readable[local], "corrupt", reason)

        kept = [r for r in range(len(rows)) if r not in skips]
        if not kept:
            return None, list(skips.values())
        at = {(r, kind, k): file for file, (r, kind, k, _) in enumerate(files)}
        image_of = {readable[local]: image for image, local in enumerate(decoded.ok)}   # file -> decoded row
        source_files = {r: [at[(r, "source", k)] for k in range(len(rows[r].sources))] for r in kept}
        images = _take(decoded.images, [image_of[source_files[r][0]] for r in kept])    # [B', 3, H, W]
        targets = (_take(decoded.images, [image_of[at[(r, "target", 0)]] for r in kept]) if self.load_targets
                   else None)
        sources = [[decoded.images[image_of[f]] for f in source_files[r]] if rows[r].multi_source else images[i]
                   for i, r in enumerate(kept)]
        digests = [sources_digest([image_digest(reads[f]) for f in source_files[r]]) for r in kept]
        batch = EditBatch(images=images, rows=[rows[r] for r in kept], source_sha256=digests, targets=targets,
                          sources=sources)
        return batch, list(skips.values())

    def _record(self, skips: list[_Skip]) -> None:
        for skip in skips:
            if skip.kind == "missing":
                self.stats.missing += 1
            else:
                self.stats.corrupt += 1
            self.stats.skipped_files.setdefault(skip.path, skip.reason)
            if skip.path not in self._warned:
                self._warned.add(skip.path)
                warnings.warn(f"skipping row {skip.row_id!r}: {skip.kind} image {skip.path} ({skip.reason})",
                              SkippedImageWarning, stacklevel=3)

    # ---- resources -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._reader.shutdown(wait=False)
        close = getattr(self.decoder, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "EditLoader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _take(images: torch.Tensor, index: list[int]) -> torch.Tensor:
    """images[index]: a view when index is a run of consecutive rows (the usual case: nothing skipped)."""
    if index == list(range(index[0], index[0] + len(index))):
        return images[index[0]: index[0] + len(index)]
    return images[index]


def _read_checked(path: Path) -> bytes | tuple[str, str]:
    """A file's bytes, or ("missing" | "corrupt", reason) when it cannot be read or is visibly truncated."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "missing", "no such file"
    except OSError as exc:
        return "missing", f"unreadable: {type(exc).__name__}: {exc}"
    problem = encoded_problem(data)
    return ("corrupt", problem) if problem else data
