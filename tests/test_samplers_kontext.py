"""Samplers on the tiny FLUX.1-Kontext policy: Euler step for step against diffusers' FluxKontextPipeline (its
FlowMatchEulerDiscreteScheduler with FLUX's dynamic shift), on-policy log-probs, bf16 drift, one encode per
group, reproducible images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.policy import load_policy
from editrl_engine.policy.samplers import grpo_rollout, nft_rollout, ode_sample, sample_generators

from .helpers import recomputed_logp

SIZE = 32   # pixels: 8 x 8 = 64 packed target tokens with the tiny VAE


def random_image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def policy():
    return load_policy("flux-kontext", preset="tiny")


@pytest.fixture(scope="module")
def cond(policy):
    return policy.encode([random_image(0), random_image(1)], ["turn the square red", "remove the circle"])


@pytest.mark.parametrize("num_steps", [4, 8])
def test_euler_is_the_kontext_pipeline_step_for_step(policy, num_steps):
    image, prompt = random_image(0), "turn the square red"
    one = policy.encode([image], [prompt])
    seen = []
    velocity = policy.velocity
    policy.velocity = lambda x_t, *args, **kwargs: (seen.append(x_t.clone()), velocity(x_t, *args, **kwargs))[1]
    try:
        ours = ode_sample(policy, one, num_steps=num_steps, seed=[7])
    finally:
        del policy.velocity
    noise = policy.noise(one, sample_generators([7], 1, "cpu"))
    assert torch.equal(seen[0], noise)

    pipe = policy.components.pipeline()
    pipe.set_progress_bar_config(disable=True)
    steps = []
    record = lambda _pipe, _i, _t, tensors: steps.append(tensors["latents"].clone()) or tensors
    reference = pipe(image=image, prompt=prompt, height=SIZE, width=SIZE, max_area=SIZE * SIZE, _auto_resize=False,
                     num_inference_steps=num_steps, guidance_scale=policy.guidance, latents=noise.clone(),
                     max_sequence_length=policy.components.max_sequence_length, output_type="latent",
                     callback_on_step_end=record).images
    torch.testing.assert_close(policy.sigmas(num_steps, one), pipe.scheduler.sigmas.float(), rtol=0, atol=0)
    assert len(steps) == num_steps
    for i in range(num_steps - 1):
        torch.testing.assert_close(seen[i + 1], steps[i], rtol=1e-5, atol=1e-5, msg=lambda m: f"after step {i}: {m}")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("kind, noise_level, window", [("flow_grpo", 0.9, None), ("flow_grpo", 0.9, 2),
                                                        ("cps", 0.8, None)])
def test_grpo_logp_is_on_policy(policy, cond, kind, noise_level, window):
    out = grpo_rollout(policy, cond, group_size=2, num_steps=6, seed=0, kind=kind, noise_level=noise_level,
                       window_size=window, window_generator=torch.Generator().manual_seed(5) if window else None)
    assert out.latents.shape == (4, 5 if window is None else 2, 64, 16)
    ratio = torch.exp(recomputed_logp(policy, out) - out.logp)
    assert float((ratio - 1).abs().max()) < 1e-5


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight:UserWarning")
def test_bf16_autocast_logp_drift_is_measured(policy, cond, record_property, capsys):
    """Rollout under bf16 autocast; log-probs recomputed one sample at a time in bf16, and in fp32."""
    policy.autocast = True                                   # the rollout's velocities under bf16 autocast
    try:
        out = grpo_rollout(policy, cond, num_steps=4, seed=1, noise_level=0.9)
    finally:
        policy.autocast = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        per_sample_bf16 = torch.cat([recomputed_logp(policy, type(out)(**{
            **vars(out), "latents": out.latents[b:b + 1], "next_latents": out.next_latents[b:b + 1],
            "cond": out.cond.select([b])})) for b in range(2)])
    fp32 = recomputed_logp(policy, out)
    drift_bf16 = float((per_sample_bf16 - out.logp).abs().max())
    drift_fp32 = float((fp32 - out.logp).abs().max())
    record_property("kontext_bf16_logp_drift_vs_bf16_recompute", drift_bf16)
    record_property("kontext_bf16_logp_drift_vs_fp32_recompute", drift_fp32)
    with capsys.disabled():
        print(f"\n[tiny Kontext bf16 drift] max |dlogp| over {out.logp.numel()} steps: bf16 per-sample recompute "
              f"{drift_bf16:.3g} (ratio {math.exp(drift_bf16):.5f}), fp32 recompute {drift_fp32:.3g} "
              f"(|logp| ~ {float(out.logp.abs().mean()):.3g})")
    assert math.isfinite(drift_bf16) and math.isfinite(drift_fp32) and drift_bf16 < 1.0 and drift_fp32 < 1.0


def test_encoded_once_per_group_one_forward_per_step(policy):
    encodes, forwards = [], []
    encode = policy.encode
    policy.encode = lambda *args, **kwargs: (encodes.append(1), encode(*args, **kwargs))[1]
    hook = policy.transformer.register_forward_pre_hook(
        lambda _module, _args, kwargs: forwards.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    try:
        group = policy.encode([random_image(3)], ["make it blue"])
        out = grpo_rollout(policy, group, group_size=4, num_steps=4, seed=0)
        nft = nft_rollout(policy, group, group_size=4, num_steps=4, seed=0)
    finally:
        hook.remove()
        del policy.encode
    assert len(encodes) == 1 and forwards == [4] * 8
    for name, tensor in out.cond.tensors.items():
        expected = group.tensors[name] if name in group.shared else group.tensors[name].expand_as(tensor)
        assert torch.equal(tensor, expected), name
    assert nft.x0.shape == (4, 64, 16) and nft.cond.batch_size == 4


def test_same_seed_same_images_and_a_group_differs_only_by_noise(policy, cond):
    first = nft_rollout(policy, cond, group_size=2, num_steps=4, seed=3)
    again = nft_rollout(policy, cond, group_size=2, num_steps=4, seed=3)
    images = policy.decode(first.x0, first.cond)
    assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert torch.equal(images, policy.decode(again.x0, again.cond))
    alone = nft_rollout(policy, cond.select([1]), num_steps=4, seed=[3 + 3])       # row 3 = pair 1, sample 1
    torch.testing.assert_close(alone.x0[0], first.x0[3], rtol=1e-5, atol=1e-5)
    same_noise = grpo_rollout(policy, cond.select([0]), group_size=3, num_steps=4,
                              generators=[torch.Generator().manual_seed(9) for _ in range(3)])
    torch.testing.assert_close(same_noise.x0, same_noise.x0[:1].expand(3, -1, -1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first.x0[0], first.x0[1])
