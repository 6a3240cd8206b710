"""TaskSet.image: one uint8 [3, H, W] tensor for a one-source row, a list of them for a multi-source row."""
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


def test_batched_loader_refuses_multi_source_rows_clearly(tmp_path):
    write_png(tmp_path / "a.png", (1, 2, 3))
    manifest = tmp_path / "tasks.jsonl"
    manifest.write_text(json.dumps({"id": "two", "source": ["a.png", "a.png"], "instruction": "Merge."}) + "\n")
    with pytest.raises(ValueError, match="list of sources, e.g. 'two'"):
        EditLoader(manifest, batch_size=1, size=8, backend="pillow")
    assert np.array(Image.open(tmp_path / "a.png")).shape == (4, 6, 3)
