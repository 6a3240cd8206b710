"""Shared-prefix group scoring of the mllm_logit reward (tiny Qwen2.5-VL, fp32): equal to per-triple score() for
any group sizes and instruction lengths, and the shared prefix (source image included) is computed once per group."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.reward import load_reward, mllm_logit

INSTRUCTIONS = ["make it red", "turn the big blue circle into a small yellow square in the top left corner",
                "add a cat", "remove the tree and keep the sky"]
REQUIREMENTS = [None, "keep the background", None, "the sky must stay blue"]
SOURCE_SIZES = [(64, 64), (80, 48), (40, 72), (96, 96)]
EDIT_SIZES = [(64, 64), (56, 84), (96, 40), (72, 72)]


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


SOURCES = [image(i, s) for i, s in enumerate(SOURCE_SIZES)]


def candidates(sizes: list[int]) -> list[list[Image.Image]]:
    """Group g of sizes[g] edits of mixed sizes (so suffixes are left-padded too)."""
    return [[image(100 * g + k, EDIT_SIZES[(g + k) % len(EDIT_SIZES)]) for k in range(n)] for g, n in enumerate(sizes)]


def flat(groups, per_group):
    return [x for g, group in enumerate(groups) for x in [per_group[g]] * len(group)]


@pytest.fixture(scope="module")
def reward():
    return load_reward("mllm_logit", preset="tiny", batch_size=4)


@pytest.mark.parametrize("sizes", [[1], [3], [12], [1, 3, 12, 2], [5, 1, 7]], ids=str)
def test_group_scoring_equals_per_triple_scoring(reward, sizes):
    groups = candidates(sizes)
    n = len(sizes)
    grouped = reward.score_groups(SOURCES[:n], INSTRUCTIONS[:n], groups, requirements=REQUIREMENTS[:n])
    unshared = reward.score(flat(groups, SOURCES), flat(groups, INSTRUCTIONS), [e for g in groups for e in g],
                            requirements=flat(groups, REQUIREMENTS))
    assert len(grouped) == sum(sizes) and grouped.failures == 0
    torch.testing.assert_close(grouped.reward, unshared.reward, rtol=1e-5, atol=0)
    p_grouped = torch.tensor([d["probabilities"] for d in grouped.details])              # [N, 6]
    p_unshared = torch.tensor([d["probabilities"] for d in unshared.details])
    torch.testing.assert_close(p_grouped, p_unshared, rtol=1e-5, atol=0)


def test_prefix_and_suffix_tokenise_like_the_whole_prompt(reward):
    tokenizer = reward.vlm.tokenizer
    for instruction, requirement in zip(INSTRUCTIONS, REQUIREMENTS):
        whole = tokenizer.encode(mllm_logit.build_prompt(instruction, requirement))
        prefix = tokenizer.encode(mllm_logit.build_prefix(instruction, requirement))
        parts = prefix + tokenizer.encode(mllm_logit.SUFFIX)
        assert whole == parts


def count_work(model):
    """Counts vision-encoder calls and patches, and the tokens each decoder forward processes."""
    counts = {"vision_calls": 0, "patches": 0, "decoder_tokens": 0}

    def vision(module, args, kwargs):
        counts["vision_calls"] += 1
        counts["patches"] += (args[0] if args else kwargs["hidden_states"]).shape[0]

    def decoder(module, args, kwargs):
        counts["decoder_tokens"] += kwargs["inputs_embeds"].shape[:2].numel()

    hooks = [model.model.visual.register_forward_pre_hook(vision, with_kwargs=True),
             model.model.language_model.register_forward_pre_hook(decoder, with_kwargs=True)]
    return counts, hooks


def test_the_prefix_is_computed_once_per_group(reward):
    sizes = [12, 3]
    groups = candidates(sizes)
    processor = reward.vlm.processor
    prefix_tokens = [len(processor(text=[mllm_logit.build_prefix(i, r)], images=[s], size=reward.image_size)
                         ["input_ids"][0]) for i, r, s in zip(INSTRUCTIONS, REQUIREMENTS, SOURCES[:2])]
    source_patches = [int(processor.image_processor(images=[s], size=reward.image_size)["image_grid_thw"].prod())
                      for s in SOURCES[:2]]
    edited = [e for g in groups for e in g]
    grouped = measure(reward, lambda: reward.score_groups(SOURCES[:2], INSTRUCTIONS[:2], groups,
                                                          requirements=REQUIREMENTS[:2]))
    unshared = measure(reward, lambda: reward.score(flat(groups, SOURCES), flat(groups, INSTRUCTIONS), edited,
                                                    requirements=flat(groups, REQUIREMENTS)))
    edited_patches = sum(int(processor.image_processor(images=[e], size=reward.image_size)["image_grid_thw"].prod())
                         for e in edited)
    suffix_tokens = processor(text=[mllm_logit.SUFFIX] * 15, images=edited, size=reward.image_size, padding=True,
                              return_tensors="pt")["attention_mask"].sum(dim=1)             # [15]
    # batch_size 4: one prefill of both groups, then the 15 candidates in 4 chunks -> 5 vision calls
    assert grouped["vision_calls"] == 1 + 4
    assert grouped["patches"] == sum(source_patches) + edited_patches                 # each source encoded once
    assert unshared["patches"] == 12 * source_patches[0] + 3 * source_patches[1] + edited_patches
    # the decoder sees the padded prefix batch once, then only suffix tokens (each chunk padded to its longest)
    chunk_tokens = sum(len(c) * int(c.max()) for c in suffix_tokens.split(4))
    assert grouped["decoder_tokens"] == 2 * max(prefix_tokens) + chunk_tokens
    assert unshared["decoder_tokens"] >= 12 * prefix_tokens[0] + 3 * prefix_tokens[1] + int(suffix_tokens.sum())


def measure(reward, fn) -> dict[str, int]:
    counts, hooks = count_work(reward.vlm.model)
    try:
        fn()
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def test_groups_are_checked(reward):
    with pytest.raises(ValueError, match="empty group"):
        reward.score_groups(SOURCES[:2], INSTRUCTIONS[:2], [[SOURCES[0]], []])
    with pytest.raises(ValueError, match="one source, instruction and edited"):
        reward.score_groups(SOURCES[:2], INSTRUCTIONS[:1], candidates([1, 1]))
    with pytest.raises(ValueError, match="1 requirements for 2 groups"):
        reward.score_groups(SOURCES[:2], INSTRUCTIONS[:2], candidates([1, 1]), requirements=["x"])


def test_the_default_requirement_applies_to_groups():
    with_default = load_reward("mllm_logit", preset="tiny", requirement="keep the background")
    groups = candidates([2])
    torch.testing.assert_close(with_default.score_groups(SOURCES[:1], INSTRUCTIONS[:1], groups).reward,
                               with_default.score(SOURCES[:1] * 2, INSTRUCTIONS[:1] * 2, groups[0]).reward,
                               rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def images_first():
    return load_reward("mllm_logit", preset="tiny", batch_size=4, layout="uniworld")


@pytest.mark.parametrize("sizes", [[1], [3], [1, 3, 12, 2], [5, 1, 7]], ids=str)
def test_images_first_group_scoring_equals_per_triple_scoring(images_first, sizes):
    """layout uniworld: only the system prompt and the source image are shared; the edited image comes before the
    instruction, so each candidate's suffix carries its group's text."""
    groups = candidates(sizes)
    n = len(sizes)
    grouped = images_first.score_groups(SOURCES[:n], INSTRUCTIONS[:n], groups, requirements=REQUIREMENTS[:n])
    unshared = images_first.score(flat(groups, SOURCES), flat(groups, INSTRUCTIONS), [e for g in groups for e in g],
                                  requirements=flat(groups, REQUIREMENTS))
    assert len(grouped) == sum(sizes) and grouped.failures == 0
    torch.testing.assert_close(grouped.reward, unshared.reward, rtol=1e-5, atol=0)
    p_grouped = torch.tensor([d["probabilities"] for d in grouped.details])
    p_unshared = torch.tensor([d["probabilities"] for d in unshared.details])
    torch.testing.assert_close(p_grouped, p_unshared, rtol=1e-5, atol=0)


def test_images_first_prefix_is_the_source_image_computed_once(images_first):
    layout, tokenizer, processor = images_first.layout, images_first.vlm.tokenizer, images_first.vlm.processor
    for instruction, requirement in zip(INSTRUCTIONS, REQUIREMENTS):
        prefix = layout.prefix(instruction, requirement)
        assert prefix.endswith("<|vision_end|>") and prefix.count("<|image_pad|>") == 1 and instruction not in prefix
        assert tokenizer.encode(layout.prompt(instruction, requirement)) == (
            tokenizer.encode(prefix) + tokenizer.encode(layout.suffix(instruction, requirement)))
    groups = candidates([12, 3])
    edited = [e for g in groups for e in g]
    grouped = measure(images_first, lambda: images_first.score_groups(SOURCES[:2], INSTRUCTIONS[:2], groups,
                                                                      requirements=REQUIREMENTS[:2]))
    patches = [int(processor.image_processor(images=[x], size=images_first.image_size)["image_grid_thw"].prod())
               for x in SOURCES[:2] + edited]
    assert grouped["vision_calls"] == 1 + 4 and grouped["patches"] == sum(patches)      # each source encoded once
