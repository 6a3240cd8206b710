"""Verifier training data: SFT and preference manifests read with errors naming the line and the field, the trace
checked against the verifier's parser, EditReward-Bench rows turned into preference rows, and the config's checks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from editrl_engine.engine.config import ConfigError
from editrl_engine.errors import InputError
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.verifier_train.config import load_verifier_config
from editrl_engine.verifier_train.data import from_editreward_bench, read_preferences, read_sft, verdict_trace

PRINCIPLES = ["follow: the square is red", "keep: the circle"]
TRACE = verdict_trace(vp.as_principles(PRINCIPLES), [("pass", 9, ""), ("partial", 5, "")], 7, "ok")


@pytest.fixture
def folder(tmp_path):
    for name in ("s.png", "e.png", "a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / name)
    return tmp_path


def write(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_good_rows_are_read(folder):
    sft = read_sft(write(folder / "sft.jsonl", {"sources": ["s.png"], "edited": "e.png", "instruction": "x",
                                                "principles": PRINCIPLES, "trace": TRACE}))
    prefs = read_preferences(write(folder / "p.jsonl", {"source": "s.png", "instruction": "x",
                                                        "principles": PRINCIPLES, "preferred": "a.png",
                                                        "rejected": "b.png"}))
    assert sft[0].sources == (folder / "s.png",) and sft[0].principles[1].kind == "keep" and sft[0].trace == TRACE
    assert prefs[0].preferred == folder / "a.png" and prefs[0].rejected == folder / "b.png"


@pytest.mark.parametrize("row, words", [
    ("not json", ":2: not JSON"),
    ({"sources": [], "edited": "e.png", "instruction": "x", "trace": TRACE}, ":2: field 'sources'"),
    ({"sources": ["s.png"], "edited": "gone.png", "instruction": "x", "principles": PRINCIPLES, "trace": TRACE},
     ":2: field 'edited': image"),
    ({"sources": ["s.png"], "edited": "e.png", "instruction": "", "principles": PRINCIPLES, "trace": TRACE},
     ":2: field 'instruction'"),
    ({"sources": ["s.png"], "edited": "e.png", "instruction": "x", "principles": ["wrong: kind"], "trace": TRACE},
     ":2: field 'principles'"),
    ({"sources": ["s.png"], "edited": "e.png", "instruction": "x", "principles": PRINCIPLES, "trace": "free text"},
     ":2: field 'trace' is not a verdict"),
])
def test_bad_sft_rows_name_the_line_and_field(folder, row, words):
    good = {"sources": ["s.png"], "edited": "e.png", "instruction": "x", "principles": PRINCIPLES, "trace": TRACE}
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        read_sft(write(folder / "sft.jsonl", good, row))


def test_bad_preference_rows_name_the_line_and_field(folder):
    with pytest.raises(InputError, match=r":1: field 'rejected'"):
        read_preferences(write(folder / "p.jsonl", {"sources": "s.png", "instruction": "x", "principles": PRINCIPLES,
                                                    "preferred": "a.png"}))


def test_editreward_bench_rows_become_preference_rows(folder):
    write(folder / "bench.jsonl", {"instruction": "make it red", "input_image": "s.png",
                                   "output_images": ["a.png", "b.png"], "task_type": "color_alter",
                                   "dimension": "overall"})
    [row] = from_editreward_bench(folder / "bench.jsonl", principles=PRINCIPLES)
    assert row.instruction == "make it red" and [p.kind for p in row.principles] == ["follow", "keep"]
    assert row.preferred.path == folder / "a.png" and row.rejected.path == folder / "b.png"
    assert row.sources[0].path == folder / "s.png"


@pytest.mark.parametrize("override, words", [
    ("model.path='/m'", "exactly one of model.path and model.preset"),   # with the default preset table absent
    ("gcpo.temperature=0.0", "temperature > 0"),
    ("sft.lr=0.0", "lr > 0"),
    ("sft.schedule='linear'", "constant or cosine"),
    ("sft.min_lr_ratio=1.5", "min_lr_ratio <= 1"),
])
def test_config_checks(override, words):
    overrides = [override, "model.preset='tiny'"] if override.startswith("model.path") else [override]
    with pytest.raises(ConfigError, match=words):
        load_verifier_config(None, overrides)


def test_sft_learning_rate_schedule_by_hand():
    """Linear warmup to lr, then cosine to min_lr_ratio * lr at sft.steps (hand values); constant stays at lr."""
    cosine = load_verifier_config(None, ["sft.steps=10", "sft.lr=1e-3", "sft.warmup=2", "sft.schedule='cosine'",
                                         "sft.min_lr_ratio=0.1"]).sft
    expected = {1: 5e-4, 2: 1e-3, 6: 1e-3 * (0.1 + 0.9 * 0.5), 10: 1e-4}     # step 6: half way through the decay
    for step, lr in expected.items():
        assert cosine.lr_at(step) == pytest.approx(lr, rel=1e-12), step
    assert cosine.lr_at(4) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), rel=1e-12)
    constant = load_verifier_config(None, ["sft.lr=2e-4"]).sft
    assert [constant.lr_at(s) for s in (1, 50, 10_000)] == [2e-4] * 3
