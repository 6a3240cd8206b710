"""Test doubles for the evaluation tests: a reward that scores by a known rule, and a writer of benchmark rows.

FakeReward scores an edited image by its top-left pixel (R, G, B): reward = R / 255, except R == 7 gives NaN
(a judge failure); details carry prompt_following = G / 25.5 and consistency = B / 25.5 (0-10), and "sc" / "pq"
equal to those when `with_subscores`. Every call and image size is recorded.
"""
from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import torch
from PIL import Image

from editrl_engine.reward.base import RewardBatch, RewardModel, check_triples

NAN_RED = 7


class FakeReward(RewardModel):
    kind = "fake"

    def __init__(self, with_subscores: bool = True, name: str = "fake"):
        self.with_subscores = with_subscores
        self.name = name
        self.calls = 0
        self.images = 0
        self.avg_ks: list[int] = []
        self.sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def score(self, sources, instructions, edited, avg_k: int = 1) -> RewardBatch:
        n = check_triples(sources, instructions, edited)
        self.calls += 1
        self.images += n
        self.avg_ks.append(avg_k)
        rewards, details = [], []
        for source, image in zip(sources, edited):
            self.sizes.append((source.size, image.size))
            r, g, b = image.convert("RGB").getpixel((0, 0))
            if r == NAN_RED:
                rewards.append(math.nan)
                details.append({"error": "unparseable"})
                continue
            rewards.append(r / 255)
            d = {"prompt_following": g / 25.5, "consistency": b / 25.5, "raw": [1, 2]}
            if self.with_subscores:
                d |= {"sc": g / 25.5, "pq": b / 25.5}
            details.append(d)
        reward = torch.tensor(rewards, dtype=torch.float32)
        return RewardBatch(reward, details, failures=int(torch.isnan(reward).sum()))

    def metadata(self) -> dict:
        return {"kind": self.kind, "name": self.name}


class NoEnsembleReward(FakeReward):
    def score(self, sources, instructions, edited) -> RewardBatch:
        return super().score(sources, instructions, edited)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_bench(folder: Path, rows: list[dict], name: str = "rows.jsonl", embed_first: bool = False) -> Path:
    """rows: {"task", "dimension", "first": rgb, "second": rgb, optional "instruction", "source": rgb}.
    Images are written as PNG files under folder/images (the first row's embedded as base64 when embed_first)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        paths = []
        for which, rgb in (("in", row.get("source", (128, 128, 128))), ("a", row["first"]), ("b", row["second"])):
            name_i = f"images/{i}_{which}.png"
            solid(rgb).save(folder / name_i)
            paths.append(name_i)
        record = {"key": f"k{i}", "instruction": row.get("instruction", f"edit {i}"), "input_image": paths[0],
                  "output_images": paths[1:], "task_type": row["task"], "dimension": row["dimension"]}
        if embed_first and i == 0:
            record["output_images"][0] = {"bytes": base64.b64encode(png_bytes(solid(row["first"]))).decode()}
        lines.append(json.dumps(record))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path
