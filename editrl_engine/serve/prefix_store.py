"""The cross-request prefix cache of /v1/chat/completions: the KV of recent groups' shared prompt prefixes.

Candidates of one group often arrive over several requests (each edit scored as soon as it is decoded); they share
the prompt up to the candidate's image (system, instruction, source images). The store keeps each such prefix's
KV cache, keyed by its exact token ids and the bytes of its images, bounded in bytes: the least recently used
entries go first. An entry larger than the whole bound is not kept. The model worker is its only writer; the
counters are read by /metrics, hence the lock.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
from PIL import Image

from ..reward.prefix_cache import Prefix


@dataclasses.dataclass
class Entry:
    prefix: Prefix                          # the prefilled KV cache, one row
    inputs: dict                            # the prefix's processor outputs (CPU), for the suffix's positions
    nbytes: int


def cache_bytes(prefix: Prefix) -> int:
    """Bytes of a prefix's keys and values over all layers."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in prefix.cache.layers)


def prefix_key(input_ids: torch.Tensor, images: Sequence[Image.Image]) -> tuple:
    """The exact token ids [1, P] and a digest of each image's size and pixels."""
    digests = tuple(hashlib.sha256(f"{im.mode}{im.size}".encode() + im.tobytes()).hexdigest() for im in images)
    return tuple(input_ids.reshape(-1).tolist()), digests


class PrefixStore:
    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"a prefix store needs max_bytes > 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.too_large = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> Entry | None:
        """The entry (now the most recently used), counted as a hit; None counted as a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple, entry: Entry) -> None:
        """Keeps the entry, evicting the least recently used ones until the bound holds."""
        with self._lock:
            if entry.nbytes > self.max_bytes:
                self.too_large += 1
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            while self._entries and self.bytes + entry.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes
                self.evictions += 1
            self._entries[key] = entry
            self.bytes += entry.nbytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "too_large": self.too_large, "bytes": self.bytes, "entries": len(self._entries)}
