"""What a training run records: metrics.jsonl, TensorBoard scalars and images, a progress bar, log.txt.

    with RunLogger(run_dir, total_steps=cfg.run.steps, start_step=step, enabled=rank == 0) as log:
        log.log_step(step, {"reward_mean": 0.71, "images_per_s": 12.3, "time_rollout": 1.2})
        log.log_images(step, "candidates", figures.candidate_grid(sources, candidates, rewards))
        log.log_text("checkpoint saved")
        log.log_warning("the gold reward fell")               # stderr and log.txt, as 'WARNING: ...'
    rows = read_metrics(run_dir / "metrics.jsonl")          # [{"step": 0, "reward_mean": 0.71, ...}, ...]

metrics.jsonl holds one JSON object per step, flushed and fsync'd line by line, NaN / inf written as null.
On resume (start_step > 0) lines with step >= start_step are dropped first (atomic rewrite), so a resumed run
has exactly one line per step. TensorBoard tags group keys by the prefix before the first '_'
("reward_mean" -> "reward/mean"); TensorBoard is optional and its absence is logged once.
With enabled=False (non-zero ranks) every method is a no-op and nothing is written.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..atomic import write_text_atomic
from .figures import save_png

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
TB_DIR = "tb"
IMAGES_DIR = "images"


def tb_tag(key: str) -> str:
    """The TensorBoard tag for a metric key: 'reward_mean' -> 'reward/mean'; keys with '/' or no '_' unchanged."""
    if "/" in key or "_" not in key.strip("_"):
        return key
    head, tail = key.split("_", 1)
    return f"{head}/{tail}" if head and tail else key


def _json_value(value: Any) -> Any:
    """A metric value as JSON: numbers (python, numpy, 0-d tensors) as int / float, NaN and inf as None."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _parse_lines(text: str, path: Path) -> list[tuple[str, dict]]:
    """(raw line, row) pairs; a broken last line (a crash mid-write) is dropped, a broken earlier one is an error."""
    lines = [(i, line) for i, line in enumerate(text.split("\n")) if line.strip()]
    rows = []
    for n, (i, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not an object with a 'step'")
        except ValueError as err:
            if n == len(lines) - 1:
                continue
            raise ValueError(f"{path}: line {i + 1} is not a metrics row: {err}") from None
        rows.append((line, row))
    return rows


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (a run folder is accepted too); null -> nan; a truncated last line is ignored."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows = _parse_lines(path.read_text(encoding="utf-8"), path)
    return [{k: (math.nan if v is None else v) for k, v in row.items()} for _, row in rows]


def _to_pil(image: torch.Tensor | Image.Image) -> Image.Image:
    """A PIL RGB image from PIL or a tensor: uint8 [3, H, W] / [H, W, 3] / [H, W], or float in [0, 1]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    t = image.detach().cpu()
    if t.is_floating_point():
        t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
    if t.dim() == 3 and t.shape[0] in (1, 3):
        t = t.permute(1, 2, 0)                                     # [C, H, W] -> [H, W, C]
    if t.dim() == 3 and t.shape[-1] == 1:
        t = t[..., 0]                                              # [H, W, 1] -> [H, W]
    if t.dim() not in (2, 3) or (t.dim() == 3 and t.shape[-1] != 3):
        raise ValueError(f"image tensor must be [3, H, W], [H, W, 3] or [H, W], got shape {tuple(image.shape)}")
    return Image.fromarray(t.to(torch.uint8).numpy()).convert("RGB")


class RunLogger:
    """One run's records (see the module docstring). Use as a context manager or call close()."""

    def __init__(self, out_dir: str | Path, *, total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 progress: bool = True, enabled: bool = True, desc: str = "train"):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.metrics_path = self.out_dir / METRICS_FILE
        self._file = None
        self._log = None
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.metrics_path.exists():
            self._truncate_from(start_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")
        self._log = open(self.out_dir / LOG_FILE, "a", encoding="utf-8")
        self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True,
                         disable=not progress)
        if tensorboard:
            try:
                import tensorboard  # noqa: F401  (torch's SummaryWriter needs the package)
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.log_text("TensorBoard is off: the tensorboard package is missing (pip install tensorboard)")
            else:
                self._writer = SummaryWriter(str(self.out_dir / TB_DIR),
                                             purge_step=start_step if start_step > 0 else None)

    def _truncate_from(self, start_step: int) -> None:
        """Rewrite metrics.jsonl atomically keeping only rows with step < start_step (and no broken last line)."""
        rows = _parse_lines(self.metrics_path.read_text(encoding="utf-8"), self.metrics_path)
        kept = [line for line, row in rows if row["step"] < start_step]
        write_text_atomic(self.metrics_path, "".join(line + "\n" for line in kept))

    @property
    def tensorboard_on(self) -> bool:
        return self._writer is not None

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One metrics.jsonl line {"step": step, **metrics}, the TensorBoard scalars, one tick of the bar."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({str(k): _json_value(v) for k, v in metrics.items() if k != "step"})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and not isinstance(value, (str, bool)):
                    self._writer.add_scalar(tb_tag(key), math.nan if value is None else value, int(step))
        postfix = {}
        for key, label in (("reward_mean", "reward"), ("images_per_s", "img/s")):
            if isinstance(row.get(key), (int, float)):
                postfix[label] = f"{row[key]:.3f}" if key == "reward_mean" else f"{row[key]:.1f}"
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def log_images(self, step: int, tag: str, image: torch.Tensor | Image.Image) -> Path | None:
        """A TensorBoard image and out_dir/images/{tag}-{step:06d}.png (atomic); returns the PNG path."""
        if not self.enabled:
            return None
        pil = _to_pil(image)
        path = save_png(pil, self.out_dir / IMAGES_DIR / f"{tag.replace('/', '_')}-{int(step):06d}.png")
        if self._writer is not None:
            self._writer.add_image(tag, np.asarray(pil), int(step), dataformats="HWC")   # [H, W, 3] uint8
        return path

    def log_text(self, message: str) -> None:
        """Printed above the bar (tqdm.write) and appended to out_dir/log.txt with a timestamp."""
        self._say(message)

    def log_warning(self, message: str) -> None:
        """A warning: printed to stderr (above the bar) and appended to out_dir/log.txt as 'WARNING: ...'."""
        self._say(f"WARNING: {message}", file=sys.stderr)

    def _say(self, message: str, file=None) -> None:
        if not self.enabled:
            return
        tqdm.write(message, file=file)
        self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self._log.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for name in ("_file", "_log"):
            f = getattr(self, name)
            if f is not None:
                f.close()
                setattr(self, name, None)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.enabled = False

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
