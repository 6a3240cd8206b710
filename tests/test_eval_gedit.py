"""GEdit-style scoring of a folder of edits: O from SC/PQ details or 10 * reward, per-type means, macro over
types, NaN left out and counted, edits resized to the source, and the exact programmatic reward via specs."""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from editrl_engine.data import make_tasks
from editrl_engine.eval import BenchDataError, ScoreCache, gedit
from editrl_engine.reward import load_reward

from .eval_fakes import NAN_RED, FakeReward, solid

# (task_type, edited rgb): with sub-scores O = sqrt((G / 25.5) * (B / 25.5)); without, O = 10 * R / 255
EDITS = [("background_change", (51, 51, 204)), ("background_change", (255, 255, 255)),
         ("color_alter", (102, 102, 102)), ("color_alter", (NAN_RED, 0, 0))]


def write_edits(folder, edits=EDITS, edited_size=(8, 8)):
    lines = []
    for i, (task, rgb) in enumerate(edits):
        solid((128, 128, 128)).save(folder / f"src{i}.png")
        solid(rgb, edited_size).save(folder / f"edit{i}.png")
        lines.append(json.dumps({"key": f"e{i}", "task_type": task, "instruction": f"edit {i}",
                                 "source": f"src{i}.png", "edited": f"edit{i}.png"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_per_type_mean_of_sqrt_sc_pq_then_macro(tmp_path):
    result = gedit.evaluate(FakeReward(), gedit.read_edits(write_edits(tmp_path)), progress=False)
    background = (math.sqrt(2 * 8) + 10) / 2
    assert result["types"]["background_change"]["mean_o"] == pytest.approx(background)
    assert result["types"]["color_alter"] == {"mean_o": pytest.approx(4.0), "n": 2, "nan": 1}
    assert result["macro_o"] == pytest.approx((background + 4.0) / 2)
    assert result["parse_failure_rate"] == pytest.approx(0.25)


def test_without_sub_scores_o_is_ten_times_the_reward(tmp_path):
    result = gedit.evaluate(FakeReward(with_subscores=False), gedit.read_edits(write_edits(tmp_path)),
                            progress=False)
    assert result["types"]["background_change"]["mean_o"] == pytest.approx((2 + 10) / 2)
    assert result["types"]["color_alter"]["mean_o"] == pytest.approx(4.0)


def test_edits_are_resized_to_the_source_and_cached(tmp_path):
    rows = gedit.read_edits(write_edits(tmp_path, edited_size=(16, 12)))
    reward = FakeReward()
    gedit.evaluate(reward, rows, cache=ScoreCache(tmp_path / "c.jsonl"), progress=False)
    assert {edited for _, edited in reward.sizes} == {(8, 8)}
    again = FakeReward()
    gedit.evaluate(again, rows, cache=ScoreCache(tmp_path / "c.jsonl"), progress=False)
    assert again.calls == 0


def test_programmatic_reward_scores_the_synthetic_task_exactly(tmp_path):
    lines = []
    for i, task in enumerate(make_tasks(4, seed=0, size=32)):
        for name, image in (("src", task.source_image()), ("tgt", task.target_image())):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{name}{i}.png")
        edited = f"tgt{i}.png" if i % 2 == 0 else f"src{i}.png"                       # half perfect, half unedited
        lines.append(json.dumps({"task_type": task.edit.kind, "instruction": task.instruction,
                                 "source": f"src{i}.png", "edited": edited, "spec": task.to_spec()}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    result = gedit.evaluate(load_reward("programmatic"), gedit.read_edits(tmp_path), progress=False)
    expected: dict[str, list[float]] = {}
    for i, task in enumerate(make_tasks(4, seed=0, size=32)):
        expected.setdefault(task.edit.kind, []).append(10.0 if i % 2 == 0 else 0.0)   # target 10, source 0
    means = {t: sum(v) / len(v) for t, v in expected.items()}
    assert {t: v["mean_o"] for t, v in result["types"].items()} == pytest.approx(means)
    assert result["macro_o"] == pytest.approx(sum(means.values()) / len(means))


def test_malformed_manifests_name_the_row(tmp_path):
    with pytest.raises(BenchDataError, match="no manifest"):
        gedit.read_edits(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"task_type": "x", "instruction": "y", "source": "a.png"}\n')
    with pytest.raises(BenchDataError, match="manifest.jsonl row 1: missing field"):
        gedit.read_edits(tmp_path)
