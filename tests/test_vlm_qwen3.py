"""The shared Qwen3-VL and the family switch: tiny preset forward and determinism, folder round trip, missing
files named, family detection from config.json, the error when transformers lacks Qwen3-VL, and the mllm_logit
judge (digit ids, group scoring through the prefix cache) on a Qwen3-VL model."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine import vlm as vlms
from editrl_engine.reward import mllm_logit
from editrl_engine.vlm import qwen2_5_vl, qwen3_vl

TEMPLATE = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Judge this picture: {}<|im_end|>\n"


def picture(seed=0, size=(44, 60)):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def prompt_inputs(vlm, text="make the circle red"):
    return vlm.processor(text=[TEMPLATE.format(text)], images=[picture()], return_tensors="pt")


def logits(vlm, inputs):
    with torch.no_grad():
        return vlm.model(**inputs).logits                                                  # [1, S, V]


@pytest.fixture(scope="module")
def tiny():
    return qwen3_vl.load(preset="tiny", templates=(TEMPLATE,))


def test_the_tiny_preset_runs_a_processed_image_text_prompt(tiny):
    from transformers import Qwen3VLForConditionalGeneration
    assert isinstance(tiny.model, Qwen3VLForConditionalGeneration) and tiny.origin == "preset:tiny"
    inputs = prompt_inputs(tiny)
    grid = inputs["image_grid_thw"][0]                                                     # (t, h, w) 16-px patches
    image_tokens = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert image_tokens == int(grid.prod()) // 4 and inputs["pixel_values"].shape[-1] == 3 * 2 * 16 * 16
    assert int(inputs["mm_token_type_ids"].sum()) == image_tokens
    out = logits(tiny, inputs)
    assert out.shape == (1, inputs["input_ids"].shape[1], len(tiny.tokenizer)) and torch.isfinite(out).all()
    again = qwen3_vl.load(preset="tiny", templates=(TEMPLATE,))
    assert torch.equal(out, logits(again, prompt_inputs(again)))
    other = qwen3_vl.load(preset="tiny", templates=(TEMPLATE,), seed=1)
    assert not torch.equal(out, logits(other, prompt_inputs(other)))
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.tokenizer.get_vocab() == qwen2_5_vl.build_tokenizer((TEMPLATE,)).get_vocab()


def test_a_saved_folder_loads_to_the_same_model_by_family_or_detection(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    assert vlms.family_of(tmp_path) == "qwen3-vl"
    for loaded in (qwen3_vl.load(path=tmp_path), vlms.load(path=tmp_path), vlms.load(tmp_path, family="qwen3-vl")):
        assert loaded.origin == f"path:{tmp_path}" and type(loaded.model) is type(tiny.model)
        assert loaded.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
        assert torch.equal(logits(tiny, prompt_inputs(tiny)), logits(loaded, prompt_inputs(loaded)))
    other = tmp_path / "qwen2.5"
    qwen2_5_vl.load(preset="tiny").model.save_pretrained(other)
    tiny.processor.save_pretrained(other)
    with pytest.raises(ValueError, match="holds a 'qwen2_5_vl' model, not Qwen3-VL"):
        qwen3_vl.load(path=other)
    assert vlms.family_of(other) == "qwen2.5-vl"


def test_a_missing_folder_or_file_is_named(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qwen3_vl.load(path=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vlms.load(path=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="missing: config.json"):
        vlms.family_of(tmp_path / "absent")
    tiny.model.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json.*preprocessor_config.json"):
        qwen3_vl.load(path=tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing: weights \(\*\.safetensors or \*\.bin\)\."):
        vlms.load(path=tmp_path)


def test_the_family_switch_keeps_qwen2_5_vl_the_default_and_rejects_unknowns(tmp_path):
    assert vlms.load(preset="tiny", templates=(TEMPLATE,)).model.config.model_type == "qwen2_5_vl"
    assert vlms.load(preset="tiny", family="qwen3-vl", templates=(TEMPLATE,)).model.config.model_type == "qwen3_vl"
    with pytest.raises(ValueError, match="unknown VLM family 'qwen9'.*qwen2.5-vl, qwen3-vl"):
        vlms.load(preset="tiny", family="qwen9")
    with pytest.raises(ValueError, match="unknown Qwen3-VL preset"):
        qwen3_vl.load(preset="huge")
    with pytest.raises(ValueError, match="exactly one"):
        vlms.load(family="qwen3-vl")
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(ValueError, match="model_type 'llava'"):
        vlms.load(path=tmp_path)


def test_without_qwen3_vl_in_transformers_the_error_names_the_version(monkeypatch, tmp_path):
    monkeypatch.setattr(qwen3_vl.support, "transformers_has_qwen3_vl", lambda: False)
    for call in (lambda: qwen3_vl.load(preset="tiny"), lambda: vlms.load(tmp_path, family="qwen3-vl")):
        with pytest.raises(ImportError, match=r"Qwen3-VL needs transformers >= 4\.57\.0; the installed"):
            call()


def test_the_mllm_logit_judge_runs_on_qwen3_vl():
    vlm = qwen3_vl.load(preset="tiny", templates=(mllm_logit.PROMPT_TEMPLATE, mllm_logit.REQUIREMENT_LINE))
    ids = mllm_logit.digit_token_ids(vlm.tokenizer)
    assert ids == [vlm.tokenizer.convert_tokens_to_ids(str(k)) for k in range(6)] and len(set(ids)) == 6
    reward = mllm_logit.MllmLogitReward(vlm, batch_size=2)
    sources, instructions = [picture(1, (64, 48)), picture(2, (40, 72))], ["make it red", "add a cat"]
    candidates = [[picture(3, (64, 48)), picture(4, (56, 56))], [picture(5, (40, 72))]]
    flat = reward.score([sources[0]] * 2 + [sources[1]], [instructions[0]] * 2 + [instructions[1]],
                        [c for group in candidates for c in group])
    grouped = reward.score_groups(sources, instructions, candidates)
    assert flat.failures == grouped.failures == 0
    torch.testing.assert_close(grouped.reward, flat.reward, rtol=1e-4, atol=1e-5)
