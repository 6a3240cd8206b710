"""Edit manifests: JSONL files with one editing task per line, and the group key of a task.

A row holds `id`, `source` (an image path, or a non-empty list of image paths for an edit of several
source images), `instruction`, and optionally `task_type`, `requirement`,
`principles` (list of strings), `target` (ground-truth image path) and `spec` (a JSON object: a structured
task description, e.g. the synthetic generator's, that a programmatic reward can verify exactly). Paths in the
file are relative to the manifest's folder (absolute paths are kept as they are). Reading validates every row
and raises one ManifestError listing each bad row by line number and field; writing is atomic (a temporary
file in the same folder, then a rename).

The group key of a task is (instruction, sha256 of the source image's bytes): two rows with the same
instruction on the same image belong to one group, even when their files have different names, and equal
instructions on different images do not. A row with a list of sources keys on the sha256 of every source, in
order, joined by commas (a one-image row's key is the plain digest, as always).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError

REQUIRED_FIELDS = ("id", "source", "instruction")
OPTIONAL_FIELDS = ("task_type", "requirement", "principles", "target", "spec")


@dataclasses.dataclass(frozen=True)
class EditRow:
    """One editing task. `source` and `target` are paths as the program sees them (already joined to the
    manifest's folder when read from a file)."""
    id: str
    source: Path | tuple[Path, ...]
    instruction: str
    task_type: str | None = None
    requirement: str | None = None
    principles: tuple[str, ...] = ()
    target: Path | None = None
    spec: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    @property
    def sources(self) -> tuple[Path, ...]:
        """The source image paths, in order (one for a single-source row)."""
        return self.source if isinstance(self.source, tuple) else (self.source,)

    @property
    def multi_source(self) -> bool:
        return isinstance(self.source, tuple)

    def to_json(self, folder: Path | None = None) -> dict[str, Any]:
        """The row as a JSON object; paths inside `folder` are written relative to it."""
        source: Any = ([_relative(p, folder) for p in self.source] if isinstance(self.source, tuple)
                       else _relative(self.source, folder))
        out: dict[str, Any] = {"id": self.id, "source": source, "instruction": self.instruction}
        if self.task_type is not None:
            out["task_type"] = self.task_type
        if self.requirement is not None:
            out["requirement"] = self.requirement
        if self.principles:
            out["principles"] = list(self.principles)
        if self.target is not None:
            out["target"] = _relative(self.target, folder)
        if self.spec is not None:
            out["spec"] = self.spec
        return out


class ManifestError(InputError):
    """Bad manifest rows. `problems` holds (line number, field or None, message) for each one."""

    def __init__(self, path: Path | str, problems: Sequence[tuple[int, str | None, str]]):
        self.path = Path(path)
        self.problems = list(problems)
        shown = [f"  line {line}" + (f", field {field!r}" if field else "") + f": {message}"
                 for line, field, message in self.problems[:20]]
        if len(self.problems) > 20:
            shown.append(f"  ... and {len(self.problems) - 20} more")
        super().__init__(f"{self.path}: {len(self.problems)} bad manifest row(s):\n" + "\n".join(shown))


def parse_row(obj: Any, folder: Path, line: int = 0) -> tuple[EditRow | None, list[tuple[int, str | None, str]]]:
    """Validate one decoded JSON object. Returns (row or None, problems as (line, field, message))."""
    if not isinstance(obj, dict):
        return None, [(line, None, f"a row must be a JSON object, got {type(obj).__name__}")]
    problems = []

    def fail(field: str | None, message: str) -> None:
        problems.append((line, field, message))

    for field in REQUIRED_FIELDS:
        value = obj.get(field)
        if field not in obj:
            fail(field, "missing (required)")
        elif field == "source" and isinstance(value, list):
            if not value or not all(isinstance(p, str) and p.strip() for p in value):
                fail(field, f"must be a non-empty string or a non-empty list of non-empty strings, got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            fail(field, f"must be a non-empty string, got {value!r}")
    for field in sorted(set(obj) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)):
        fail(field, f"unknown field (known: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}; "
                    "put extra structured data under 'spec')")
    for field in ("task_type", "requirement", "target"):
        value = obj.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            fail(field, f"must be a non-empty string or null, got {value!r}")
    principles = obj.get("principles")
    if principles is not None and (not isinstance(principles, list)
                                   or not all(isinstance(p, str) and p.strip() for p in principles)):
        fail("principles", f"must be a list of non-empty strings, got {principles!r}")
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        fail("spec", f"must be a JSON object or null, got {type(spec).__name__}")
    if problems:
        return None, problems
    return EditRow(
        id=obj["id"], instruction=obj["instruction"],
        source=(tuple(_resolve(p, folder) for p in obj["source"]) if isinstance(obj["source"], list)
                else _resolve(obj["source"], folder)),
        task_type=obj.get("task_type"), requirement=obj.get("requirement"),
        principles=tuple(principles or ()),
        target=_resolve(obj["target"], folder) if obj.get("target") is not None else None,
        spec=spec,
    ), []


def read_manifest(path: str | os.PathLike) -> list[EditRow]:
    """All rows of a JSONL manifest, in file order (blank lines are skipped). Raises ManifestError naming
    every bad line and field (invalid JSON, missing or mistyped fields, unknown fields, duplicate ids)."""
    path = Path(path)
    folder = path.parent
    rows: list[EditRow] = []
    problems: list[tuple[int, str | None, str]] = []
    first_line_of_id: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append((line_number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            row, row_problems = parse_row(obj, folder, line_number)
            problems += row_problems
            if row is None:
                continue
            if row.id in first_line_of_id:
                problems.append((line_number, "id", f"duplicate id {row.id!r} (first on line "
                                                    f"{first_line_of_id[row.id]})"))
                continue
            first_line_of_id[row.id] = line_number
            rows.append(row)
    if problems:
        raise ManifestError(path, problems)
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[EditRow]) -> Path:
    """Write rows as JSONL, paths relative to the manifest's folder where they lie inside it. Atomic: the
    file appears complete or not at all. Raises ManifestError on duplicate ids."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    lines, seen = [], {}
    for index, row in enumerate(rows, start=1):
        if row.id in seen:
            raise ManifestError(path, [(index, "id", f"duplicate id {row.id!r} (first in row {seen[row.id]})")])
        seen[row.id] = index
        lines.append(json.dumps(row.to_json(folder), ensure_ascii=False, sort_keys=False))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ---- group keys ----------------------------------------------------------------------------------------------
class GroupKey(NamedTuple):
    """What the G samples of a group share: the instruction and the source image's content hash."""
    instruction: str
    source_sha256: str


def image_digest(data: bytes | bytearray | memoryview) -> str:
    """sha256 hex digest of an encoded image's bytes."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached while the file's size and modification time stay the same."""
    stat = os.stat(path)
    return _cached_file_digest(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _cached_file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def group_key(row: EditRow, source_sha256: str | None = None) -> GroupKey:
    """(instruction, sha256 of the source file's bytes). Pass `source_sha256` when it is already known (a
    loader batch carries it) to avoid reading the file again. A multi-source row's digest is the sha256 of
    every source file, in order, joined by commas."""
    return GroupKey(row.instruction, source_sha256 or sources_digest([file_digest(p) for p in row.sources]))


def sources_digest(digests: Sequence[str]) -> str:
    """The group-key digest of a row's sources: the one digest itself, or several joined by commas."""
    return ",".join(digests)


# ---- paths ---------------------------------------------------------------------------------------------------
def _resolve(value: str, folder: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else folder / path


def _relative(path: Path, folder: Path | None) -> str:
    if folder is None:
        return os.fspath(path)
    absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return os.fspath(absolute)
