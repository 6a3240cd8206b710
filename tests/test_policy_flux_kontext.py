"""The FLUX.1-Kontext policy on the tiny preset, checked against diffusers' FluxKontextPipeline itself.

Reference: the pipeline built over the same modules, run for a few steps with output_type="latent" (and "np"
for decoding); our Euler loop over policy.velocity and policy.sigmas must land on the same latents.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.policy import load_policy
from editrl_engine.policy.flux_kontext import FluxKontextPolicy, load, missing_parts
from editrl_engine.policy.flux_kontext.model import pack

SIZE = 32                     # pixels; the tiny VAE downsamples 2x, so 8 x 8 = 64 packed target tokens


def random_image(seed: int, size: int = SIZE) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def policy() -> FluxKontextPolicy:
    return load_policy("flux-kontext", preset="tiny")


def pipeline_run(policy, image, prompt, latents, steps, output_type):
    pipe = policy.components.pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=image, prompt=prompt, height=SIZE, width=SIZE, max_area=SIZE * SIZE, _auto_resize=False,
                num_inference_steps=steps, guidance_scale=2.5, latents=latents.clone(),
                max_sequence_length=policy.components.max_sequence_length, output_type=output_type), pipe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_over_velocity_equals_the_diffusers_pipeline(policy, dtype):
    # same modules, same inputs, same arithmetic: bit-identical latents (also checks the timestep = sigma
    # rounding the pipeline does in the model dtype)
    model = policy if dtype == torch.float32 else load(preset="tiny", dtype=dtype)
    image, prompt, steps = random_image(0), "turn the square red", 3
    cond = model.encode([image], [prompt])
    noise = pack(torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))).to(dtype)
    reference, pipe = pipeline_run(model, image, prompt, noise, steps, "latent")             # [1, 64, 16]
    sigmas = model.sigmas(steps, cond)
    torch.testing.assert_close(sigmas, pipe.scheduler.sigmas.float(), rtol=0, atol=0)
    x = noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        v = model.velocity(x, sigma.expand(1), cond).to(dtype)
        x = (x.float() + (sigma_next - sigma) * v).to(dtype)      # FlowMatchEulerDiscreteScheduler.step's arithmetic
    torch.testing.assert_close(x, reference.images, rtol=0, atol=0)


def test_decode_equals_the_pipeline_postprocess(policy):
    image, prompt = random_image(2), "remove the circle"
    cond = policy.encode([image], [prompt])
    noise = pack(torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(3)))
    latents, _ = pipeline_run(policy, image, prompt, noise, 1, "latent")
    pixels, _ = pipeline_run(policy, image, prompt, noise, 1, "np")
    expected = torch.from_numpy((pixels.images * 255).round().astype(np.uint8)).permute(0, 3, 1, 2)
    decoded = policy.decode(latents.images, cond)
    assert decoded.dtype == torch.uint8 and decoded.shape == (1, 3, SIZE, SIZE)
    assert (decoded.int() - expected.int()).abs().max() <= 1          # float rounding at .5 boundaries


def test_condition_layout(policy):
    cond = policy.encode([random_image(0), random_image(1)], ["a", "b"])
    assert cond.batch_size == 2 and cond.latent_shape == (64, 16) and cond.image_size == (SIZE, SIZE)
    ids = cond.tensors["img_ids"]                                             # [target 64 | source 64, 3]
    assert ids.shape == (128, 3) and (ids[:64, 0] == 0).all() and (ids[64:, 0] == 1).all()
    torch.testing.assert_close(ids[:64, 1:], ids[64:, 1:])
    assert cond.tensors["source_latents"].shape == (2, 64, 16)
    assert cond.tensors["prompt_embeds"].shape == (2, policy.components.max_sequence_length, 32)
    assert (cond.tensors["text_ids"] == 0).all()


def test_condition_is_encoded_once_per_pair_and_select_matches_encoding_each_row(policy):
    calls = {"clip": 0, "t5": 0, "vae": 0}
    parts = policy.components
    hooks = [module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
             for name, module in (("clip", parts.text_encoder), ("t5", parts.text_encoder_2),
                                  ("vae", parts.vae.encoder))]
    sources, instructions, group = [random_image(4), random_image(5)], ["make it blue", "move it left"], 2
    try:
        cond = policy.encode(sources, instructions)
        assert calls == {"clip": 1, "t5": 1, "vae": 1}                       # one batched pass for both pairs
        rows = cond.select(torch.arange(2).repeat_interleave(group))         # G samples per pair, no re-encoding
        x = torch.randn(2 * group, *cond.latent_shape, generator=torch.Generator().manual_seed(0))
        t = torch.linspace(0.2, 0.9, 2 * group)
        v = policy.velocity(x, t, rows)
        assert calls == {"clip": 1, "t5": 1, "vae": 1}
    finally:
        for hook in hooks:
            hook.remove()
    for i in range(2 * group):
        alone = policy.encode([sources[i // group]], [instructions[i // group]])
        torch.testing.assert_close(policy.velocity(x[i:i + 1], t[i:i + 1], alone), v[i:i + 1], rtol=1e-5, atol=1e-5)


def test_uint8_tensor_sources_equal_pil_sources(policy):
    image = random_image(6)
    as_tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    a, b = policy.encode([image], ["x"]), policy.encode([as_tensor], ["x"])
    torch.testing.assert_close(a.tensors["source_latents"], b.tensors["source_latents"], rtol=0, atol=0)


def test_a_source_that_is_not_an_image_is_refused(policy):
    with pytest.raises(TypeError, match=r"uint8 tensor \[3, H, W\]"):
        policy.encode([torch.rand(3, 32, 32)], ["make it red"])


def test_guidance_and_instruction_change_the_velocity(policy):
    cond = policy.encode([random_image(7), random_image(7)], ["make it red", "make it green"])
    x, t = torch.randn(2, *cond.latent_shape), torch.full((2,), 0.5)
    v = policy.velocity(x[:1].expand(2, -1, -1), t, cond)
    assert not torch.allclose(v[0], v[1])
    assert not torch.allclose(policy.velocity(x, t, cond, guidance=4.0), policy.velocity(x, t, cond))


def test_velocity_rejects_mismatched_shapes(policy):
    cond = policy.encode([random_image(0)], ["x"])
    with pytest.raises(ValueError, match="does not match the condition"):
        policy.velocity(torch.randn(2, *cond.latent_shape), torch.ones(2), cond)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")   # RMSNorm's fp32 weight on CPU
def test_bf16_autocast_tracks_fp32(policy):
    fast = load(preset="tiny", autocast=True)
    cond = policy.encode([random_image(8)], ["x"])
    x, t = torch.randn(1, *cond.latent_shape, generator=torch.Generator().manual_seed(0)), torch.tensor([0.6])
    exact, approx = policy.velocity(x, t, cond), fast.velocity(x, t, cond)
    assert approx.dtype == torch.float32
    assert (approx - exact).abs().max() <= 0.05 * exact.abs().max()
    assert fast.metadata()["autocast"] == "bfloat16"


def test_gradient_checkpointing_gives_the_same_lora_gradients():
    grads = []
    for checkpointing in (False, True):
        policy = load(preset="tiny", gradient_checkpointing=checkpointing)
        policy.add_lora(rank=2, alpha=4.0)
        with torch.no_grad():
            for p in policy.lora_parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
        cond = policy.encode([random_image(9)], ["x"])
        x = torch.randn(1, *cond.latent_shape, generator=torch.Generator().manual_seed(0))
        policy.velocity(x, torch.tensor([0.4]), cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.lora_parameters()]))
        assert policy.metadata()["gradient_checkpointing"] is checkpointing
    torch.testing.assert_close(grads[0], grads[1])


def test_compiled_blocks_give_the_same_velocity(policy):
    # "eager" runs dynamo's graph capture of every block without inductor's C++ build (~15 s here on CPU);
    # inductor itself is exercised by bench/rollout.py on a GPU.
    compiled = load(preset="tiny")
    compiled.compile_transformer(backend="eager")
    cond = policy.encode([random_image(10)], ["x"])
    x = torch.randn(2, *cond.latent_shape)
    rows = cond.select([0, 0])
    torch.testing.assert_close(compiled.velocity(x, torch.tensor([0.3, 0.8]), rows),
                               policy.velocity(x, torch.tensor([0.3, 0.8]), rows))
    assert compiled.metadata()["compiled"] is True


def test_load_from_a_diffusers_folder_round_trips(policy, tmp_path):
    policy.components.pipeline().save_pretrained(tmp_path)
    assert missing_parts(tmp_path) == []
    loaded = load_policy("flux-kontext", path=str(tmp_path))
    cond_a = policy.encode([random_image(11)], ["shift it up"])
    cond_b = loaded.encode([random_image(11)], ["shift it up"])
    x = torch.randn(1, *cond_a.latent_shape)
    torch.testing.assert_close(loaded.velocity(x, torch.tensor([0.5]), cond_b),
                               policy.velocity(x, torch.tensor([0.5]), cond_a))
    assert loaded.metadata()["origin"] == f"path:{tmp_path}"


def test_missing_or_incomplete_folder_names_what_is_missing(policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(path=tmp_path / "nowhere")
    folder = tmp_path / "kontext"
    policy.components.pipeline().save_pretrained(folder)
    shutil.rmtree(folder / "vae")
    shutil.rmtree(folder / "tokenizer_2")
    (folder / "model_index.json").unlink()
    for weights in (folder / "text_encoder_2").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError) as error:
        load(path=folder)
    message = str(error.value)
    for part in ("model_index.json", "vae/config.json", "vae/ weights", "tokenizer_2/", "text_encoder_2/ weights"):
        assert part in message
    assert "transformer" not in message and "scheduler" not in message


def test_load_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        load()
    with pytest.raises(ValueError, match="unknown flux-kontext preset"):
        load(preset="huge")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_helpers_equal_the_pipelines_static_helpers(dtype):
    """model.py writes out the pipeline's helpers (so that encoding does not import the pipeline module); they
    must stay the pipeline's, value for value."""
    from diffusers import FluxKontextPipeline
    from diffusers.loaders import FluxLoraLoaderMixin
    from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift as pipeline_shift

    from editrl_engine.policy.flux_kontext import model
    generator = torch.Generator().manual_seed(0)
    for batch, channels, height, width, scale in [(1, 4, 8, 8, 2), (3, 16, 6, 10, 8), (2, 4, 14, 4, 1)]:
        latents = torch.randn(batch, channels, height, width, generator=generator).to(dtype)
        packed = model.pack(latents)
        assert torch.equal(packed, FluxKontextPipeline._pack_latents(latents, batch, channels, height, width))
        size = (height * scale, width * scale)
        assert torch.equal(model.unpack(packed, size, scale), FluxKontextPipeline._unpack_latents(packed, *size, scale))
        assert torch.equal(model.unpack(packed, size, scale), latents)
        for index in (0, 1):
            ids = FluxKontextPipeline._prepare_latent_image_ids(None, height // 2, width // 2, "cpu", dtype)
            ids[:, 0] = index
            got = model.position_ids(height, width, index, device="cpu", dtype=dtype)
            assert got.dtype == ids.dtype and torch.equal(got, ids)
    for tokens in (16, 256, 1024, 4096, 8192):
        assert model.calculate_shift(tokens) == pipeline_shift(tokens)
        assert model.calculate_shift(tokens, 64, 2048, 0.3, 1.2) == pipeline_shift(tokens, 64, 2048, 0.3, 1.2)
    loader = model.lora_loader()
    assert issubclass(FluxKontextPipeline, loader) and loader is FluxLoraLoaderMixin
    assert FluxKontextPipeline.save_lora_weights.__func__ is loader.save_lora_weights.__func__

