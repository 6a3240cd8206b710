"""Qwen-Image-Edit-Plus policy (2509 / 2511) on the tiny presets: parity with diffusers' QwenImageEditPlusPipeline
with one and two reference images (latents of a 2-step Euler loop over velocity / sigmas, the condition's prompt
embeddings and reference latents, decode), a sample the same alone or batched, the tokenizer's drop index,
folder loading and its errors, and LoRA save -> pipeline.load_lora_weights -> the same velocity."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]')")
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus_pipeline  # noqa: E402

from editrl_engine.policy import load_policy, qwen_image_edit_plus  # noqa: E402
from editrl_engine.policy.qwen_image_edit import latents as lat  # noqa: E402
from editrl_engine.policy.qwen_image_edit_plus.prompt import DROP_INDEX, PROMPT_TEMPLATE, prompt_text  # noqa: E402
from editrl_engine.policy.qwen_image_edit_plus.tokenizer import build_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Attention backends are an experimental feature")
INSTRUCTIONS = ("Put the cat from picture 2 on the sofa of picture 1", "Recolour the red circle blue")
SIZES = ((80, 48), (48, 64))            # two references of different aspect ratios: the last one sets the edit size


def image(seed: int, size=(80, 48)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def references(seed: int, count: int) -> list[Image.Image]:
    return [image(seed + k, SIZES[k]) for k in range(count)]


@pytest.fixture(scope="module")
def policy():
    return load_policy("qwen-image-edit-plus", preset="tiny")


def pipeline_of(policy, monkeypatch):
    """The diffusers pipeline over the policy's modules. It edits at about 1024² pixels, with references at 1024²
    (VAE) and 384² (Qwen2.5-VL); the tiny preset's areas replace those (aspect ratios and rounding stay its own)."""
    rule = plus_pipeline.calculate_dimensions
    monkeypatch.setattr(plus_pipeline, "CONDITION_IMAGE_SIZE", policy.condition_area)
    monkeypatch.setattr(plus_pipeline, "VAE_IMAGE_SIZE", policy.reference_area or policy.target_area)
    monkeypatch.setattr(plus_pipeline, "calculate_dimensions",
                        lambda area, ratio: rule(policy.target_area if area == 1024 * 1024 else area, ratio))
    pipeline = policy.pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def pipe(policy, monkeypatch):
    return pipeline_of(policy, monkeypatch)


def euler(policy, cond, noise, num_steps, guidance):
    sigmas = policy.sigmas(num_steps, cond)
    x = noise
    for i in range(num_steps):
        x = x + (sigmas[i + 1] - sigmas[i]) * policy.velocity(x, sigmas[i].expand(x.shape[0]), cond, guidance)
    return x


