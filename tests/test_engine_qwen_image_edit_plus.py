"""One training step of each algorithm on the tiny Qwen-Image-Edit-Plus preset (single-reference synthetic tasks):
the family plugs into the engine through load_policy alone."""
from __future__ import annotations

import math

import pytest

from editrl_engine.engine import Trainer

from .engine_fakes import BrightnessReward, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")


@pytest.mark.parametrize("algo", ["nft", "grpo"])
def test_one_step_trains_on_qwen_image_edit_plus(tmp_path, algo):
    config = tiny_config(tmp_path / "run", "policy.family='qwen-image-edit-plus'", "run.steps=1",
                         "sampling.groups_per_step=1", "pipeline.staleness=0", algo=algo)
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.train()
    assert len(trainer.history) == 1
    record = trainer.history[0]
    assert record["optimizer_steps"] == 1 and math.isfinite(record["grad_norm"]) and record["grad_norm"] > 0
    assert record["nan_count"] == 0 and math.isfinite(record["reward_mean"])
    assert trainer.policy.family == "qwen-image-edit-plus"
    if algo == "grpo":
        assert record["approx_kl"] < 1e-8 and record["clipfrac"] == 0.0    # first update: on-policy
