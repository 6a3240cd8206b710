"""Qwen-Image-Edit policy on the tiny preset: parity with diffusers' QwenImageEditPipeline (true CFG and none,
schedule, decode), one encode per pair, select(), the tokenizer's drop index, folder loading and its errors,
and LoRA save -> pipeline.load_lora_weights -> the same velocity."""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]')")
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_pipeline  # noqa: E402

from editrl_engine import ops  # noqa: E402
from editrl_engine.policy import load_policy, qwen_image_edit  # noqa: E402
from editrl_engine.policy.qwen_image_edit import latents as lat  # noqa: E402
from editrl_engine.policy.qwen_image_edit.prompt import DROP_INDEX, PROMPT_TEMPLATE  # noqa: E402
from editrl_engine.policy.qwen_image_edit.tokenizer import build_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")
INSTRUCTIONS = ("Recolour the red circle blue", "Remove the small green square from the top left corner")


def source_image(seed: int, size=(80, 48)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def policy():
    return load_policy("qwen-image-edit", preset="tiny")


@pytest.fixture
def pipe(policy, monkeypatch):
    """The diffusers pipeline over the policy's modules. It always edits at about 1024² pixels; the tiny preset's
    edit size is policy.target_area, so its size rule gets that area (aspect ratio and rounding stay its own)."""
    rule = edit_pipeline.calculate_dimensions
    monkeypatch.setattr(edit_pipeline, "calculate_dimensions", lambda _area, ratio: rule(policy.target_area, ratio))
    pipeline = policy.pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def euler(policy, cond, noise, num_steps, guidance):
    sigmas = policy.sigmas(num_steps, cond)
    x = noise
    for i in range(num_steps):
        x = x + (sigmas[i + 1] - sigmas[i]) * policy.velocity(x, sigmas[i].expand(x.shape[0]), cond, guidance)
    return x


# ---------------------------------------------------------------------------------------------------------
# parity with QwenImageEditPipeline
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("guidance", [4.0, None])
def test_euler_with_encode_velocity_sigmas_reproduces_the_pipeline(policy, pipe, guidance):
    image, num_steps = source_image(0), 2
    cond = policy.encode([image], INSTRUCTIONS[:1])
    noise = policy.noise(cond, [torch.Generator().manual_seed(5)])
    cfg = dict(negative_prompt=" ", true_cfg_scale=guidance) if guidance else dict(true_cfg_scale=1.0)
    with torch.no_grad():
        theirs = pipe(image=image, prompt=INSTRUCTIONS[0], num_inference_steps=num_steps, latents=noise.clone(),
                      output_type="latent", **cfg).images
        torch.testing.assert_close(policy.sigmas(num_steps, cond), pipe.scheduler.sigmas, rtol=0, atol=1e-7)
        ours = euler(policy, cond, noise, num_steps, guidance)
    assert ours.shape == theirs.shape == (1, *cond.latent_shape)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_condition_holds_the_pipeline_prompt_embeddings_and_source_latents(policy, pipe):
    image = source_image(1)
    cond = policy.encode([image], INSTRUCTIONS[1:])
    width, height = lat.edit_size(*image.size, policy.target_area)
    assert (width, height) == edit_pipeline.calculate_dimensions(policy.target_area, image.size[0] / image.size[1])[:2]
    assert cond.image_size == (height, width) and cond.latent_shape == (height * width // 256, 64)
    resized = pipe.image_processor.resize(image, height, width)
    for prompt, key in ((INSTRUCTIONS[1], "prompt"), (" ", "negative")):
        embeds, mask = pipe.encode_prompt(prompt=[prompt], image=[resized], device="cpu")
        assert mask is None and cond.tensors[f"{key}_mask"].all()          # one prompt: no padding
        torch.testing.assert_close(cond.tensors[f"{key}_embeds"], embeds, rtol=1e-6, atol=1e-6)   # ~1 float32 ulp
    pixels = pipe.image_processor.preprocess(resized, height, width).unsqueeze(2)
    _, source = pipe.prepare_latents(pixels, 1, 16, height, width, torch.float32, "cpu", None)
    torch.testing.assert_close(cond.tensors["source_latents"], source, rtol=0, atol=1e-6)


def test_decode_is_the_pipeline_image(policy, pipe):
    image = source_image(2)
    cond = policy.encode([image], INSTRUCTIONS[:1])
    noise = policy.noise(cond, [torch.Generator().manual_seed(3)])
    with torch.no_grad():
        theirs = pipe(image=image, prompt=INSTRUCTIONS[0], num_inference_steps=2, latents=noise.clone(),
                      true_cfg_scale=1.0, output_type="np").images                   # [1, H, W, 3] in [0, 1]
        ours = policy.decode(euler(policy, cond, noise, 2, None), cond)
    assert ours.dtype == torch.uint8 and ours.shape == (1, 3, *cond.image_size)
    expected = torch.from_numpy((theirs * 255).round()).permute(0, 3, 1, 2)
    assert (ours.float() - expected).abs().max() <= 1


def test_true_cfg_is_cfg_combine_of_the_prompt_and_negative_passes(policy):
    cond = policy.encode([source_image(3)], INSTRUCTIONS[:1])
    x, t = torch.randn(1, *cond.latent_shape), torch.tensor([0.7])
    with torch.no_grad():
        v_cond = policy.velocity(x, t, cond, guidance=None)
        as_prompt = dataclasses.replace(cond, tensors=dict(cond.tensors, prompt_embeds=cond.tensors["negative_embeds"],
                                                           prompt_mask=cond.tensors["negative_mask"]))
        v_negative = policy.velocity(x, t, as_prompt, guidance=None)
        expected = ops.cfg_combine(v_cond, v_negative, 4.0, rescale="norm", backend="torch")
        torch.testing.assert_close(policy.velocity(x, t, cond), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(policy.velocity(x, t, cond, guidance=1.0), v_cond, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# the condition: once per pair, select()
# ---------------------------------------------------------------------------------------------------------
def test_condition_is_encoded_once_per_pair_and_select_reuses_it(policy):
    calls = {"text_rows": 0, "vae_images": 0}
    text_hook = policy.components.text_encoder.register_forward_hook(
        lambda _m, _a, kwargs, _o: calls.__setitem__("text_rows", calls["text_rows"] + kwargs["input_ids"].shape[0]),
        with_kwargs=True)
    vae_hook = policy.vae.encoder.register_forward_hook(
        lambda _m, args, _o: calls.__setitem__("vae_images", calls["vae_images"] + args[0].shape[0]))
    try:
        images = [source_image(4), source_image(5)]
        cond = policy.encode(images, INSTRUCTIONS)
        assert calls == {"text_rows": 4, "vae_images": 2}       # each pair: its prompt, its negative, its source
        group = 3
        rows = cond.select(torch.arange(2).repeat_interleave(group))
        x = torch.randn(2 * group, *cond.latent_shape)
        t = torch.full((2 * group,), 0.5)
        with torch.no_grad():
            grouped = policy.velocity(x, t, rows)
            assert calls == {"text_rows": 4, "vae_images": 2}   # velocities never re-encode
            for pair in range(2):
                alone = policy.encode(images[pair:pair + 1], INSTRUCTIONS[pair:pair + 1])
                members = slice(pair * group, (pair + 1) * group)
                torch.testing.assert_close(grouped[members],
                                           policy.velocity(x[members], t[members], alone.select([0] * group)),
                                           rtol=1e-4, atol=1e-4)
    finally:
        text_hook.remove()
        vae_hook.remove()
    assert rows.batch_size == 2 * group and cond.extras["prompt_padded"]       # different instruction lengths


def test_uint8_tensor_sources_equal_pil_sources(policy):
    image = source_image(6, size=(64, 64))
    as_tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    a, b = policy.encode([image], INSTRUCTIONS[:1]), policy.encode([as_tensor], INSTRUCTIONS[:1])
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


def test_encode_rejects_mismatched_inputs(policy):
    with pytest.raises(ValueError, match="one instruction per source"):
        policy.encode([source_image(0)], list(INSTRUCTIONS))
    with pytest.raises(ValueError, match="different edit sizes"):
        policy.encode([source_image(0, (64, 64)), source_image(1, (128, 48))], list(INSTRUCTIONS))
    cond = policy.encode([source_image(0)], INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="does not match the condition"):
        policy.velocity(torch.randn(2, *cond.latent_shape), torch.ones(2), cond)


def test_tiny_tokenizer_is_deterministic_and_the_drop_index_is_its_system_prompt():
    first, second = build_tokenizer(), build_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    tokens = first.tokenize(PROMPT_TEMPLATE.format(INSTRUCTIONS[0]))
    assert tokens.index("<|vision_start|>") == DROP_INDEX                 # dropping 64 drops exactly the system part
    assert tokens[DROP_INDEX - 2:DROP_INDEX + 1] == ["user", "Ċ", "<|vision_start|>"]


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_a_saved_folder_loads_to_the_same_policy(policy, tmp_path):
    policy.pipeline().save_pretrained(tmp_path)
    loaded = qwen_image_edit.load(path=tmp_path, target_area=policy.target_area)
    for parameter in loaded.transformer.parameters():       # memory-mapped safetensors can sit off the 64-byte
        parameter.data = parameter.data.clone()             # alignment, which picks another GEMM kernel (1e-7)
    image = source_image(7)
    a, b = policy.encode([image], INSTRUCTIONS[:1]), loaded.encode([image], INSTRUCTIONS[:1])
    x, t = torch.randn(1, *a.latent_shape), torch.tensor([0.4])
    with torch.no_grad():
        assert torch.equal(policy.velocity(x, t, a), loaded.velocity(x, t, b))
    assert loaded.metadata()["origin"] == f"path:{tmp_path}"


def test_missing_or_incomplete_folder_errors_name_the_missing_parts(policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy("qwen-image-edit", path=str(tmp_path / "absent"))
    policy.pipeline().save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "vae")
    os.remove(tmp_path / "scheduler" / "scheduler_config.json")
    for weights in (tmp_path / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_policy("qwen-image-edit", path=str(tmp_path))
    message = str(error.value)
    assert "vae/" in message and "scheduler/scheduler_config.json" in message and "text_encoder/ (" in message
    assert "transformer" not in message.split("missing:")[1].split(".")[0]


def test_metadata_records_the_attention_choice_and_origin(policy):
    meta = policy.metadata()
    assert meta["family"] == "qwen-image-edit" and meta["origin"] == "preset:tiny"
    assert meta["attention"] == policy.attention_backend == meta["attention_probe"]["backend"]
    assert meta["attention_probe"]["probe"]["mask"]                 # padded prompts need a key mask


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="tiny"):
        load_policy("qwen-image-edit", preset="huge")


# ---------------------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------------------
def test_lora_saved_loads_into_the_pipeline_with_the_same_velocity(tmp_path):
    trained = load_policy("qwen-image-edit", preset="tiny")
    cond = trained.encode([source_image(8)], INSTRUCTIONS[:1])
    x, t = torch.randn(2, *cond.latent_shape), torch.tensor([0.9, 0.3])
    rows = cond.select([0, 0])
    with torch.no_grad():
        base = trained.velocity(x, t, rows)
    trained.add_lora(rank=4, alpha=8)
    with torch.no_grad():
        for parameter in trained.lora_parameters():
            parameter.normal_(0, 0.2, generator=torch.Generator().manual_seed(parameter.numel()))
        adapted = trained.velocity(x, t, rows)
        with trained.use_adapter(None):
            torch.testing.assert_close(trained.velocity(x, t, rows), base, rtol=0, atol=0)
    assert (adapted - base).abs().max() > 1e-3
    path = trained.save_lora(str(tmp_path))
    assert path.endswith(".safetensors")

    fresh = load_policy("qwen-image-edit", preset="tiny")                 # same seed: the same base weights
    fresh.pipeline().load_lora_weights(str(tmp_path))                     # diffusers' loader on a fresh pipeline
    with torch.no_grad():
        torch.testing.assert_close(fresh.velocity(x, t, rows), adapted, rtol=1e-6, atol=1e-6)