# ---------------------------------------------------------------------------------------------------------
# parity with QwenImageEditPlusPipeline
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, count, guidance, reference_area", [
    ("tiny", 1, 4.0, None), ("tiny", 2, 4.0, None), ("tiny", 2, None, None), ("tiny-2511", 2, 4.0, None),
    ("tiny", 2, 4.0, 48 * 48),          # references' VAE images smaller than the edit
])
def test_euler_with_encode_velocity_sigmas_reproduces_the_pipeline(policy, monkeypatch, preset, count, guidance,
                                                                   reference_area):
    model = policy if (preset, reference_area) == ("tiny", None) else \
        qwen_image_edit_plus.load(preset=preset, reference_area=reference_area)
    pipe = pipeline_of(model, monkeypatch)
    refs, num_steps = references(0, count), 2
    cond = model.encode([refs if count > 1 else refs[0]], INSTRUCTIONS[:1])
    assert cond.extras["num_references"] == count and len(cond.extras["img_shapes"]) == 1 + count
    noise = model.noise(cond, [torch.Generator().manual_seed(5)])
    cfg = dict(negative_prompt=" ", true_cfg_scale=guidance) if guidance else dict(true_cfg_scale=1.0)
    with torch.no_grad():
        theirs = pipe(image=refs if count > 1 else refs[0], prompt=INSTRUCTIONS[0], num_inference_steps=num_steps,
                      latents=noise.clone(), output_type="latent", **cfg).images
        torch.testing.assert_close(model.sigmas(num_steps, cond), pipe.scheduler.sigmas, rtol=0, atol=1e-7)
        ours = euler(model, cond, noise, num_steps, guidance)
    assert ours.shape == theirs.shape == (1, *cond.latent_shape)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_condition_holds_the_pipeline_prompt_embeddings_and_reference_latents(policy, pipe):
    refs = references(1, 2)
    cond = policy.encode([refs], INSTRUCTIONS[:1])
    assert pipe.prompt_template_encode == PROMPT_TEMPLATE and pipe.prompt_template_encode_start_idx == DROP_INDEX
    width, height = lat.edit_size(*refs[-1].size, policy.target_area)                  # the LAST reference's ratio
    assert cond.image_size == (height, width) and cond.latent_shape == (height * width // 256, 64)
    conditions, vae_images, shapes = [], [], [(1, height // 16, width // 16)]
    for ref in refs:
        cw, ch = plus_pipeline.calculate_dimensions(policy.condition_area, ref.size[0] / ref.size[1])
        vw, vh = plus_pipeline.calculate_dimensions(policy.target_area, ref.size[0] / ref.size[1])
        conditions.append(pipe.image_processor.resize(ref, ch, cw))
        vae_images.append(pipe.image_processor.preprocess(ref, vh, vw).unsqueeze(2))
        shapes.append((1, vh // 16, vw // 16))
    assert cond.extras["img_shapes"] == shapes
    for prompt, key in ((INSTRUCTIONS[0], "prompt"), (" ", "negative")):
        embeds, mask = pipe.encode_prompt(prompt=[prompt], image=conditions, device="cpu")
        assert mask is None and cond.tensors[f"{key}_mask"].all()          # one prompt: no padding
        torch.testing.assert_close(cond.tensors[f"{key}_embeds"], embeds, rtol=1e-6, atol=1e-6)
    _, source = pipe.prepare_latents(vae_images, 1, 16, height, width, torch.float32, "cpu", None)
    torch.testing.assert_close(cond.tensors["source_latents"], source, rtol=0, atol=1e-6)


def test_decode_is_the_pipeline_image(policy, pipe):
    refs = references(2, 2)
    cond = policy.encode([refs], INSTRUCTIONS[:1])
    noise = policy.noise(cond, [torch.Generator().manual_seed(3)])
    with torch.no_grad():
        theirs = pipe(image=refs, prompt=INSTRUCTIONS[0], num_inference_steps=2, latents=noise.clone(),
                      true_cfg_scale=1.0, output_type="np").images                   # [1, H, W, 3] in [0, 1]
        ours = policy.decode(euler(policy, cond, noise, 2, None), cond)
    assert ours.dtype == torch.uint8 and ours.shape == (1, 3, *cond.image_size)
    expected = torch.from_numpy((theirs * 255).round()).permute(0, 3, 1, 2)
    assert (ours.float() - expected).abs().max() <= 1


# ---------------------------------------------------------------------------------------------------------
# the condition: a sample is the same alone or batched
# ---------------------------------------------------------------------------------------------------------
def test_a_sample_is_the_same_alone_or_batched(policy):
    groups = [references(4, 2), references(6, 2)]
    cond = policy.encode(groups, INSTRUCTIONS)
    assert cond.batch_size == 2 and cond.extras["prompt_padded"]                # different instruction lengths
    group = 2
    rows = cond.select(torch.arange(2).repeat_interleave(group))
    x = torch.randn(2 * group, *cond.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2 * group,), 0.6)
    with torch.no_grad():
        grouped = policy.velocity(x, t, rows)
        for pair in range(2):
            alone = policy.encode(groups[pair:pair + 1], INSTRUCTIONS[pair:pair + 1])
            for key in ("prompt_embeds", "negative_embeds"):
                width = alone.tensors[key].shape[1]
                torch.testing.assert_close(cond.tensors[key][pair, :width], alone.tensors[key][0],
                                           rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(cond.tensors["source_latents"][pair], alone.tensors["source_latents"][0],
                                       rtol=1e-5, atol=1e-5)
            members = slice(pair * group, (pair + 1) * group)
            torch.testing.assert_close(grouped[members],
                                       policy.velocity(x[members], t[members], alone.select([0] * group)),
                                       rtol=1e-4, atol=1e-4)


def test_uint8_tensor_references_equal_pil_references(policy):
    refs = references(8, 2)
    as_tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in refs]
    a, b = policy.encode([refs], INSTRUCTIONS[:1]), policy.encode([tuple(as_tensors)], INSTRUCTIONS[:1])
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


def test_encode_rejects_mismatched_inputs(policy):
    with pytest.raises(ValueError, match="one instruction per source"):
        policy.encode([image(0)], list(INSTRUCTIONS))
    with pytest.raises(ValueError, match="at least one reference"):
        policy.encode([[]], INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="reference layouts"):                  # one vs two references
        policy.encode([references(0, 1), references(0, 2)], list(INSTRUCTIONS))
    cond = policy.encode([references(0, 2)], INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="does not match the condition"):
        policy.velocity(torch.randn(2, *cond.latent_shape), torch.ones(2), cond)


def test_tiny_tokenizer_is_deterministic_and_the_drop_index_is_its_system_prompt():
    first, second = build_tokenizer(), build_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    tokens = first.tokenize(prompt_text(INSTRUCTIONS[0], 2))
    assert tokens[DROP_INDEX - 2:DROP_INDEX + 1] == ["user", "Ċ", "Picture"]   # dropping 64 drops the system part
    assert tokens.count("<|vision_start|>") == 2


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_a_saved_folder_loads_to_the_same_policy(policy, tmp_path):
    policy.pipeline().save_pretrained(tmp_path)
    loaded = qwen_image_edit_plus.load(path=tmp_path, target_area=policy.target_area,
                                       condition_area=policy.condition_area)
    assert type(loaded.pipeline()).__name__ == "QwenImageEditPlusPipeline"
    for parameter in loaded.transformer.parameters():       # memory-mapped safetensors can sit off the 64-byte
        parameter.data = parameter.data.clone()             # alignment, which picks another GEMM kernel (1e-7)
    refs = references(9, 2)
    a, b = policy.encode([refs], INSTRUCTIONS[:1]), loaded.encode([refs], INSTRUCTIONS[:1])
    x, t = torch.randn(1, *a.latent_shape), torch.tensor([0.4])
    with torch.no_grad():
        assert torch.equal(policy.velocity(x, t, a), loaded.velocity(x, t, b))
    assert loaded.metadata()["origin"] == f"path:{tmp_path}"


def test_missing_or_incomplete_folder_errors_name_the_missing_parts(policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy("qwen-image-edit-plus", path=str(tmp_path / "absent"))
    policy.pipeline().save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "vae")
    os.remove(tmp_path / "scheduler" / "scheduler_config.json")
    os.remove(tmp_path / "tokenizer" / "tokenizer_config.json")
    for weights in (tmp_path / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_policy("qwen-image-edit-plus", path=str(tmp_path))
    message = str(error.value)
    assert message.startswith("Qwen-Image-Edit-Plus folder")
    missing = message.split("missing:")[1].split(". Expected")[0]
    assert {part.strip() for part in missing.split(", ")} == {
        "vae/", "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
        "text_encoder/ (*.safetensors or *.bin)"}


def test_metadata_and_presets(policy):
    meta = policy.metadata()
    assert meta["family"] == "qwen-image-edit-plus" and meta["origin"] == "preset:tiny"
    assert meta["attention"] == policy.attention_backend == meta["attention_probe"]["backend"]
    assert meta["reference_area"] == policy.target_area and meta["condition_area"] == policy.condition_area
    assert meta["zero_cond_t"] is False
    with pytest.raises(ValueError, match="tiny"):
        load_policy("qwen-image-edit-plus", preset="huge")


# ---------------------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------------------
def test_lora_saved_loads_into_the_pipeline_with_the_same_velocity(tmp_path):
    trained = load_policy("qwen-image-edit-plus", preset="tiny")
    cond = trained.encode([references(10, 2)], INSTRUCTIONS[:1])
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

    fresh = load_policy("qwen-image-edit-plus", preset="tiny")            # same seed: the same base weights
    pipeline = fresh.pipeline()
    assert type(pipeline).__name__ == "QwenImageEditPlusPipeline"
    pipeline.load_lora_weights(str(tmp_path))                              # diffusers' loader on a fresh pipeline
    with torch.no_grad():
        torch.testing.assert_close(fresh.velocity(x, t, rows), adapted, rtol=1e-6, atol=1e-6)


def test_the_2511_preset_is_the_same_weights_with_zero_cond_t(policy):
    model = load_policy("qwen-image-edit-plus", preset="tiny-2511")
    assert model.metadata()["zero_cond_t"] is True
    ours, theirs = policy.transformer.state_dict(), model.transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    refs = references(11, 2)
    a, b = policy.encode([refs], INSTRUCTIONS[:1]), model.encode([refs], INSTRUCTIONS[:1])
    x, t = torch.randn(1, *a.latent_shape), torch.tensor([0.5])
    with torch.no_grad():                                   # references modulated at timestep 0: another velocity
        assert (policy.velocity(x, t, a) - model.velocity(x, t, b)).abs().max() > 1e-4
