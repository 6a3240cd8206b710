"""Pictures of a run (Pillow only): candidate grids, before/after grids, the reward curve, atomic PNG writes.

    grid = candidate_grid(sources, candidates, rewards)       # one row per group: source | candidates + rewards
    grid = before_after_grid(sources, before, after, targets, rewards_before, rewards_after)
    plot = reward_curve(steps, rewards, eval_points=[(0, 0.72), (160, 0.92)])
    save_png(plot, run_dir / "reward_curve.png")

Grid layout (tests rely on it): images are upscaled `scale` times with nearest neighbour; the tile in row i,
column j has its top-left corner at (PAD + j * (W * scale + PAD), top + PAD + i * (H * scale + CAPTION_H + PAD)),
where top is HEADER_H for before_after_grid and 0 for candidate_grid; its caption sits in the CAPTION_H strip
below it. The reward curve's plot area is the image minus PLOT_MARGINS (left, top, right, bottom); the title
and legend sit in the top margin, so pixels of TRAIN_COLOR / EMA_COLOR / EVAL_COLOR inside the plot area are data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import write_atomic

PAD = 4
CAPTION_H = 14
HEADER_H = 16
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (30, 30, 30)
BEST_COLOR = (0, 130, 0)                   # the best reward of a group
NAN_COLOR = (190, 0, 0)

PLOT_MARGINS = (60, 36, 20, 42)            # left, top, right, bottom
AXIS_COLOR = (60, 60, 60)
GRID_COLOR = (228, 228, 228)
TRAIN_COLOR = (150, 190, 235)
EMA_COLOR = (20, 80, 180)
EVAL_COLOR = (230, 120, 20)


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)     # Pillow >= 10.1: a scalable bundled font
    except TypeError:
        return ImageFont.load_default()


def _hwc(image: torch.Tensor, scale: int) -> np.ndarray:
    """uint8 (or float in [0, 1]) [3, H, W] -> uint8 [H * scale, W * scale, 3], nearest-neighbour upscaled."""
    t = image.detach().cpu()
    if t.is_floating_point():
        t = (t.clamp(0, 1) * 255).round()
    a = t.to(torch.uint8).permute(1, 2, 0).numpy()                # [H, W, 3]
    return a.repeat(scale, axis=0).repeat(scale, axis=1)


def _fmt(reward) -> tuple[str, tuple[int, int, int]]:
    r = float(reward)
    return ("nan", NAN_COLOR) if math.isnan(r) else (f"{r:.2f}", TEXT_COLOR)


def _check(name: str, t: torch.Tensor, shape: tuple) -> None:
    if t.dim() != len(shape) or any(s is not None and d != s for d, s in zip(t.shape, shape)):
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def _grid(rows: list[list[tuple[np.ndarray, str | None, tuple]]], headers: Sequence[str] | None,
          tile_hw: tuple[int, int]) -> Image.Image:
    """Tiles [h, w, 3] laid out per the module docstring; each tile captioned with (text, colour) when text given."""
    h, w = tile_hw
    cols = max(len(r) for r in rows)
    top = HEADER_H if headers else 0
    width = PAD + cols * (w + PAD)
    height = top + PAD + len(rows) * (h + CAPTION_H + PAD)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for j, text in enumerate(headers or ()):
        draw.text((PAD + j * (w + PAD), 2), text, fill=TEXT_COLOR, font=font)
    for i, row in enumerate(rows):
        y = top + PAD + i * (h + CAPTION_H + PAD)
        for j, (tile, caption, color) in enumerate(row):
            x = PAD + j * (w + PAD)
            canvas.paste(Image.fromarray(tile), (x, y))
            if caption:
                draw.text((x + 1, y + h + 1), caption, fill=color, font=font)
    return canvas


def candidate_grid(sources: torch.Tensor, candidates: torch.Tensor, rewards: torch.Tensor, *, scale: int = 4,
                   max_groups: int = 8) -> Image.Image:
    """One row per group (at most max_groups): source | G candidates captioned with their rewards (best in green).

    sources uint8 [P, 3, H, W]; candidates uint8 [P, G, 3, H, W]; rewards float [P, G] (NaN shown as "nan").
    """
    _check("sources", sources, (None, 3, None, None))
    P, _, H, W = sources.shape
    _check("candidates", candidates, (P, None, 3, H, W))
    G = candidates.shape[1]
    rewards = torch.as_tensor(rewards, dtype=torch.float64).cpu()
    _check("rewards", rewards, (P, G))
    rows = []
    for p in range(min(P, max_groups)):
        r = rewards[p]                                                   # [G]
        best = int(torch.nan_to_num(r, nan=-math.inf).argmax()) if not bool(r.isnan().all()) else -1
        row = [(_hwc(sources[p], scale), "source", TEXT_COLOR)]
        for g in range(G):
            text, color = _fmt(r[g])
            row.append((_hwc(candidates[p, g], scale), text, BEST_COLOR if g == best else color))
        rows.append(row)
    return _grid(rows, None, (H * scale, W * scale))


def before_after_grid(sources: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                      targets: torch.Tensor | None = None, rewards_before: torch.Tensor | None = None,
                      rewards_after: torch.Tensor | None = None, *, scale: int = 4,
                      max_rows: int = 16) -> Image.Image:
    """Columns source | before RL | after RL | (target), one row per task, rewards under before / after.

    sources, before, after, targets uint8 [N, 3, H, W]; rewards_before, rewards_after float [N].
    """
    _check("sources", sources, (None, 3, None, None))
    N, _, H, W = sources.shape
    for name, t in (("before", before), ("after", after), ("targets", targets)):
        if t is not None:
            _check(name, t, (N, 3, H, W))
    rb = None if rewards_before is None else torch.as_tensor(rewards_before, dtype=torch.float64).reshape(-1)
    ra = None if rewards_after is None else torch.as_tensor(rewards_after, dtype=torch.float64).reshape(-1)
    for name, r in (("rewards_before", rb), ("rewards_after", ra)):
        if r is not None and r.numel() != N:
            raise ValueError(f"{name} must have {N} values (one per task), got {r.numel()}")
    headers = ["source", "before RL", "after RL"] + (["target"] if targets is not None else [])
    rows = []
    for n in range(min(N, max_rows)):
        row = [(_hwc(sources[n], scale), None, TEXT_COLOR)]
        for img, r in ((before, rb), (after, ra)):
            text, color = _fmt(r[n]) if r is not None else (None, TEXT_COLOR)
            row.append((_hwc(img[n], scale), text, color))
        if targets is not None:
            row.append((_hwc(targets[n], scale), None, TEXT_COLOR))
        rows.append(row)
    return _grid(rows, headers, (H * scale, W * scale))


def _nice_ticks(lo: float, hi: float, n: int = 5, min_step: float = 0.0) -> list[float]:
    """About n round-numbered ticks covering [lo, hi], spaced at least min_step apart."""
    raw = max((hi - lo) / max(n, 1), min_step)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_label(v: float, step: float) -> str:
    """A tick value with as many decimals as the tick spacing needs (2.5-spacings need one more)."""
    exp = math.floor(math.log10(step))
    digits = max(0, -exp + (1 if round(step / 10 ** exp, 6) == 2.5 else 0))
    return f"{0.0 if abs(v) < step * 1e-6 else v:.{digits}f}"


def _ema(values: list[float], smoothing: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing)."""
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out.append(acc / weight)
    return out


