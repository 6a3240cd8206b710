"""FLUX.2 (dev and klein) through the samplers and the engine: GRPO (SDE and CPS) log-probs on-policy, NFT's
DPM-Solver and Euler sampling, a sample the same alone or in its group, and one training step of each algorithm
with each variant on the tiny presets (64-pixel synthetic tasks: FLUX.2 takes 64 pixels a side or more)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.engine import Trainer
from editrl_engine.policy import load_policy
from editrl_engine.policy.samplers import grpo_rollout, nft_rollout, ode_sample

from .engine_fakes import BrightnessReward, tiny_config
from .helpers import recomputed_logp

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")
PRESETS = ("tiny", "tiny-dev")


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=PRESETS)
def policy(request):
    return load_policy("flux2", preset=request.param)


@pytest.fixture(scope="module")
def cond(policy):
    return policy.encode([image(0), image(1)], ["turn the square red", "remove the circle"])


@pytest.mark.parametrize("kind, noise_level", [("flow_grpo", 0.9), ("cps", 0.8)])
def test_grpo_logp_is_on_policy(policy, cond, kind, noise_level):
    out = grpo_rollout(policy, cond, group_size=2, num_steps=4, seed=0, kind=kind, noise_level=noise_level)
    assert out.latents.shape == (4, 3, *cond.latent_shape)
    ratio = torch.exp(recomputed_logp(policy, out) - out.logp)
    assert float((ratio - 1).abs().max()) < 1e-5


def test_nft_and_euler_sampling_and_a_sample_alone_equals_it_in_its_group(policy, cond):
    group = nft_rollout(policy, cond, group_size=2, num_steps=4, seed=3)
    alone = nft_rollout(policy, cond.select([1]), num_steps=4, seed=[3 + 3])       # row 3 = pair 1, sample 1
    torch.testing.assert_close(alone.x0[0], group.x0[3], rtol=1e-5, atol=1e-5)
    euler = ode_sample(policy, cond, group_size=2, num_steps=4, solver="euler", seed=3)
    assert euler.shape == group.x0.shape and not torch.allclose(euler, group.x0)
    images = policy.decode(group.x0, group.cond)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("algo", ["nft", "grpo"])
def test_one_step_trains_on_flux2(tmp_path, preset, algo):
    config = tiny_config(tmp_path / "run", "policy.family='flux2'", f"policy.preset='{preset}'", "run.steps=1",
                         "data.image_size=64", "sampling.groups_per_step=1", "pipeline.staleness=0", algo=algo)
    trainer = Trainer(config, reward=BrightnessReward())
    trainer.train()
    record = trainer.history[0]
    assert record["optimizer_steps"] == 1 and math.isfinite(record["grad_norm"]) and record["grad_norm"] > 0
    assert record["nan_count"] == 0 and math.isfinite(record["reward_mean"])
    assert trainer.policy.family == "flux2" and trainer.policy.variant == ("dev" if preset == "tiny-dev" else "klein")
    if algo == "grpo":
        assert record["approx_kl"] < 1e-8 and record["clipfrac"] == 0.0
