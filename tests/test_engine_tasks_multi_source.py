"""TaskSet.image and the batched EditLoader: one uint8 [3, H, W] tensor for a one-source row, a list of them for a
multi-source row; the loader's group keys are the manifest's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.data.loaders import EditLoader
from editrl_engine.engine.tasks import TaskSet


def write_png(path, colour, size=(6, 4)):
    Image.new("RGB", size, colour).save(path)


def test_image_is_a_tensor_for_one_source_and_a_list_for_several(tmp_path):
    write_png(tmp_path / "a.png", (255, 0, 0))
    write_png(tmp_path / "b.png", (0, 0, 255), size=(5, 3))
    manifest = tmp_path / "tasks.jsonl"
    manifest.write_text(json.dumps({"id": "one", "source": "a.png", "instruction": "Make it blue."}) + "\n"
                        + json.dumps({"id": "two", "source": ["a.png", "b.png"], "instruction": "Merge."}) + "\n")
    tasks = TaskSet.from_manifest(manifest)
    one = tasks.image(tasks.keys[0], tasks.rows[0])
    assert isinstance(one, torch.Tensor) and one.dtype == torch.uint8 and one.shape == (3, 4, 6)
    two = tasks.image(tasks.keys[1])
    assert isinstance(two, list) and [t.shape for t in two] == [(3, 4, 6), (3, 3, 5)]
    assert torch.equal(two[0], one)
    assert two[1][:, 0, 0].tolist() == [0, 0, 255]
    assert tasks.image(tasks.keys[1]) is two                          # cached


def test_multi_source_missing_file_names_the_row_and_path(tmp_path):
    write_png(tmp_path / "a.png", (1, 2, 3))
    manifest = tmp_path / "tasks.jsonl"
    manifest.write_text(json.dumps({"id": "two", "source": ["a.png", "a.png"], "instruction": "Merge."}) + "\n")
    tasks = TaskSet.from_manifest(manifest)
    tasks.rows[0].sources[1].unlink()
    tasks.images.clear()
    with pytest.raises(Exception, match="task 'two': cannot read source image .*a.png"):
        tasks.image(tasks.keys[0])


def test_batched_loader_gives_every_source_of_a_multi_source_row(tmp_path):
    write_png(tmp_path / "a.png", (255, 0, 0), size=(8, 8))
    write_png(tmp_path / "b.png", (0, 0, 255), size=(8, 8))
    write_png(tmp_path / "c.png", (0, 255, 0), size=(8, 8))
    manifest = tmp_path / "tasks.jsonl"
    manifest.write_text(json.dumps({"id": "two", "source": ["a.png", "b.png"], "instruction": "Merge."}) + "\n"
                        + json.dumps({"id": "one", "source": "c.png", "instruction": "Paint."}) + "\n"
                        + json.dumps({"id": "bad", "source": ["a.png", "gone.png"], "instruction": "X."}) + "\n")
    with pytest.warns(UserWarning, match="gone.png"):
        [batch] = list(EditLoader(manifest, batch_size=3, size=8, backend="pillow", prefetch=0))
    assert [row.id for row in batch.rows] == ["two", "one"]                        # the broken row left out
    two, one = batch.sources
    assert isinstance(two, list) and [t[:, 0, 0].tolist() for t in two] == [[255, 0, 0], [0, 0, 255]]
    assert torch.equal(one, batch.images[1]) and torch.equal(two[0], batch.images[0])
    good = tmp_path / "good.jsonl"
    good.write_text("".join(manifest.read_text().splitlines(keepends=True)[:2]))
    assert batch.group_keys == TaskSet.from_manifest(good).keys         # the manifest's own keys, every source
    assert np.array(Image.open(tmp_path / "a.png")).shape == (8, 8, 3)
