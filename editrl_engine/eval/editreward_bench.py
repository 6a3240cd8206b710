"""EditReward-Bench: read the published rows from a local folder and measure a reward's pairwise accuracy.

A row is (key, instruction, input_image, output_images = [preferred, other], task_type, dimension). The
reward scores both edits; the row is correct iff score(preferred) > score(other) strictly (a tie or a NaN on
either side is wrong). Reported per dimension (prompt_following, consistency, overall): accuracy per task, the
macro mean over the tasks present (`complete` says whether all 13 are), and the macro mean of each task group.
The score compared for a row of the prompt_following / consistency dimension is that sub-score from the
reward's details when it gives one (DIMENSION_KEYS), otherwise the overall reward.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..reward.base import RewardModel
from .score_cache import BenchDataError, ImageRef, ScoreCache, score_triples

TASKS = ("subject-add", "subject-remove", "subject-replace", "color_alter", "material_alter", "style_change",
         "tone_transfer", "background_change", "extract", "ps_human", "text_change", "motion_change", "compose")
GROUPS = {
    "Subject": ("subject-add", "subject-remove", "subject-replace"),
    "Appearance": ("color_alter", "material_alter", "style_change", "tone_transfer"),
    "Scene": ("background_change", "extract"),
    "Advanced": ("ps_human", "text_change", "motion_change", "compose"),
}
DIMENSIONS = ("prompt_following", "consistency", "overall")
DIMENSION_KEYS = {"prompt_following": ("prompt_following", "success"),      # details keys, first found wins
                  "consistency": ("consistency", "over_editing"),
                  "overall": ()}
_CANONICAL = {name.replace("-", "_").lower(): name for name in TASKS}


def canonical_task(name: Any, where: str) -> str:
    task = _CANONICAL.get(str(name).strip().replace("-", "_").lower()) if isinstance(name, str) else None
    if task is None:
        raise BenchDataError(f"{where}: unknown task_type {name!r}; expected one of {', '.join(TASKS)}")
    return task


# ---- reading ---------------------------------------------------------------------------------------------------
def data_files(data: str | Path) -> list[Path]:
    """The .parquet / .jsonl files of a folder (recursively, sorted), or the one file given."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise BenchDataError(f"{data}: no such file or folder")
    files = sorted(p for p in data.rglob("*") if p.suffix in (".parquet", ".jsonl") and p.is_file())
    if not files:
        raise BenchDataError(f"{data}: no .parquet or .jsonl files in this folder")
    return files


def _raw_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise BenchDataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), "
                                 "or convert the rows to JSONL") from error
        return pq.read_table(path).to_pylist()
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchDataError(f"{path} row {number}: not valid JSON ({error.msg})") from error
    return rows


def read_rows(data: str | Path, limit: int | None = None) -> list[dict]:
    """Validated rows: {"key", "instruction", "input", "outputs": (preferred, other), "task", "dimension"}."""
    rows = []
    for path in data_files(data):
        for number, obj in enumerate(_raw_rows(path), 1):
            where = f"{path} row {number}"
            if not isinstance(obj, dict):
                raise BenchDataError(f"{where}: a row must be an object, got {type(obj).__name__}")
            missing = [f for f in ("instruction", "input_image", "output_images", "task_type", "dimension")
                       if obj.get(f) is None]
            if missing:
                raise BenchDataError(f"{where}: missing field(s) {', '.join(missing)}")
            if not isinstance(obj["instruction"], str) or not obj["instruction"].strip():
                raise BenchDataError(f"{where}: instruction must be a non-empty string")
            outputs = obj["output_images"]
            if not isinstance(outputs, (list, tuple)) or len(outputs) != 2:
                raise BenchDataError(f"{where}: output_images must list two images (preferred first), "
                                     f"got {outputs!r:.80}")
            dimension = obj["dimension"]
            if dimension not in DIMENSIONS:
                raise BenchDataError(f"{where}: dimension {dimension!r} is not one of {', '.join(DIMENSIONS)}")
            rows.append({
                "key": str(obj.get("key", f"{path.name}:{number}")),
                "instruction": obj["instruction"],
                "input": ImageRef.parse(obj["input_image"], path.parent, f"{where} input_image"),
                "outputs": tuple(ImageRef.parse(o, path.parent, f"{where} output_images[{i}]")
                                 for i, o in enumerate(outputs)),
                "task": canonical_task(obj["task_type"], where),
                "dimension": dimension,
            })
            if limit is not None and len(rows) >= limit:
                return rows
    return rows


