"""The verifier's training data: SFT rows (a judged edit with its reasoning trace) and preference rows (two edits of
one task, the preferred first), read from JSONL manifests with errors that name the line and the field.

    {"sources": ["src.png"], "edited": "out.png", "instruction": "...", "principles": ["follow: ..."], "trace": "..."}
    {"sources": ["src.png"], "instruction": "...", "principles": [...], "preferred": "a.png", "rejected": "b.png"}

`sources` may also be one path (`source`); paths are relative to the manifest's folder. `trace` is the judge's
whole answer in the verifier's verdict format (reward/verifier_prompts.py), which the verifier's parser must read.
Images are paths, PIL images, uint8 tensors or arrays, or eval ImageRefs (the EditReward-Bench reader's).
`from_editreward_bench` turns EditReward-Bench rows (eval/editreward_bench.read_rows) into preference rows.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError
from ..reward import verifier_prompts as vp
from ..vlm.images import as_rgb_image


@dataclasses.dataclass(frozen=True)
class SftRow:
    sources: tuple                          # the source image(s)
    edited: Any
    instruction: str
    principles: tuple[vp.Principle, ...]
    trace: str                              # the verdict answer the model learns to write


@dataclasses.dataclass(frozen=True)
class PreferenceRow:
    sources: tuple
    instruction: str
    principles: tuple[vp.Principle, ...]
    preferred: Any
    rejected: Any


def load_image(image) -> Image.Image:
    """Any image form the rows hold, as an RGB PIL image."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                return opened.convert("RGB")
        except OSError as error:
            raise InputError(f"cannot read image {image}: {error}") from None
    if hasattr(image, "load") and hasattr(image, "digest"):                # eval.score_cache.ImageRef
        return image.load()
    return as_rgb_image(image)


def _lines(path: Path):
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{number}: a row must be a JSON object")
        yield f"{path}:{number}", obj


def _text(obj: dict, field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {field!r} must be a non-empty string")
    return value


def _path(value: Any, folder: Path, where: str, field: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: field {field!r} must be an image path, got {value!r:.60}")
    path = Path(value) if Path(value).is_absolute() else folder / value
    if not path.is_file():
        raise InputError(f"{where}: field {field!r}: image {path} does not exist")
    return path


def _sources(obj: dict, folder: Path, where: str) -> tuple[Path, ...]:
    value = obj.get("sources", obj.get("source"))
    values = value if isinstance(value, list) else [value]
    if not values or value is None:
        raise InputError(f"{where}: field 'sources' must be an image path or a non-empty list of them")
    return tuple(_path(v, folder, where, f"sources[{i}]") for i, v in enumerate(values))


def _principles(obj: dict, where: str) -> tuple[vp.Principle, ...]:
    try:
        return vp.as_principles(obj.get("principles") or [])
    except ValueError as error:
        raise InputError(f"{where}: field 'principles': {error}") from None


def read_sft(path: str | Path) -> list[SftRow]:
    path = Path(path)
    rows = []
    for where, obj in _lines(path):
        sources = _sources(obj, path.parent, where)
        edited = _path(obj.get("edited"), path.parent, where, "edited")
        instruction, principles = _text(obj, "instruction", where), _principles(obj, where)
        trace = _text(obj, "trace", where)
        _, error = vp.parse_verdicts(trace, len(principles))
        if error:
            raise InputError(f"{where}: field 'trace' is not a verdict the verifier's parser reads ({error})")
        rows.append(SftRow(sources, edited, instruction, principles, trace))
    return rows


def read_preferences(path: str | Path) -> list[PreferenceRow]:
    path = Path(path)
    rows = []
    for where, obj in _lines(path):
        rows.append(PreferenceRow(
            _sources(obj, path.parent, where), _text(obj, "instruction", where), _principles(obj, where),
            _path(obj.get("preferred"), path.parent, where, "preferred"),
            _path(obj.get("rejected"), path.parent, where, "rejected")))
    return rows


def from_editreward_bench(data: str | Path, principles: Sequence | None = None, limit: int | None = None
                          ) -> list[PreferenceRow]:
    """EditReward-Bench rows (a folder or file the eval reader takes) as preference rows: the input image, the
    instruction, the preferred and the other output. principles: the same principles for every row (the benchmark
    has none); without them the verifier generates its own when judging."""
    from ..eval.editreward_bench import read_rows
    given = vp.as_principles(principles) if principles else ()
    return [PreferenceRow((row["input"],), row["instruction"], given, row["outputs"][0], row["outputs"][1])
            for row in read_rows(data, limit=limit)]


def verdict_trace(principles: Sequence[vp.Principle], verdicts: Sequence[tuple[str, float, str]], final: float,
                  reasoning: str) -> str:
    """A trace in the verifier's verdict format: one (verdict, score 0-10, reason) per principle and a final score
    (empty reasons and reasoning are left out)."""
    entries = [{"id": i, "verdict": v, "score": s, **({"reason": r} if r else {})}
               for i, (v, s, r) in enumerate(verdicts, 1)]
    return json.dumps({**({"reasoning": reasoning} if reasoning else {}), "verdicts": entries, "final_score": final},
                      separators=(", ", ": "))
