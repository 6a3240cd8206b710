"""Synthetic editing tasks with exact ground truth: flat shapes on a flat background (data/shapes.py) and an
instruction to recolour, move or remove one shape, or to change the background colour.

Each task is deterministic from (seed, index) alone, so the first n tasks of a seed do not depend on how many
are asked for. A task keeps its full structure (canvas, background, shapes with kind / colour / cell / box,
and the edit) as a JSON-able `spec`, written into the manifest row, from which `ShapeTask.from_spec` rebuilds
it and a programmatic reward renders the exact target. Colours are distinct within a scene (shapes and
background), so a shape is named unambiguously by its colour and kind.

    tasks = make_tasks(64, seed=0, size=32)              # in memory
    sources, targets = task_images(tasks)                # uint8 [64, 3, 32, 32] each
    manifest = write_synthetic("runs/shapes", 64, seed=0, size=32, image_format="png")   # files + JSONL
"""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .manifest import EditRow, write_manifest
from .shapes import CELLS, MIN_SHAPE, PALETTE, SHAPE_KINDS, Shape, max_shape_size, place, render

EDIT_KINDS = ("recolor", "move", "remove", "background")
SPEC_VERSION = "shapes-v1"

_PHRASES = {
    "recolor": ("Change the color of the {name} to {color}.", "Make the {name} {color}.",
                "Recolor the {name} {color}."),
    "move": ("Move the {name} to the {cell}.", "Put the {name} in the {cell} of the image."),
    "remove": ("Remove the {name}.", "Delete the {name} from the image.", "Erase the {name}."),
    "background": ("Change the background to {color}.", "Make the background {color}.",
                   "Replace the {old} background with {color}."),
}


@dataclasses.dataclass(frozen=True)
class Edit:
    kind: str                          # one of EDIT_KINDS
    shape: int | None = None           # index of the edited shape (recolor, move, remove)
    color: str | None = None           # the new colour (recolor, background)
    cell: str | None = None            # the destination cell (move)


@dataclasses.dataclass(frozen=True)
class ShapeTask:
    id: str
    height: int
    width: int
    background: str
    shapes: tuple[Shape, ...]
    edit: Edit
    instruction: str

    # ---- the scene before and after ------------------------------------------------------------------------
    def edited_scene(self) -> tuple[str, tuple[Shape, ...]]:
        """(background, shapes) after the edit."""
        edit, shapes = self.edit, list(self.shapes)
        if edit.kind == "background":
            return edit.color, tuple(shapes)
        if edit.kind == "recolor":
            shapes[edit.shape] = dataclasses.replace(shapes[edit.shape], color=edit.color)
        elif edit.kind == "move":
            shapes[edit.shape] = shapes[edit.shape].moved_to(edit.cell, self.height, self.width)
        elif edit.kind == "remove":
            del shapes[edit.shape]
        else:
            raise ValueError(f"unknown edit kind {edit.kind!r}; choose from {EDIT_KINDS}")
        return self.background, tuple(shapes)

    def source_image(self) -> torch.Tensor:
        """uint8 [3, H, W]"""
        return render(self.height, self.width, self.background, self.shapes)

    def target_image(self) -> torch.Tensor:
        """uint8 [3, H, W]: exactly what the instruction asks for."""
        return render(self.height, self.width, *self.edited_scene())

    # ---- words -----------------------------------------------------------------------------------------------
    def shape_name(self, index: int) -> str:
        return f"{self.shapes[index].color} {self.shapes[index].kind}"

    @property
    def requirement(self) -> str:
        edit = self.edit
        if edit.kind == "background":
            return (f"The {self.background} background must become {edit.color}; every shape keeps its color, "
                    "shape, size and position.")
        name = self.shape_name(edit.shape)
        change = {"recolor": f"must become {edit.color}, keeping its shape, size and position",
                  "move": f"must move to the {edit.cell}, keeping its color, shape and size",
                  "remove": "must disappear, leaving plain background where it was"}[edit.kind]
        return f"The {name} {change}; everything else stays exactly the same."

    @property
    def principles(self) -> tuple[str, ...]:
        edit = self.edit
        others = [self.shape_name(i) for i in range(len(self.shapes)) if i != edit.shape]
        if edit.kind == "background":
            follow = [f"Follow: the background is {edit.color}"]
            keep = [f"Keep: the {name} is unchanged" for name in others]
        else:
            name = self.shape_name(edit.shape)
            follow = [{"recolor": f"Follow: the {name} is now {edit.color}",
                       "move": f"Follow: the {name} is in the {edit.cell}",
                       "remove": f"Follow: the {name} is gone"}[edit.kind]]
            if edit.kind == "recolor":
                follow.append(f"Keep: the {name}'s shape, size and position are unchanged")
            elif edit.kind == "move":
                follow.append(f"Keep: the {name}'s color, shape and size are unchanged")
            keep = [f"Keep: the {other} is unchanged" for other in others]
            keep.append(f"Keep: the background stays {self.background}")
        return (*follow, *keep, "Quality: flat colors with sharp edges and no artifacts")

    # ---- structure ---------------------------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        colors = {self.background, *(s.color for s in self.shapes), *([self.edit.color] if self.edit.color else [])}
        spec = {"generator": SPEC_VERSION, "height": self.height, "width": self.width, "background": self.background,
                "shapes": [dataclasses.asdict(s) for s in self.shapes],
                "edit": {k: v for k, v in dataclasses.asdict(self.edit).items() if v is not None},
                "colors": {name: list(PALETTE[name]) for name in sorted(colors)}}
        if self.edit.kind == "move":
            moved = self.shapes[self.edit.shape].moved_to(self.edit.cell, self.height, self.width)
            spec["edit"].update(top=moved.top, left=moved.left)
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, id: str = "", instruction: str = "") -> "ShapeTask":
        if spec.get("generator") != SPEC_VERSION:
            raise ValueError(f"not a {SPEC_VERSION} spec: generator={spec.get('generator')!r}")
        edit = {k: v for k, v in spec["edit"].items() if k in ("kind", "shape", "color", "cell")}
        return cls(id=id, height=spec["height"], width=spec["width"], background=spec["background"],
                   shapes=tuple(Shape(**s) for s in spec["shapes"]), edit=Edit(**edit), instruction=instruction)

    @classmethod
    def from_row(cls, row: EditRow) -> "ShapeTask":
        """The task a synthetic manifest row (or a loader batch's row) describes."""
        if row.spec is None:
            raise ValueError(f"row {row.id!r} has no spec: not a synthetic task")
        return cls.from_spec(row.spec, id=row.id, instruction=row.instruction)

    def to_row(self, source: Path, target: Path | None = None) -> EditRow:
        return EditRow(id=self.id, source=source, instruction=self.instruction, task_type=self.edit.kind,
                       requirement=self.requirement, principles=self.principles, target=target, spec=self.to_spec())


