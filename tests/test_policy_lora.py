"""LoRA on the tiny FLUX.1-Kontext policy: diffusers loads what we save, the reference model is the base model,
the NFT old adapter follows θ_old ← d·θ_old + (1−d)·θ, and both DiffusionNFT decay schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.policy import lora
from editrl_engine.policy.flux_kontext import load


def randomise(parameters, seed: int, scale: float = 0.2) -> None:
    """LoRA starts with B = 0 (no effect); give every weight a value so adapters change the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def inputs():
    policy = load(preset="tiny")
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8))
    cond = policy.encode([image, image], ["recolour the square", "remove it"])
    x = torch.randn(2, *cond.latent_shape, generator=torch.Generator().manual_seed(1))
    return cond, x, torch.tensor([0.9, 0.35])


@pytest.fixture
def policy():
    return load(preset="tiny")


def test_saved_adapter_loads_in_diffusers_with_the_same_velocity(policy, inputs, tmp_path):
    cond, x, t = inputs
    policy.add_lora(rank=4, alpha=12.0)                      # alpha != rank: the scale must travel in the file
    randomise(policy.lora_parameters(), seed=2)
    path = policy.save_lora(str(tmp_path))
    assert path.endswith(lora.LORA_WEIGHT_NAME)
    fresh = load(preset="tiny")                              # same seed: the same base weights
    base = fresh.velocity(x, t, cond)
    pipe = fresh.components.pipeline()
    pipe.load_lora_weights(str(tmp_path))                    # diffusers' own loader, keys and metadata
    loaded = fresh.velocity(x, t, cond)
    adapted = policy.velocity(x, t, cond)
    assert not torch.allclose(adapted, base, atol=1e-3)
    torch.testing.assert_close(loaded, adapted, rtol=1e-5, atol=1e-5)


def test_reference_model_is_the_base_model(policy, inputs):
    cond, x, t = inputs
    base = policy.velocity(x, t, cond)
    policy.add_lora(rank=2, alpha=4.0)
    randomise(policy.lora_parameters(), seed=3)
    assert not torch.allclose(policy.velocity(x, t, cond), base, atol=1e-3)
    with torch.no_grad(), policy.use_adapter(None):
        torch.testing.assert_close(policy.velocity(x, t, cond), base, rtol=0, atol=0)
    assert not torch.allclose(policy.velocity(x, t, cond), base, atol=1e-3)   # the adapter is back


def test_default_targets_and_only_adapter_weights_train(policy):
    policy.add_lora(rank=2, alpha=4.0)
    adapted = {name.removesuffix(".base_layer") for name, m in policy.transformer.named_modules()
               if hasattr(m, "lora_A")}
    expected = {name for name, _ in policy.transformer.named_modules()
                if any(name.endswith("." + suffix) for suffix in lora.DEFAULT_TARGETS["flux-kontext"])}
    assert adapted == expected and len(adapted) == 12 + 3       # double block: 12 layers; single block: q, k, v
    trainable = [p for p in policy.transformer.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in policy.lora_parameters()}
    assert len(trainable) == 2 * len(adapted)


def test_custom_targets(policy):
    policy.add_lora(rank=2, alpha=2.0, target_modules=["attn.to_q"])
    assert len(policy.lora_parameters()) == 2 * 2                # to_q of the double and the single block


def test_old_adapter_switching_restores_state(policy, inputs):
    cond, x, t = inputs
    policy.add_lora(rank=2, alpha=4.0)
    randomise(policy.lora_parameters(), seed=4)
    policy.add_old_adapter()
    old = lora.adapter_parameters(policy.transformer, "old")
    assert not any(p.requires_grad for p in old) and all(p.requires_grad for p in policy.lora_parameters())
    assert policy.transformer.active_adapters() == ["default"]
    current = policy.velocity(x, t, cond)
    with torch.no_grad(), policy.use_adapter("old"):            # a copy: the same velocity
        torch.testing.assert_close(policy.velocity(x, t, cond), current, rtol=0, atol=0)
    randomise(policy.lora_parameters(), seed=5)                 # a training step moves θ, not θ_old
    moved = policy.velocity(x, t, cond)
    with torch.no_grad(), policy.use_adapter("old"):
        torch.testing.assert_close(policy.velocity(x, t, cond), current, rtol=0, atol=0)
    with policy.use_adapter("default"):
        torch.testing.assert_close(policy.velocity(x, t, cond), moved, rtol=0, atol=0)
    assert policy.transformer.active_adapters() == ["default"]
    assert not any(p.requires_grad for p in old) and all(p.requires_grad for p in policy.lora_parameters())
    assert policy.metadata()["lora_adapters"] == ["default", "old"]


def test_gradients_reach_only_the_active_adapter(policy, inputs):
    cond, x, t = inputs
    policy.add_lora(rank=2, alpha=4.0)
    randomise(policy.lora_parameters(), seed=6)
    policy.add_old_adapter()
    policy.velocity(x, t, cond).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.lora_parameters())
    assert all(p.grad is None for p in lora.adapter_parameters(policy.transformer, "old"))


@pytest.mark.parametrize("decay", [0.0, 0.3, 1.0])
def test_soft_update_follows_the_formula(policy, decay):
    policy.add_lora(rank=2, alpha=4.0)
    randomise(policy.lora_parameters(), seed=7)
    policy.add_old_adapter()
    randomise(policy.lora_parameters(), seed=8)
    theta = [p.detach().clone() for p in policy.lora_parameters()]
    theta_old = [p.detach().clone() for p in lora.adapter_parameters(policy.transformer, "old")]
    policy.update_old_adapter(decay)
    for new_old, old, current in zip(lora.adapter_parameters(policy.transformer, "old"), theta_old, theta):
        torch.testing.assert_close(new_old, decay * old + (1 - decay) * current, rtol=1e-6, atol=1e-7)
    for p, before in zip(policy.lora_parameters(), theta):
        assert torch.equal(p, before)                           # θ itself is untouched
    with pytest.raises(ValueError, match="decay"):
        policy.update_old_adapter(1.5)


def test_nft_decay_schedules():
    assert [lora.nft_decay(s) for s in (0, 1, 250, 500, 501, 10_000)] == [0.0, 0.001, 0.25, 0.5, 0.5, 0.5]
    delayed = [lora.nft_decay(s, "delayed") for s in (0, 74, 75, 76, 175, 208, 209, 10_000)]
    assert delayed == pytest.approx([0.0, 0.0, 0.0, 0.0075, 0.75, 0.9975, 0.999, 0.999])
    with pytest.raises(ValueError, match="schedule"):
        lora.nft_decay(1, "cosine")


def test_missing_adapter_is_named(policy):
    with pytest.raises(KeyError, match="old"):
        policy.update_old_adapter(0.5)
