"""Synthetic editing tasks: deterministic from the seed, and every target is exactly what its instruction asks.

The pixel checks find shapes by their colours in the rendered source (colours are unique in a scene) and use
the grid rule (cell row i spans [i*H//3, (i+1)*H//3)) written out here, not the generator's own helpers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.data import EDIT_KINDS, ShapeTask, make_task, make_tasks, read_manifest, task_images, write_synthetic
from editrl_engine.data.shapes import shape_mask

CELL_NAMES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
SIZES = [16, 23, 32, 64, (24, 40)]


def colour_mask(image: torch.Tensor, rgb) -> torch.Tensor:
    """bool [H, W]: pixels of image [3, H, W] that are exactly rgb."""
    return (image == torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1)).all(dim=0)


def bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def cell_box(cell: str, height: int, width: int) -> tuple[int, int, int, int]:
    row, col = divmod(CELL_NAMES.index(cell), 3)
    return row * height // 3, (row + 1) * height // 3, col * width // 3, (col + 1) * width // 3


def unchanged_outside(source, target, changed: torch.Tensor) -> bool:
    return torch.equal(source[:, ~changed], target[:, ~changed])


def check_task(task: ShapeTask, source: torch.Tensor, target: torch.Tensor) -> None:
    spec = task.to_spec()
    colors, edit = spec["colors"], spec["edit"]
    assert source.shape == target.shape == (3, task.height, task.width) and source.dtype == torch.uint8
    background = colour_mask(source, colors[spec["background"]])
    assert background.any()
    masks = [colour_mask(source, colors[s["color"]]) for s in spec["shapes"]]
    assert all(m.any() for m in masks)
    assert int(sum(m.sum() for m in masks) + background.sum()) == task.height * task.width     # nothing else
    for shape, mask in zip(spec["shapes"], masks):              # each shape lies inside its own cell
        y0, y1, x0, x1 = cell_box(shape["cell"], task.height, task.width)
        top, bottom, left, right = bbox(mask)
        assert y0 < top and bottom < y1 and x0 < left and right < x1

    if edit["kind"] == "background":
        assert edit["color"] in task.instruction
        assert (target[:, background] == torch.tensor(colors[edit["color"]], dtype=torch.uint8).view(3, 1)).all()
        assert unchanged_outside(source, target, background)
        return
    shape, mask = spec["shapes"][edit["shape"]], masks[edit["shape"]]
    assert f"{shape['color']} {shape['kind']}" in task.instruction
    if edit["kind"] == "recolor":
        assert edit["color"] in task.instruction
        assert torch.equal(colour_mask(target, colors[edit["color"]]), mask)
        assert unchanged_outside(source, target, mask)
    elif edit["kind"] == "remove":
        assert not colour_mask(target, colors[shape["color"]]).any()
        assert colour_mask(target, colors[spec["background"]])[mask].all()
        assert unchanged_outside(source, target, mask)
    elif edit["kind"] == "move":
        assert edit["cell"] in task.instruction and edit["cell"] != shape["cell"]
        moved = colour_mask(target, colors[shape["color"]])
        top, bottom, left, right = bbox(mask)
        new_top, new_bottom, new_left, new_right = bbox(moved)
        dy, dx = new_top - top, new_left - left
        assert torch.equal(moved, torch.roll(mask, shifts=(dy, dx), dims=(0, 1)))   # same pixels, translated
        y0, y1, x0, x1 = cell_box(edit["cell"], task.height, task.width)
        assert y0 < new_top and new_bottom < y1 and x0 < new_left and new_right < x1
        assert abs((new_top - y0) - (y1 - new_bottom)) <= 1 and abs((new_left - x0) - (x1 - new_right)) <= 1
        assert colour_mask(target, colors[spec["background"]])[mask].all()          # the old place is cleared
        assert unchanged_outside(source, target, mask | moved)
    else:
        raise AssertionError(edit)


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_every_target_is_exactly_what_the_instruction_asks(size):
    tasks = make_tasks(60, seed=11, size=size)
    assert {t.edit.kind for t in tasks} == set(EDIT_KINDS)
    sources, targets = task_images(tasks)                                           # [N, 3, H, W] each
    for task, source, target in zip(tasks, sources, targets):
        check_task(task, source, target)


def test_tasks_are_deterministic_from_seed_and_index():
    first, again = make_tasks(12, seed=5, size=32), make_tasks(12, seed=5, size=32)
    assert first == again
    assert make_tasks(4, seed=5, size=32) == first[:4]                              # independent of n
    assert make_task(5, 7, 32) == first[7]
    assert torch.equal(task_images(first)[0], task_images(again)[0])
    other = make_tasks(12, seed=6, size=32)
    assert [t.instruction for t in other] != [t.instruction for t in first]


def test_spec_rebuilds_the_task():
    for task in make_tasks(20, seed=2, size=(24, 40)):
        rebuilt = ShapeTask.from_spec(task.to_spec(), id=task.id, instruction=task.instruction)
        assert rebuilt == task
        assert torch.equal(rebuilt.target_image(), task.target_image())


def test_edit_and_shape_options():
    tasks = make_tasks(30, seed=1, size=16, edits=["move"], max_shapes=1)
    assert all(t.edit.kind == "move" and len(t.shapes) == 1 for t in tasks)
    with pytest.raises(ValueError, match="edits"):
        make_task(0, 0, 32, edits=["rotate"])
    with pytest.raises(ValueError, match=">= 15"):
        make_task(0, 0, 12)


def test_shape_masks():
    assert shape_mask("square", 3).all()
    assert shape_mask("circle", 3).tolist() == [[False, True, False], [True, True, True], [False, True, False]]
    assert shape_mask("triangle", 5).sum(dim=1).tolist() == [1, 1, 3, 3, 5]   # apex up, widening downwards
    assert shape_mask("circle", 20).sum() < 20 * 20 and shape_mask("circle", 20).any()


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_written_folder_matches_the_tasks(tmp_path, image_format):
    manifest = write_synthetic(tmp_path / "a", 8, seed=3, size=32, image_format=image_format)
    rows = read_manifest(manifest)
    tasks = make_tasks(8, seed=3, size=32)
    for row, task in zip(rows, tasks, strict=True):
        assert row.id == task.id and row.instruction == task.instruction and row.task_type == task.edit.kind
        assert row.principles and row.requirement and ShapeTask.from_row(row) == task
        source = torch.from_numpy(np.array(Image.open(row.source).convert("RGB"))).permute(2, 0, 1)
        target = torch.from_numpy(np.array(Image.open(row.target).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(target, task.target_image())                            # targets are always lossless
        if image_format == "png":
            assert torch.equal(source, task.source_image())
        else:
            assert row.source.suffix == ".jpg"
            assert (source.int() - task.source_image().int()).abs().float().mean() < 4      # quality 95, 4:4:4

    again = write_synthetic(tmp_path / "b", 8, seed=3, size=32, image_format=image_format)
    assert again.read_text().replace("/b/", "/a/") == manifest.read_text()
    for row in rows:
        twin = tmp_path / "b" / row.source.relative_to(tmp_path / "a")
        assert twin.read_bytes() == row.source.read_bytes()
