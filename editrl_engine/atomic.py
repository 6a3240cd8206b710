"""Atomic file writes: every result, checkpoint file, image and log rewrite goes through here.

The data goes to a temporary file in the target's folder, is flushed and fsync'd, made readable (0644; mkstemp
creates private files) and renamed over the target in one step, so a reader sees the old file or the new one,
never a torn one. On any error the temporary file is removed and the old file is left as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(handle) on a temporary binary file, then rename it over `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """obj as JSON (NaN or inf is an error: convert them to null first), newline-terminated."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
