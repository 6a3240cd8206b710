"""The shared Qwen2.5-VL: tiny preset determinism, tokenizers learnt on templates, folder loading and its errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.vlm import qwen2_5_vl
from editrl_engine.vlm.images import as_rgb_image

TEMPLATE = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Judge this picture: {}<|im_end|>\n"


def prompt_inputs(vlm, text="make the circle red"):
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (60, 44, 3), dtype=np.uint8))
    return vlm.processor(text=[TEMPLATE.format(text)], images=[image], return_tensors="pt")


def logits(vlm, inputs):
    with torch.no_grad():
        return vlm.model(**inputs).logits                                                  # [1, S, V]


@pytest.fixture(scope="module")
def tiny():
    return qwen2_5_vl.load(preset="tiny", templates=(TEMPLATE,))


def test_the_tiny_preset_is_deterministic_and_its_tokenizer_learns_the_template(tiny):
    again = qwen2_5_vl.load(preset="tiny", templates=(TEMPLATE,))
    assert tiny.tokenizer.get_vocab() == again.tokenizer.get_vocab()
    assert torch.equal(logits(tiny, prompt_inputs(tiny)), logits(again, prompt_inputs(again)))
    assert tiny.tokenizer.tokenize("Judge this picture:") == ["Judge", "Ġthis", "Ġpicture", ":"]
    assert all(len(tiny.tokenizer.encode(str(d), add_special_tokens=False)) == 1 for d in range(10))
    other_seed = qwen2_5_vl.load(preset="tiny", templates=(TEMPLATE,), seed=1)
    assert not torch.equal(logits(tiny, prompt_inputs(tiny)), logits(other_seed, prompt_inputs(other_seed)))
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())


def test_images_come_from_pil_or_uint8_tensors():
    pixels = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    image = as_rgb_image(pixels)
    assert image.size == (7, 5) and torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1), pixels)
    assert as_rgb_image(image.convert("L")).mode == "RGB"
    with pytest.raises(TypeError, match="uint8 tensor"):
        as_rgb_image(pixels.float())


def test_a_saved_folder_loads_to_the_same_model(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = qwen2_5_vl.load(path=tmp_path)
    assert loaded.origin == f"path:{tmp_path}"
    assert loaded.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()
    assert torch.equal(logits(tiny, prompt_inputs(tiny)), logits(loaded, prompt_inputs(loaded)))


def test_a_missing_folder_or_file_is_named(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qwen2_5_vl.load(path=tmp_path / "absent")
    tiny.model.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json.*preprocessor_config.json"):
        qwen2_5_vl.load(path=tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"missing: config\.json\."):
        qwen2_5_vl.load(path=tmp_path)


def test_load_wants_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        qwen2_5_vl.load()
    with pytest.raises(ValueError, match="unknown Qwen2.5-VL preset"):
        qwen2_5_vl.load(preset="huge")
