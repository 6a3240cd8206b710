"""Per-image scoring for the evaluation runners: image references, a persistent score cache, cached batched scoring.

An evaluation scores (source, instruction, edited) triples. Each triple is keyed by
(reward identity, instruction, source digest, edited digest); the reward identity is the reward's metadata plus
the scoring settings (e.g. Avg@K), so a different judge or setting never reads another's scores. The cache is a
JSONL file, one `{"key", "reward", "details"}` object per line, appended with one write per line: a run that
dies mid-write leaves at most a truncated last line, which is skipped on the next read.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .. import atomic
from ..errors import InputError
from ..reward.base import RewardModel


class BenchDataError(InputError):
    """A malformed benchmark file, row or image; the message names the file and the row."""


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An image as a file path or as encoded bytes (PNG/JPEG...); decoded only when scored."""
    path: Path | None = None
    data: bytes | None = None
    where: str = ""                                     # "file.jsonl row 3 input_image", for error messages

    @classmethod
    def parse(cls, value: Any, folder: Path, where: str) -> "ImageRef":
        """From a path string (relative to `folder`), raw bytes, a base64 / data-URI string under {"bytes": ...},
        or a {"bytes": ..., "path": ...} dict (the parquet layout of Hugging Face image columns)."""
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                value = value["bytes"]
                if isinstance(value, str):
                    return cls(data=_b64decode(value, where), where=where)
            elif value.get("path"):
                value = value["path"]
            else:
                raise BenchDataError(f"{where}: an image dict needs 'bytes' or 'path', got keys {sorted(value)}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(data=bytes(value), where=where)
        if isinstance(value, str) and value:
            if value.startswith("data:"):
                return cls(data=_b64decode(value, where), where=where)
            path = Path(value) if os.path.isabs(value) else folder / value
            if not path.is_file():
                raise BenchDataError(f"{where}: image file {str(path)!r} does not exist")
            return cls(path=path, where=where)
        raise BenchDataError(f"{where}: an image must be a path, bytes or {{'bytes'|'path': ...}}, "
                         f"got {type(value).__name__}")

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes() if self.path is not None else self.data).hexdigest()

    def load(self) -> Image.Image:
        try:
            image = Image.open(self.path if self.path is not None else io.BytesIO(self.data))
            return image.convert("RGB")
        except Exception as error:  # noqa: BLE001 - any decoder error becomes a message naming the image
            raise BenchDataError(f"{self.where}: cannot decode the image ({error})") from error


def _b64decode(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
    except Exception as error:  # noqa: BLE001
        raise BenchDataError(f"{where}: embedded image is not valid base64 ({error})") from error


def reward_identity(reward: RewardModel, **settings: Any) -> str:
    """A stable string naming the judge and how it is asked; part of every cache key."""
    return json.dumps({"reward": reward.metadata(), **settings}, sort_keys=True, default=str)


def triple_key(identity: str, instruction: str, source_digest: str, edited_digest: str) -> str:
    payload = json.dumps([identity, instruction, source_digest, edited_digest])
    return hashlib.sha256(payload.encode()).hexdigest()


class ScoreCache:
    """key -> (reward or NaN, details); in memory only when `path` is None."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, tuple[float, dict]] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    obj = json.loads(line)
                    value = float("nan") if obj["reward"] is None else float(obj["reward"])
                    self.entries[obj["key"]] = (value, dict(obj.get("details") or {}))
                except (ValueError, KeyError, TypeError):
                    continue                            # a truncated or foreign line: score that triple again

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> tuple[float, dict]:
        return self.entries[key]

    def put(self, items: Sequence[tuple[str, float, dict]]) -> None:
        for key, value, details in items:
            self.entries[key] = (value, details)
        if self.path is None or not items:
            return
        lines = "".join(json.dumps({"key": k, "reward": None if math.isnan(v) else v, "details": d}) + "\n"
                        for k, v, d in items)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def scalar_details(details: dict) -> dict:
    """The JSON scalars of a details dict (sub-scores, errors); raw judge text and arrays are not cached."""
    return {k: v for k, v in details.items() if isinstance(v, (int, float, str, bool)) or v is None}


def accepts(function: Callable, name: str) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def score_triples(reward: RewardModel, triples: Sequence[tuple[ImageRef, str, ImageRef]], *,
                  cache: ScoreCache | None = None, avg_k: int = 1, batch_size: int = 8,
                  score_kwargs: Callable[[list[int]], dict] | None = None, prepare: Callable | None = None,
                  progress: bool = True, desc: str = "scoring") -> tuple[list[tuple[float, dict]], dict]:
    """Score each triple once (duplicates and cached triples are not re-scored).

    score_kwargs(indices) -> extra keyword arguments for reward.score on that batch of triples;
    prepare(source PIL, edited PIL) -> (source, edited) before scoring (e.g. resizing).
    Returns ([(reward or NaN, scalar details)] per triple, stats {"unique", "scored", "cached", "failures"})."""
    if avg_k < 1:
        raise ValueError(f"avg_k must be >= 1, got {avg_k}")
    extra = {}
    if avg_k > 1:
        if not accepts(reward.score, "avg_k"):
            raise InputError(f"the {reward.kind!r} reward has no Avg@K self-ensemble (its score() takes no avg_k)")
        extra["avg_k"] = avg_k
    cache = cache if cache is not None else ScoreCache()
    identity = reward_identity(reward, avg_k=avg_k)
    digests: dict[int, str] = {}

    def digest(ref: ImageRef) -> str:
        if id(ref) not in digests:
            digests[id(ref)] = ref.digest()
        return digests[id(ref)]

    keys = [triple_key(identity, instruction, digest(src), digest(edit)) for src, instruction, edit in triples]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    todo = [i for key, i in first.items() if key not in cache]
    bar = _progress(len(todo), desc, progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        sources, edited = [], []
        for i in batch:
            src, edit = triples[i][0].load(), triples[i][2].load()
            src, edit = prepare(src, edit) if prepare is not None else (src, edit)
            sources.append(src)
            edited.append(edit)
        kwargs = {**extra, **(score_kwargs(batch) if score_kwargs is not None else {})}
        result = reward.score(sources, [triples[i][1] for i in batch], edited, **kwargs)
        values = result.reward.tolist()
        cache.put([(keys[i], float(v), scalar_details(d)) for i, v, d in zip(batch, values, result.details)])
        bar(len(batch))
    bar(0, close=True)
    out = [cache.get(key) for key in keys]
    failures = sum(math.isnan(cache.get(key)[0]) for key in first)
    stats = {"unique": len(first), "scored": len(todo), "cached": len(first) - len(todo), "failures": failures}
    return out, stats


def _progress(total: int, desc: str, enabled: bool) -> Callable:
    """update(n, close=False): tqdm on stderr when installed, else a one-line counter; silent when disabled."""
    if not enabled or total == 0:
        return lambda n, close=False: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
        return lambda n, close=False: bar.close() if close else bar.update(n)
    done = [0]

    def update(n: int, close: bool = False) -> None:
        done[0] += n
        sys.stderr.write(f"\r{desc}: {done[0]}/{total}" + ("\n" if close else ""))
        sys.stderr.flush()
    return update


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON to a temporary file in the same folder, then rename it over `path`."""
    return atomic.write_json_atomic(path, obj, indent=2)
