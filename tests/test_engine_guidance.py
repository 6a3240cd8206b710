"""The loss's forwards use the guidance the rollouts used. On Qwen-Image-Edit, sampling.guidance = 0 means no true
CFG in the rollouts; the training forwards must not fall back to the family's CFG scale, or GRPO's first update is
off-policy (ratio != 1) and NFT trains a different velocity than it sampled."""
from __future__ import annotations

import pytest

from editrl_engine.engine import Trainer

from .engine_fakes import BrightnessReward, tiny_config


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_grpo_first_update_is_on_policy_on_qwen_image_edit(tmp_path, guidance):
    config = tiny_config(tmp_path / "run", "policy.family='qwen-image-edit'", "run.steps=1",
                         "sampling.groups_per_step=1", f"sampling.guidance={guidance}", "pipeline.staleness=0",
                         algo="grpo")
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.train()
    first = trainer.history[0]
    assert first["approx_kl"] < 1e-8 and first["clipfrac"] == 0.0      # ratio 1: the rollout's own log-probs
