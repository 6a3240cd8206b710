"""GEdit-Bench-style scoring of a folder of edits: per-sample O on 0-10, per-type mean, macro mean over types.

The folder holds a JSONL manifest (`manifest.jsonl` unless another file is named), one edit per line:
{"key", "task_type", "instruction", "source": path, "edited": path, optional "spec"} with paths relative to the
manifest's folder. Per sample O = sqrt(SC * PQ) when the reward's details give "sc" and "pq" on 0-10 (the
VIEScore combination of the min sub-scores), else 10 * reward. As in the published protocol the edited image is
resized to the source's size before judging. The headline is the unweighted mean over task types of the
per-type mean O; a NaN sample (no score could be had) is left out of its type's mean and counted.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..reward.base import RewardModel
from .editreward_bench import BenchDataError
from .score_cache import ImageRef, ScoreCache, accepts, score_triples

MANIFEST = "manifest.jsonl"


def read_edits(edits: str | Path, limit: int | None = None) -> list[dict]:
    """Validated rows {"key", "task", "instruction", "source": ImageRef, "edited": ImageRef, "spec"}."""
    path = Path(edits)
    path = path / MANIFEST if path.is_dir() else path
    if not path.is_file():
        raise BenchDataError(f"{path}: no manifest (a JSONL file of task_type, instruction, source, edited)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} row {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchDataError(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(obj, dict):
            raise BenchDataError(f"{where}: a row must be an object")
        missing = [f for f in ("task_type", "instruction", "source", "edited") if not obj.get(f)]
        if missing:
            raise BenchDataError(f"{where}: missing field(s) {', '.join(missing)}")
        rows.append({"key": str(obj.get("key", number)), "task": str(obj["task_type"]),
                     "instruction": str(obj["instruction"]),
                     "source": ImageRef.parse(obj["source"], path.parent, f"{where} source"),
                     "edited": ImageRef.parse(obj["edited"], path.parent, f"{where} edited"),
                     "spec": obj.get("spec")})
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise BenchDataError(f"{path}: no rows")
    return rows


def overall_score(reward: float, details: dict) -> float:
    """O on 0-10: sqrt(SC * PQ) from the details when given, else 10 * reward (NaN stays NaN)."""
    sc, pq = details.get("sc"), details.get("pq")
    if isinstance(sc, (int, float)) and isinstance(pq, (int, float)) and math.isfinite(sc) and math.isfinite(pq):
        return math.sqrt(max(sc, 0.0) * max(pq, 0.0))
    return 10.0 * reward


def _resize_to_source(source: Image.Image, edited: Image.Image) -> tuple[Image.Image, Image.Image]:
    if edited.size != source.size:
        edited = edited.resize(source.size, Image.Resampling.BICUBIC)
    return source, edited


def evaluate(reward: RewardModel, rows: Sequence[dict], *, avg_k: int = 1, cache: ScoreCache | None = None,
             batch_size: int = 8, progress: bool = True, resize_to_source: bool = True) -> dict:
    """Per-type mean O and their macro mean (JSON-ready). Rows with a "spec" give it to rewards that verify
    tasks exactly (score(..., tasks=...)), so the programmatic reward can score the synthetic task."""
    triples = [(row["source"], row["instruction"], row["edited"]) for row in rows]
    score_kwargs = None
    if all(row["spec"] is not None for row in rows) and accepts(reward.score, "tasks"):
        score_kwargs = lambda indices: {"tasks": [rows[i]["spec"] for i in indices]}   # noqa: E731
    scores, stats = score_triples(reward, triples, cache=cache, avg_k=avg_k, batch_size=batch_size,
                                  score_kwargs=score_kwargs, prepare=_resize_to_source if resize_to_source else None,
                                  progress=progress, desc="GEdit")
    by_type: dict[str, list[float]] = {}
    nan: dict[str, int] = {}
    for row, (value, details) in zip(rows, scores):
        o = overall_score(value, details)
        by_type.setdefault(row["task"], [])
        if math.isnan(o):
            nan[row["task"]] = nan.get(row["task"], 0) + 1
        else:
            by_type[row["task"]].append(o)
    types = {t: {"mean_o": sum(v) / len(v) if v else None, "n": len(v) + nan.get(t, 0), "nan": nan.get(t, 0)}
             for t, v in sorted(by_type.items())}
    means = [t["mean_o"] for t in types.values() if t["mean_o"] is not None]
    return {
        "benchmark": "GEdit",
        "reward": reward.metadata(),
        "avg_k": avg_k,
        "rows": len(rows),
        "macro_o": sum(means) / len(means) if means else None,     # unweighted mean over task types, 0-10
        "types": types,
        "images": stats,
        "parse_failure_rate": stats["failures"] / stats["unique"] if stats["unique"] else 0.0,
    }
