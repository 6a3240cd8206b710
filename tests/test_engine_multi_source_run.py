"""A training run on tasks with several source images: Qwen-Image-Edit-Plus with a VLM judge that shows every
source trains a step; a policy or a reward that takes one source image is refused before anything is rolled
out, naming the task, the model and the fix."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from editrl_engine.engine import Trainer
from editrl_engine.errors import InputError
from editrl_engine.reward import load_reward

from .engine_fakes import BrightnessReward, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")


def manifest(tmp_path) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        paths = []
        for k in range(2):
            path = tmp_path / f"task{i}_{k}.png"
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
            paths.append(path.name)
        rows.append({"id": f"merge-{i}", "source": paths, "instruction": f"put the object of picture 2 in picture 1 "
                                                                          f"({i})"})
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "tasks.jsonl")


def config(tmp_path, family: str):
    return tiny_config(tmp_path / "run", f"policy.family='{family}'", f"data.manifest='{manifest(tmp_path)}'",
                       "run.steps=1", "sampling.groups_per_step=1", "pipeline.staleness=0")


def test_qwen_image_edit_plus_trains_on_two_source_tasks_with_a_judge_that_sees_both(tmp_path):
    judge = load_reward("mllm_logit", preset="tiny")
    seen = []
    original = judge.group_probabilities

    def spy(sources, *args, **kwargs):
        seen.extend(len(s) if isinstance(s, list) else 1 for s in sources)
        return original(sources, *args, **kwargs)
    judge.group_probabilities = spy
    trainer = Trainer(config(tmp_path, "qwen-image-edit-plus"), reward=judge)
    trainer.train()
    record = trainer.history[0]
    assert record["nan_count"] == 0 and math.isfinite(record["reward_mean"]) and record["optimizer_steps"] == 1
    assert seen and set(seen) == {2}


@pytest.mark.parametrize("family, reward, words", [
    ("flux-kontext", None, "the policy (flux-kontext) takes one per task: set policy.family"),
    ("qwen-image-edit-plus", BrightnessReward(), "the reward (brightness) takes one per task: use a VLM judge"),
])
def test_one_source_models_are_refused_before_any_rollout(tmp_path, monkeypatch, family, reward, words):
    trainer = Trainer(config(tmp_path, family), reward=reward or BrightnessReward())
    rolled = []
    monkeypatch.setattr(Trainer, "_start_rollouts", lambda self, scorer: rolled.append(1))
    with pytest.raises(InputError, match=r"task 'merge-0' has 2 source images.*" + words.replace("(", r"\(")
                       .replace(")", r"\)")):
        trainer.train()
    assert rolled == []
