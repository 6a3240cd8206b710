"""flux-kontext and qwen-image-edit take one source image per sample: a one-element list is that image; several
raise a ValueError that names the family and points at qwen-image-edit-plus."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.policy import load_policy
from editrl_engine.policy.base import single_sources
from editrl_engine.policy.qwen_image_edit.policy import QwenImageEditPolicy


def random_image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


def test_single_sources_unwraps_one_element_lists_and_passes_plain_sources_through():
    a, b = random_image(0), random_image(1)
    plain = [a, b]
    assert single_sources("flux-kontext", plain) is plain
    assert single_sources("flux-kontext", [[a], (b,)]) == [a, b]
    with pytest.raises(ValueError, match="flux-kontext takes one source image per sample, but sample 1 has 2; "
                                         "use qwen-image-edit-plus"):
        single_sources("flux-kontext", [a, [a, b]])
    with pytest.raises(ValueError, match="sample 0 has 0"):
        single_sources("flux-kontext", [[]])


def test_kontext_one_element_list_is_the_image_and_two_images_are_refused():
    policy = load_policy("flux-kontext", preset="tiny")
    image = random_image(3)
    a, b = policy.encode([image], ["x"]), policy.encode([[image]], ["x"])
    torch.testing.assert_close(a.tensors["source_latents"], b.tensors["source_latents"], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"flux-kontext takes one source image per sample.*qwen-image-edit-plus"):
        policy.encode([[image, random_image(4)]], ["x"])


def test_qwen_image_edit_refuses_two_images_before_touching_the_model():
    fake = types.SimpleNamespace(family="qwen-image-edit")
    with pytest.raises(ValueError, match=r"qwen-image-edit takes one source image per sample.*qwen-image-edit-plus"):
        QwenImageEditPolicy.encode(fake, [[random_image(0), random_image(1)]], ["x"])