# ---- scoring -----------------------------------------------------------------------------------------------------
def row_score(dimension: str, reward: float, details: dict) -> tuple[float, str]:
    """(the score compared for this dimension, where it came from: a details key or "reward")."""
    for key in DIMENSION_KEYS[dimension]:
        value = details.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), key
    return reward, "reward"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(rows: Sequence[dict], pair_scores: Sequence[tuple[tuple[float, dict], tuple[float, dict]]]) -> dict:
    """Accuracies from the rows and their ((reward, details) preferred, (reward, details) other)."""
    counts: dict[str, dict[str, dict[str, int]]] = {d: {} for d in DIMENSIONS}
    sources: dict[str, dict[str, int]] = {d: {} for d in DIMENSIONS}
    for row, (first, second) in zip(rows, pair_scores):
        (a, source), (b, _) = row_score(row["dimension"], *first), row_score(row["dimension"], *second)
        c = counts[row["dimension"]].setdefault(row["task"], {"n": 0, "correct": 0, "ties": 0, "nan": 0})
        c["n"] += 1
        if math.isnan(a) or math.isnan(b):
            c["nan"] += 1
        elif a == b:
            c["ties"] += 1
        elif a > b:
            c["correct"] += 1
        sources[row["dimension"]][source] = sources[row["dimension"]].get(source, 0) + 1
    result = {}
    for dimension in DIMENSIONS:
        tasks = {t: {**c, "accuracy": c["correct"] / c["n"]} for t, c in sorted(counts[dimension].items(),
                                                                              key=lambda kv: TASKS.index(kv[0]))}
        if not tasks:
            continue
        accuracy = {t: v["accuracy"] for t, v in tasks.items()}
        result[dimension] = {
            "macro": _mean(list(accuracy.values())),
            "complete": len(tasks) == len(TASKS),
            "missing_tasks": [t for t in TASKS if t not in tasks],
            "groups": {g: _mean([accuracy[t] for t in members if t in accuracy]) for g, members in GROUPS.items()},
            "tasks": tasks,
            "rows": sum(v["n"] for v in tasks.values()),
            "score_from": sources[dimension],
        }
    return result


def evaluate(reward: RewardModel, rows: Sequence[dict], *, avg_k: int = 1, cache: ScoreCache | None = None,
             batch_size: int = 8, progress: bool = True) -> dict:
    """Score every (input, instruction, output) image once and return the accuracies (JSON-ready)."""
    if not rows:
        raise BenchDataError("no benchmark rows to evaluate")
    triples = [(row["input"], row["instruction"], out) for row in rows for out in row["outputs"]]
    scores, stats = score_triples(reward, triples, cache=cache, avg_k=avg_k, batch_size=batch_size,
                                  progress=progress, desc="EditReward-Bench")
    pairs = [(scores[2 * i], scores[2 * i + 1]) for i in range(len(rows))]
    dimensions = summarize(rows, pairs)
    overall = dimensions.get("overall")
    return {
        "benchmark": "EditReward-Bench",
        "reward": reward.metadata(),
        "avg_k": avg_k,
        "rows": len(rows),
        "headline": {"dimension": "overall", "macro": overall["macro"] if overall else None},   # the published one
        "dimensions": dimensions,
        "images": stats,                                         # unique / scored / cached / failures
        "parse_failure_rate": stats["failures"] / stats["unique"] if stats["unique"] else 0.0,
    }