# ---- sampling ----------------------------------------------------------------------------------------------------
def make_task(seed: int, index: int, size: int | tuple[int, int] = 32, *, edits: Sequence[str] = EDIT_KINDS,
              max_shapes: int = 3) -> ShapeTask:
    """Task `index` of `seed`: 1..max_shapes shapes in distinct cells, distinct colours, one edit from `edits`."""
    height, width = (size, size) if isinstance(size, int) else size
    unknown = set(edits) - set(EDIT_KINDS)
    if unknown or not edits:
        raise ValueError(f"edits must be a non-empty subset of {EDIT_KINDS}, got {list(edits)}")
    if not 1 <= max_shapes <= len(CELLS) - 1:
        raise ValueError(f"max_shapes must be in 1..{len(CELLS) - 1} (a move needs a free cell), got {max_shapes}")
    rng = random.Random(f"editrl-shapes:{seed}:{index}")
    side = rng.randint(max(MIN_SHAPE, max_shape_size(height, width) // 2), max_shape_size(height, width))
    cells = rng.sample(CELLS, rng.randint(1, max_shapes))
    colors = rng.sample(sorted(PALETTE), len(cells) + 2)         # shapes, background, a new colour
    shapes = tuple(Shape(rng.choice(SHAPE_KINDS), color, cell, *place(cell, side, height, width), side)
                   for cell, color in zip(cells, colors))
    background, new_color = colors[len(cells)], colors[len(cells) + 1]
    kind = rng.choice(list(edits))
    target = rng.randrange(len(shapes))
    edit = {"recolor": Edit("recolor", shape=target, color=new_color),
            "move": Edit("move", shape=target, cell=rng.choice([c for c in CELLS if c not in cells])),
            "remove": Edit("remove", shape=target),
            "background": Edit("background", color=new_color)}[kind]
    name = f"{shapes[target].color} {shapes[target].kind}"
    instruction = rng.choice(_PHRASES[kind]).format(name=name, color=new_color, cell=edit.cell, old=background)
    return ShapeTask(f"shapes-{seed}-{index:06d}", height, width, background, shapes, edit, instruction)


def make_tasks(n: int, seed: int = 0, size: int | tuple[int, int] = 32, **options) -> list[ShapeTask]:
    """Tasks 0..n-1 of `seed` (options: edits, max_shapes)."""
    return [make_task(seed, index, size, **options) for index in range(n)]


def task_images(tasks: Sequence[ShapeTask]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources, targets), each uint8 [N, 3, H, W]; the tasks must share one canvas size."""
    if len({(t.height, t.width) for t in tasks}) > 1:
        raise ValueError("tasks of different canvas sizes cannot be stacked")
    return torch.stack([t.source_image() for t in tasks]), torch.stack([t.target_image() for t in tasks])


# ---- files -------------------------------------------------------------------------------------------------------
def write_synthetic(folder: str | os.PathLike, n: int, seed: int = 0, size: int | tuple[int, int] = 32, *,
                    image_format: str = "png", jpeg_quality: int = 95, manifest_name: str = "manifest.jsonl",
                    **options) -> Path:
    """Write n tasks to `folder`: sources/<id>.png|jpg, targets/<id>.png (always lossless) and a JSONL manifest
    whose rows carry task_type, requirement, principles, target and the structured spec. Returns the manifest
    path."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    folder = Path(folder)
    (folder / "sources").mkdir(parents=True, exist_ok=True)
    (folder / "targets").mkdir(parents=True, exist_ok=True)
    suffix = ".png" if image_format == "png" else ".jpg"
    rows = []
    for task in make_tasks(n, seed, size, **options):
        source, target = folder / "sources" / f"{task.id}{suffix}", folder / "targets" / f"{task.id}.png"
        save = {"quality": jpeg_quality, "subsampling": 0} if image_format == "jpeg" else {}   # 4:4:4 chroma
        Image.fromarray(task.source_image().permute(1, 2, 0).numpy()).save(source, format=image_format.upper(), **save)
        Image.fromarray(task.target_image().permute(1, 2, 0).numpy()).save(target, format="PNG")
        rows.append(task.to_row(source, target))
    return write_manifest(folder / manifest_name, rows)
