"""The mllm_logit reward on the tiny Qwen2.5-VL: batched, left-padded scoring equals an independent per-sample
eager forward (softmax over the digit logits in float64); digit ids, image-token cap, folder loading."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2Tokenizer

from editrl_engine.reward import load_reward, mllm_logit
from editrl_engine.vlm import qwen2_5_vl
from editrl_engine.vlm.qwen2_5_vl.tokenizer import _vocab_and_merges

INSTRUCTIONS = ["make it red", "turn the big blue circle into a small yellow square in the top left corner",
                "add a cat", "remove the tree and keep the sky", "paint the house green"]
REQUIREMENTS = [None, "keep the background", None, "the sky must stay blue", None]
SIZES = [(64, 64), (80, 48), (40, 72), (96, 96), (56, 84)]


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


SOURCES = [image(i, s) for i, s in enumerate(SIZES)]
EDITED = [image(10 + i, s) for i, s in enumerate(SIZES)]


@pytest.fixture(scope="module")
def reward():
    return load_reward("mllm_logit", preset="tiny", batch_size=3)


def reference_rewards(requirements) -> list[float]:
    """Per sample: a fresh copy of the tiny model with eager attention, the full logits at the last position,
    softmax over the digits' logits in float64, sum_k k p_k / 5."""
    vlm = qwen2_5_vl.load(preset="tiny", templates=(mllm_logit.PROMPT_TEMPLATE, mllm_logit.REQUIREMENT_LINE))
    vlm.model.set_attn_implementation("eager")
    digits = [vlm.tokenizer.convert_tokens_to_ids(str(k)) for k in range(6)]
    size = vlm.processor.image_processor.size
    rewards = []
    for source, instruction, requirement, edited in zip(SOURCES, INSTRUCTIONS, requirements, EDITED):
        inputs = vlm.processor(text=[mllm_logit.build_prompt(instruction, requirement)], images=[source, edited],
                               size={"shortest_edge": size["shortest_edge"], "longest_edge": size["longest_edge"]},
                               return_tensors="pt")
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0, -1].double()                            # [V]
        p = torch.softmax(logits[digits], dim=0)
        rewards.append(float((p * torch.arange(6, dtype=torch.float64)).sum() / 5))
    return rewards


def test_batched_padded_scoring_equals_per_sample_eager_forwards(reward):
    batch = reward.score(SOURCES, INSTRUCTIONS, EDITED, requirements=REQUIREMENTS)
    assert batch.reward.dtype == torch.float32 and batch.failures == 0
    torch.testing.assert_close(batch.reward, torch.tensor(reference_rewards(REQUIREMENTS), dtype=torch.float32),
                               rtol=1e-5, atol=1e-6)
    for detail, r in zip(batch.details, batch.reward.tolist()):
        p = torch.tensor(detail["probabilities"], dtype=torch.float64)
        assert p.shape == (6,) and abs(float(p.sum()) - 1) < 1e-12
        assert abs(detail["expected_rating"] / 5 - r) < 1e-6 and 0 <= r <= 1


def test_the_batch_size_and_image_type_do_not_change_the_reward(reward):
    whole = reward.score(SOURCES, INSTRUCTIONS, EDITED).reward
    tensors = [torch.from_numpy(np.array(e)).permute(2, 0, 1) for e in EDITED]                # uint8 [3, H, W]
    singles = torch.cat([reward.score(SOURCES[i:i + 1], INSTRUCTIONS[i:i + 1], tensors[i:i + 1]).reward
                         for i in range(len(SOURCES))])
    torch.testing.assert_close(whole, singles, rtol=1e-5, atol=1e-6)


def test_the_requirement_enters_the_prompt():
    assert "Task requirement: keep the background\n" in mllm_logit.build_prompt("make it red", "keep the background")
    assert "requirement:" not in mllm_logit.build_prompt("make it red")
    assert mllm_logit.build_prompt("make it red").endswith("<|im_start|>assistant\n")
    with_default = load_reward("mllm_logit", preset="tiny", requirement="keep the background")
    explicit = with_default.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2], requirements=["keep the background"] * 2)
    torch.testing.assert_close(with_default.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2]).reward, explicit.reward)
    with pytest.raises(ValueError, match="1 requirements for 2 samples"):
        with_default.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2], requirements=["x"])


def test_image_tokens_are_capped():
    capped = load_reward("mllm_logit", preset="tiny", max_image_pixels=56 * 56)
    grids = capped.inputs([image(0, (400, 300))], ["make it red"], [image(1, (300, 400))], [None])["image_grid_thw"]
    assert (grids.prod(dim=1) * 14 * 14 <= 56 * 56).all()                                    # patches of 14²


def test_digit_ids_come_from_the_tokenizer(reward):
    tokenizer = reward.vlm.tokenizer
    assert reward.digit_ids == [tokenizer.convert_tokens_to_ids(str(k)) for k in range(6)]
    vocab, merges = _vocab_and_merges(())
    vocab = {token: i for token, i in vocab.items() if token != "3"}
    merges = [pair for pair in merges if "3" not in pair[0] + pair[1]]
    lacking_three = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None)
    with pytest.raises(ValueError, match=r"rating 0\.\.5 to be a single token.*'3' as 0 tokens"):
        mllm_logit.digit_token_ids(lacking_three)


def test_a_saved_folder_gives_the_same_rewards(reward, tmp_path):
    reward.vlm.model.save_pretrained(tmp_path)
    reward.vlm.processor.save_pretrained(tmp_path)
    loaded = load_reward("mllm_logit", path=tmp_path, batch_size=3)
    assert loaded.metadata()["origin"] == f"path:{tmp_path}"
    torch.testing.assert_close(loaded.score(SOURCES, INSTRUCTIONS, EDITED).reward,
                               reward.score(SOURCES, INSTRUCTIONS, EDITED).reward, rtol=0, atol=0)
    os.remove(tmp_path / "tokenizer_config.json")
    with pytest.raises(FileNotFoundError, match="missing: tokenizer_config.json"):
        load_reward("mllm_logit", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reward("mllm_logit", path=tmp_path / "absent")


def test_unknown_backends_are_refused():
    with pytest.raises(ValueError, match="unknown mllm_logit backend 'bogus'"):
        load_reward("mllm_logit", preset="tiny", backend="bogus")


def test_a_qwen3_vl_judge_loads_by_family_and_scores():
    reward = load_reward("mllm_logit", preset="tiny", family="qwen3-vl")
    assert reward.vlm.model.config.model_type == "qwen3_vl"
    batch = reward.score(SOURCES[:2], INSTRUCTIONS[:2], EDITED[:2])
    assert batch.failures == 0 and bool(((batch.reward >= 0) & (batch.reward <= 1)).all())
