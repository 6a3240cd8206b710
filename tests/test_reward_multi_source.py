"""Judges of edits made from several source images: every source image is shown, labelled, in order; a one-image
prompt is byte for byte what it was; score_groups equals score() on the flattened triples with several sources;
judges that take one image say so."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.reward import editscore_prompts, load_reward, mllm_prompts
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.reward.combined import CombinedReward
from editrl_engine.reward.programmatic import ProgrammaticReward

from .serve_fakes import noisy, tiny_judge

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
PRINCIPLES = vp.as_principles(["follow: the cat is blue", "keep: the dog"])


def test_one_image_prompts_are_unchanged():
    """Hand-written copies of the one-image prompts (as they were before several sources existed)."""
    assert mllm_prompts.build_prompt("make it red", "keep the frame") == (
        "<|im_start|>system\nYou are a careful judge of image edits.<|im_end|>\n<|im_start|>user\n"
        f"This is the original image: {IMAGE}\nThe editing instruction is: make it red\n"
        "Task requirement: keep the frame\n"
        f"This is the edited image: {IMAGE}\n{mllm_prompts.RATING_REQUEST}<|im_end|>\n<|im_start|>assistant\n")
    uniworld = mllm_prompts.load_layout("uniworld")
    assert uniworld.prompt("make it red", None) == (
        f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{IMAGE}{IMAGE}"
        "The first image is the original image and the second is the edited image.\n"
        "The editing instruction is: make it red\nTask requirement: \n"
        f"{mllm_prompts.RATING_REQUEST}<|im_end|>\n<|im_start|>assistant\n")
    assert editscore_prompts.sc_prompt("add a hat", 25) == (
        editscore_prompts.HEAD + "An AI tool edited an image following this instruction: add a hat\n"
        f"The first image is the original: {IMAGE}" + editscore_prompts.SC_CANDIDATE.format(max_score=25)
        + editscore_prompts.TAIL)
    assert editscore_prompts.pq_prompt(25, both=True) == (
        editscore_prompts.HEAD + editscore_prompts.PQ_LEAD_BOTH + editscore_prompts.PQ_TEMPLATE.format(max_score=25)
        + editscore_prompts.TAIL)
    assert vp.verdict_prompt("make it blue", PRINCIPLES) == vp.VERDICT_TEMPLATE.format(
        "make it blue", "1. [follow] the cat is blue\n2. [keep] the dog\n")
    assert vp.principles_prompt("make it blue") == vp.PRINCIPLES_TEMPLATE.format("make it blue")


@pytest.mark.parametrize("prompt", [
    lambda k: mllm_prompts.build_prompt("make it red", "keep it", sources=k),
    lambda k: mllm_prompts.load_layout("uniworld").prompt("make it red", None, sources=k),
    lambda k: editscore_prompts.sc_prompt("add a hat", 25, sources=k),
    lambda k: editscore_prompts.pq_prompt(25, both=True, sources=k),
    lambda k: vp.verdict_prompt("make it blue", PRINCIPLES, sources=k),
    lambda k: vp.principles_prompt("make it blue", sources=k) + IMAGE,      # + the slot a verdict adds
])
def test_several_sources_are_each_shown_labelled_in_order(prompt):
    for k in (2, 3):
        text = prompt(k)
        assert text.count(IMAGE) == k + 1
        labels = [text.index(f"Original image {i}: {IMAGE}") for i in range(1, k + 1)]
        assert labels == sorted(labels)
        assert "original image:" not in text and "The first image is the original:" not in text


def test_the_split_points_still_end_on_an_image():
    for k in (1, 2, 3):
        assert editscore_prompts.sc_prefix("x", k).endswith(IMAGE)
        assert vp.verdict_prefix("x", PRINCIPLES, k).endswith(IMAGE)
        assert mllm_prompts.load_layout("uniworld").prefix("x", None, k).endswith(IMAGE)


def groups():
    sources = [[noisy(0, 32), noisy(1, 32)], noisy(2, 32), [noisy(3, 32), noisy(4, 32), noisy(5, 32)]]
    candidates = [[noisy(10 + c, 32) for c in range(2)], [noisy(20, 32)], [noisy(30 + c, 32) for c in range(2)]]
    return sources, ["make it blue", "add a hat", "swap the two"], candidates


def flat(sources, instructions, candidates):
    sizes = [len(g) for g in candidates]
    repeat = lambda values: [v for v, n in zip(values, sizes) for _ in range(n)]
    return repeat(sources), repeat(instructions), [c for g in candidates for c in g]


@pytest.mark.parametrize("layout", ["interleaved", "uniworld"])
def test_logit_group_scores_equal_flat_scores_with_several_sources(layout):
    judge = load_reward("mllm_logit", preset="tiny", layout=layout)
    sources, instructions, candidates = groups()
    grouped = judge.score_groups(sources, instructions, candidates)
    torch.testing.assert_close(grouped.reward, judge.score(*flat(sources, instructions, candidates)).reward,
                               rtol=1e-5, atol=1e-6)


def test_every_source_image_reaches_the_judge():
    judge = tiny_judge()
    first, second, edit = noisy(0, 32), noisy(1, 32), noisy(2, 32)
    rewards = [judge.score([s], ["swap"], [edit]).reward for s in ([first, second], [second, first], [first])]
    assert len({round(float(r), 7) for r in rewards}) == 3
    torch.testing.assert_close(judge.score([[first]], ["swap"], [edit]).reward, rewards[2])   # a one-image list


@pytest.mark.parametrize("kind", ["editscore", "verifier"])
def test_generative_group_answers_equal_flat_answers_with_several_sources(kind):
    sources, instructions, candidates = groups()
    if kind == "editscore":
        judge = load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=12, pq_images="both")
        texts = lambda batch: [(p["sc_text"], p["pq_text"]) for d in batch.details for p in d["passes"]]
        extra = {}
    else:
        judge = load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 12})
        texts = lambda batch: [d["answer"] for d in batch.details]
        extra = {"principles": [["follow: the cat is blue"]] * 3}
    grouped = judge.score_groups(sources, instructions, candidates, **extra)
    flat_extra = {"principles": [["follow: the cat is blue"]] * 5} if extra else {}
    assert texts(grouped) == texts(judge.score(*flat(sources, instructions, candidates), **flat_extra))
    assert judge.multi_source


def test_judges_that_take_one_source_image_say_so():
    with pytest.raises(ValueError, match="programmatic reward checks edits of the synthetic shapes task"):
        ProgrammaticReward().score([[noisy(0, 16), noisy(1, 16)]], ["x"], [noisy(2, 16)])
    assert not ProgrammaticReward().multi_source
    combined = CombinedReward({"a": (tiny_judge(), 1.0), "b": (ProgrammaticReward(), 1.0)})
    assert not combined.multi_source
    assert CombinedReward({"a": (tiny_judge(), 1.0)}).multi_source


def test_the_published_editscore_templates_refuse_several_sources():
    published = editscore_prompts.PublishedPrompts.__new__(editscore_prompts.PublishedPrompts)
    assert not published.multi_source
    with pytest.raises(ValueError, match="templates='project'"):
        published.sc_prefix("x", sources=2)
