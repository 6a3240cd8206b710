"""Shared-prefix group scoring of the principle verifier (tiny Qwen2.5-VL, fp32): the verdict prompt splits into a
prefix and a suffix that tokenize as the whole, greedy score_groups() equals score() on the flattened triples (answer
texts, rewards, and the generation logits to 1e-5), and each group's prefix (source image included) is computed
once, not once per candidate."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.reward import load_reward
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.reward.verifier import VerifierReward

from .judge_groups import GROUPS, INSTRUCTIONS, SOURCES, cached_generate_calls, step_logits

PRINCIPLES = [["follow: the object is red", "keep: the background"],
              ["follow: a small yellow square top left", "keep: everything else", "quality: clean edges"],
              ["follow: a cat is there"]]


def flat(values, groups=GROUPS) -> list:
    return [v for v, group in zip(values, groups) for _ in group]


@pytest.fixture(scope="module")
def tiny():
    return load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 8}, batch_size=4)


def test_the_verdict_prefix_and_suffix_tokenize_as_the_whole_prompt(tiny):
    tokenizer = tiny.generate_fn.vlm.tokenizer
    for instruction, items in zip(INSTRUCTIONS + ["", "quotes {x} and \"y\"\n"], PRINCIPLES + PRINCIPLES[:2]):
        principles = vp.as_principles(items)
        whole = vp.verdict_prompt(instruction, principles)
        prefix = vp.verdict_prefix(instruction, principles)
        assert whole == prefix + vp.verdict_suffix() and whole.count("<|image_pad|>") == 2
        assert instruction in prefix and all(p.text in prefix for p in principles)     # shared by the group
        assert tokenizer.encode(prefix) + tokenizer.encode(vp.verdict_suffix()) == tokenizer.encode(whole)


def test_greedy_group_scoring_equals_flat_scoring_with_given_principles(tiny):
    grouped = tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS, principles=PRINCIPLES)
    flat_batch = tiny.score(flat(SOURCES), flat(INSTRUCTIONS), [e for g in GROUPS for e in g],
                            principles=flat(PRINCIPLES))
    assert grouped.reward.shape == (8,) and grouped.failures == flat_batch.failures
    answers = [d["answer"] for d in grouped.details]
    assert answers == [d["answer"] for d in flat_batch.details] and len(set(answers)) > 1   # images matter
    torch.testing.assert_close(grouped.reward, flat_batch.reward, equal_nan=True)
    assert [d["principles"] for d in grouped.details] == [d["principles"] for d in flat_batch.details]
    assert all(d["principles_source"] == "given" for d in grouped.details)


def test_generated_principles_are_drawn_once_per_group_as_in_flat_scoring(tiny):
    grouped = tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS)
    flat_batch = tiny.score(flat(SOURCES), flat(INSTRUCTIONS), [e for g in GROUPS for e in g])
    assert [d.get("principles_answer") for d in grouped.details] == \
        [d.get("principles_answer") for d in flat_batch.details]
    torch.testing.assert_close(grouped.reward, flat_batch.reward, equal_nan=True)
    assert grouped.failures == flat_batch.failures


def test_the_cached_generation_logits_match_the_whole_prompt(tiny, monkeypatch):
    """Each generate call on the prefix cache, replayed with its step logits, against the whole verdict prompts."""
    vlm = tiny.generate_fn.vlm
    model = vlm.model
    with cached_generate_calls(model, monkeypatch) as seen:
        tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS, principles=PRINCIPLES)
    assert len(seen) == 2                                               # 8 candidates in chunks of 4
    cached = torch.cat([step_logits(model, **kwargs) for kwargs in seen])                 # [8, steps, V]
    prompts = [vp.verdict_prompt(i, vp.as_principles(p)) for i, p in zip(flat(INSTRUCTIONS), flat(PRINCIPLES))]
    images = [[s, e] for s, e in zip(flat(SOURCES), [e for g in GROUPS for e in g])]
    whole = []
    for start in range(0, 8, 4):
        inputs = vlm.processor(text=prompts[start:start + 4], images=[im for row in images[start:start + 4]
                                                                       for im in row],
                               padding=True, size=tiny.generate_fn.image_size, return_tensors="pt")
        whole.append(step_logits(model, **inputs))
    torch.testing.assert_close(cached, torch.cat(whole), rtol=1e-5, atol=1e-5)


def test_each_source_image_is_encoded_once_per_group(tiny):
    model = tiny.generate_fn.vlm.model
    patches = []
    hook = model.model.visual.register_forward_pre_hook(lambda m, args: patches.append(args[0].shape[0]))
    try:
        tiny.score_groups(SOURCES, INSTRUCTIONS, GROUPS, principles=PRINCIPLES)
    finally:
        hook.remove()
    per_image = [_patches(tiny, im) for im in SOURCES + [e for g in GROUPS for e in g]]
    assert sum(patches) == sum(per_image)                          # 3 sources + 8 candidates, each once
    flat_patches = sum(_patches(tiny, s) for s in flat(SOURCES))
    assert flat_patches > sum(_patches(tiny, s) for s in SOURCES)  # (the flat path encodes a source per candidate)


def _patches(tiny, im) -> int:
    processor = tiny.generate_fn.vlm.processor
    grid = processor.image_processor(images=[im], size=tiny.generate_fn.image_size, return_tensors="pt")
    return int(grid["image_grid_thw"].prod(-1).sum())


def test_a_scripted_judge_scores_groups_as_flat_triples():
    """Without a VLM (any generate_fn), score_groups is score() on the flattened triples: hand-computed rewards."""
    calls = []

    def judge(prompts, images):
        calls.append(len(prompts))
        return ['{"verdicts": [{"id": 1, "verdict": "pass", "score": 8}, {"id": 2, "verdict": "pass", "score": 2}],'
                ' "final_score": 5}'] * len(prompts)
    reward = VerifierReward(judge, generate_principles=False)
    batch = reward.score_groups(SOURCES[:2], INSTRUCTIONS[:2], [GROUPS[0], GROUPS[1]],
                                principles=[["follow: a", "keep: b"], ["follow: c", "quality: d"]])
    assert calls == [4]
    assert batch.reward.tolist() == pytest.approx([math.sqrt(8 * 2) / 10] * 4)         # (F * K) ** 1/2 / 10
    assert batch.details[3]["kind_scores"] == {"follow": 8.0, "quality": 2.0}


def test_bad_group_inputs_raise(tiny):
    with pytest.raises(ValueError, match="empty group"):
        tiny.score_groups(SOURCES[:1], INSTRUCTIONS[:1], [[]])
    with pytest.raises(ValueError, match="2 principle lists for 1 groups"):
        tiny.score_groups(SOURCES[:1], INSTRUCTIONS[:1], [GROUPS[1]], principles=[None, None])
    with pytest.raises(ValueError, match="group 0: .*follow"):
        tiny.score_groups(SOURCES[:1], INSTRUCTIONS[:1], [GROUPS[1]], principles=[["keep: x"]])
