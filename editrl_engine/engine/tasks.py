"""The training tasks of a run: manifest rows (or synthetic shape tasks), their group keys and source images.

    tasks = TaskSet.from_config(config.data)
    tasks.rows, tasks.keys                     # for the GroupSampler
    tasks.image(key)                           # uint8 [3, H, W], decoded once and cached

Synthetic tasks live in memory: their rows carry the structured spec (the programmatic reward reads it from the
rows it is given) and their group key hashes the source pixels. Manifest rows key on the sha256 of the source
file (data.manifest).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.manifest import EditRow, GroupKey, group_key, read_manifest
from ..data.synthetic import ShapeTask, make_task, make_tasks
from ..errors import InputError
from .config import DataConfig


@dataclasses.dataclass
class TaskSet:
    rows: list[EditRow]
    keys: list[GroupKey]
    images: dict[GroupKey, torch.Tensor | list[torch.Tensor]] = dataclasses.field(default_factory=dict)  # uint8 [3,H,W]

    @classmethod
    def synthetic(cls, tasks: Sequence[ShapeTask]) -> "TaskSet":
        rows, keys, images = [], [], {}
        for task in tasks:
            image = task.source_image()                                        # uint8 [3, H, W]
            key = _key(task, image)
            rows.append(task.to_row(Path(f"synthetic/{task.id}.png")))
            keys.append(key)
            images[key] = image
        return cls(rows, keys, images)

    @classmethod
    def from_manifest(cls, path: str | Path) -> "TaskSet":
        rows = read_manifest(path)
        return cls(rows, [group_key(row) for row in rows])

    @classmethod
    def from_config(cls, data: DataConfig, *, held_out: bool = False) -> "TaskSet":
        """The training tasks (or, held_out=True, the evaluation tasks) the config describes. Synthetic training
        tasks skip any task equal to a held-out one (data.exclude_eval) and draw further indices instead."""
        if data.manifest and not held_out:
            return cls.from_manifest(data.manifest)
        options = dict(edits=data.edits, max_shapes=data.max_shapes)
        if held_out:
            return cls.synthetic(make_tasks(data.eval_tasks, data.eval_seed, data.image_size, **options))
        excluded = set(cls.from_config(data, held_out=True).keys) if data.exclude_eval else set()
        chosen: list[ShapeTask] = []
        index = 0
        while len(chosen) < data.synthetic_tasks:
            task = make_task(data.synthetic_seed, index, data.image_size, **options)
            index += 1
            if _key(task) not in excluded:
                chosen.append(task)
        return cls.synthetic(chosen)

    def image(self, key: GroupKey, row: EditRow | None = None) -> torch.Tensor | list[torch.Tensor]:
        """The source image of a group, uint8 [3, H, W] (decoded from its file on first use); for a row with a
        list of sources, a list of such images in order."""
        if key not in self.images:
            row = row or self.rows[self.keys.index(key)]
            images = [_decode(row, path) for path in row.sources]
            self.images[key] = images if row.multi_source else images[0]
        return self.images[key]


SINGLE_SOURCE_FIXES = {
    "policy": "set policy.family = \"qwen-image-edit-plus\" or \"flux2\", which take several reference images",
    "reward": "use a VLM judge with the project's prompts (mllm_logit, verifier, or editscore with templates = "
              "\"project\"), which show every source image",
}


def require_sources_taken(tasks: TaskSet, model, role: str) -> None:
    """Before anything is rolled out: a task set with several source images per task needs a policy and a reward
    that take them (`multi_source`); an InputError names the task, the model and the fix otherwise."""
    row = next((r for r in tasks.rows if r.multi_source), None)
    if row is None or getattr(model, "multi_source", False):
        return
    name = getattr(model, "family", None) or getattr(model, "kind", None) or type(model).__name__
    raise InputError(f"task {row.id!r} has {len(row.sources)} source images, but the {role} ({name}) takes one "
                     f"per task: {SINGLE_SOURCE_FIXES[role]}")


def _decode(row: EditRow, path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError) as error:
        raise InputError(f"task {row.id!r}: cannot read source image {path}: {error}; fix or remove "
                         "the row from the manifest") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _key(task: ShapeTask, image: torch.Tensor | None = None) -> GroupKey:
    """A synthetic task's group key: its instruction and the sha256 of its source pixels."""
    image = task.source_image() if image is None else image
    return GroupKey(task.instruction, hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest())