def reward_curve(steps: Sequence[int], rewards: Sequence[float], *, eval_points: Sequence[tuple[int, float]] = (),
                 title: str = "reward", size: tuple[int, int] = (640, 400),
                 smoothing: float | None = None) -> Image.Image:
    """Per-step training reward (NaN gaps skipped), an EMA over it, held-out eval points as markers.

    smoothing: the EMA weight; by default 0.6 for up to 20 points, rising to 0.9 for long runs.
    """
    steps = [float(s) for s in steps]
    rewards = [float(r) for r in rewards]
    if len(steps) != len(rewards):
        raise ValueError(f"steps and rewards differ in length: {len(steps)} vs {len(rewards)}")
    evals = [(float(s), float(r)) for s, r in eval_points if math.isfinite(float(r))]
    finite = [(s, r) for s, r in zip(steps, rewards) if math.isfinite(r)]

    width, height = size
    left, top, right, bottom = PLOT_MARGINS
    x0, y0, x1, y1 = left, top, width - right, height - bottom          # plot box in pixels
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font()

    xs = [s for s, _ in finite] + [s for s, _ in evals] or [s for s in steps if math.isfinite(s)] or [0.0]
    ys = [r for _, r in finite] + [r for _, r in evals] or [0.0, 1.0]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xhi - xlo < 1e-12:
        xlo, xhi = xlo - 1, xhi + 1
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = ylo - pad, yhi + pad

    def px(s: float, r: float) -> tuple[float, float]:
        return (x0 + (s - xlo) / (xhi - xlo) * (x1 - x0), y1 - (r - ylo) / (yhi - ylo) * (y1 - y0))

    # grid, ticks, axes
    xt, yt = _nice_ticks(xlo, xhi, min_step=1.0), _nice_ticks(ylo, yhi)           # steps are integers
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for v in xt:
        x = px(v, ylo)[0]
        draw.line([(x, y0), (x, y1)], fill=GRID_COLOR)
        label = _tick_label(v, xstep)
        draw.text((x - draw.textlength(label, font=font) / 2, y1 + 4), label, fill=TEXT_COLOR, font=font)
    for v in yt:
        y = px(xlo, v)[1]
        draw.line([(x0, y), (x1, y)], fill=GRID_COLOR)
        label = _tick_label(v, ystep)
        draw.text((x0 - 6 - draw.textlength(label, font=font), y - 6), label, fill=TEXT_COLOR, font=font)
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=AXIS_COLOR)
    draw.text(((x0 + x1) / 2 - 12, height - 18), "step", fill=TEXT_COLOR, font=font)

    # training reward: segments between consecutive finite points, lone points as dots
    segment: list[tuple[float, float]] = []
    for s, r in list(zip(steps, rewards)) + [(math.nan, math.nan)]:
        if math.isfinite(s) and math.isfinite(r):
            segment.append(px(s, r))
            continue
        if len(segment) > 1:
            draw.line(segment, fill=TRAIN_COLOR, width=1)
        elif len(segment) == 1:
            (x, y), = segment
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=TRAIN_COLOR)
        segment = []

    # EMA over the finite points
    if finite:
        if smoothing is None:
            smoothing = 0.6 if len(finite) <= 20 else min(0.9, 0.6 + 0.3 * (len(finite) - 20) / 80)
        smooth = _ema([r for _, r in finite], smoothing)
        pts = [px(s, r) for (s, _), r in zip(finite, smooth)]
        if len(pts) > 1:
            draw.line(pts, fill=EMA_COLOR, width=2)
        else:
            (x, y), = pts
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=EMA_COLOR)

    for s, r in evals:
        x, y = px(s, r)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=EVAL_COLOR, outline=AXIS_COLOR)

    # title and legend in the top margin
    draw.text((x0, 10), title, fill=TEXT_COLOR, font=_font(13))
    entries = [("train", TRAIN_COLOR), ("EMA", EMA_COLOR)] + ([("held-out eval", EVAL_COLOR)] if evals else [])
    lx = x1
    for text, color in reversed(entries):
        lx -= draw.textlength(text, font=font) + 22
        draw.line([(lx, 17), (lx + 14, 17)], fill=color, width=3)
        draw.text((lx + 17, 11), text, fill=TEXT_COLOR, font=font)
    if not finite and not evals:
        draw.text((x0 + 8, y0 + 8), "no finite rewards", fill=NAN_COLOR, font=font)
    return image


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically: a temp file in the same folder, fsync'd, then os.replace; returns the path."""
    return write_atomic(path, lambda handle: image.save(handle, format="PNG"))
