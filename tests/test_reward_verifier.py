"""The principle verifier: principle format, reading answers, the aggregation on scripted judges with
hand-computed rewards, NaN counting, and the tiny Qwen2.5-VL plumbing (batched == per-sample under greedy)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.data.manifest import EditRow
from editrl_engine.reward import load_reward, verifier
from editrl_engine.reward import verifier_prompts as vp
from editrl_engine.reward.verifier_prompts import Principle


def image(seed: int, size=(64, 64)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def verdict_answer(scores, final=7, verdict="pass", ids=True) -> str:
    entries = [{**({"id": i} if ids else {}), "verdict": verdict, "score": s, "reason": f"r{i}"}
               for i, s in enumerate(scores, 1)]
    return json.dumps({"reasoning": "looked at it", "verdicts": entries, "final_score": final})


# ---- principle format ----------------------------------------------------------------------------------------
def test_principles_from_strings_mappings_and_principles():
    got = vp.as_principles(["Keep: the sky stays blue", {"kind": "FOLLOW", "text": " the car is red "},
                            Principle("quality", "no artifacts"), "[quality] - sharp edges"])
    assert got == (Principle("keep", "the sky stays blue"), Principle("follow", "the car is red"),
                   Principle("quality", "no artifacts"), Principle("quality", "sharp edges"))


@pytest.mark.parametrize("items, message", [
    (["the sky stays blue", "follow: red"], "kind prefix"),
    (["keep: the sky"], "at least one of kind 'follow'"),
    ([{"kind": "style", "text": "x"}], "kind in"),
    (["follow:   "], "non-empty text"),
    ([{"kind": "follow"}], "string 'kind' and 'text'"),
    ("follow: red", "must be a list"),
    ([3], "Principle, a mapping or a string"),
])
def test_bad_principles_have_clear_errors(items, message):
    with pytest.raises(ValueError, match=message):
        vp.as_principles(items)


def test_parse_generated_principles():
    answer = ('Sure. ```json\n{\u201cprinciples\u201d: [{"kind": "follow", "text": "the cat is added"},'
              ' {"kind": "keep", "text": "the sofa stays"},]}\n``` done')
    principles, error = vp.parse_principles(answer)
    assert error is None
    assert principles == (Principle("follow", "the cat is added"), Principle("keep", "the sofa stays"))
    cut = '{"principles": [{"kind": "follow", "text": "red car"}, {"kind": "keep", "text": "the ro'
    assert vp.parse_principles(cut) == (None, "answer cut off before its principles list was complete")
    for bad, reason in [("no json here", "no JSON object"), ('{"principles": []}', "at least one of kind"),
                        ('{"principles": ["red car"]}', "kind prefix"), ("", "no JSON object")]:
        principles, error = vp.parse_principles(bad)
        assert principles is None and reason in error


# ---- reading verdicts ----------------------------------------------------------------------------------------
def test_parse_verdicts_by_id_by_position_and_loosely_written():
    answer = ("Thinking...\n{'reasoning': 'ok', 'verdicts': [{'id': 2, 'verdict': 'FAIL', 'score': '3'}, "
              "{'id': 1, 'verdict': 'partial', 'score': 6.5, 'reason': 'half'},], 'final_score': 5}")
    parsed, error = vp.parse_verdicts(answer, 2)
    assert error is None and parsed["final_score"] == 5.0 and parsed["reasoning"] == "ok"
    assert parsed["verdicts"] == [{"verdict": "partial", "score": 6.5, "reason": "half"},
                                  {"verdict": "fail", "score": 3.0, "reason": None}]
    parsed, error = vp.parse_verdicts(verdict_answer([1, 2, 3], ids=False), 3)
    assert error is None and [v["score"] for v in parsed["verdicts"]] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("answer, reason", [
    (verdict_answer([5, 6]), "no verdict for principle(s) [3]"),
    (verdict_answer([5, 6], ids=False), "expected 3 verdicts, got 2"),
    (verdict_answer([5, 11, 6]), "principle 2: score 11 out of range"),
    (verdict_answer([5, -1, 6]), "out of range"),
    (verdict_answer([5, 6, 7], final=12), "final_score: score 12 out of range"),
    (verdict_answer([5, 6, 7], verdict="maybe"), "is not one of"),
    (verdict_answer([5, 6, "high"]), "non-numeric"),
    (json.dumps({"verdicts": [{"id": 1, "verdict": "pass", "score": 1}] * 3, "final_score": 1}), "repeated"),
    (json.dumps({"verdicts": [{"id": i, "verdict": "pass", "score": 1} for i in (1, 2, 3)]}), "final_score"),
    ('{"verdicts": [{"id": 1, "verdict": "pass", "score": 9}, {"id": 2, "verdict": "pass", "score": 1', "cut off"),
    ("the edit looks fine, 9/10", "no JSON object"),
])
def test_parse_verdicts_never_guesses(answer, reason):
    parsed, error = vp.parse_verdicts(answer, 3)
    assert parsed is None and reason in error


def test_cut_off_answer_after_the_final_score_is_read():
    answer = verdict_answer([4, 5], final=6)[:-1] + ', "comment": "the end was lo'
    parsed, error = vp.parse_verdicts(answer, 2)
    assert error is None and parsed["final_score"] == 6.0


# ---- aggregation and the reward on a scripted judge ----------------------------------------------------------
PRINCIPLES = ["follow: the car is red", "keep: the road stays grey", "follow: the car keeps its shape",
              "keep: the sky stays blue", "quality: no artifacts"]


def test_aggregate_is_the_geometric_mean_of_kind_scores():
    principles = vp.as_principles(PRINCIPLES)
    reward, kinds = verifier.aggregate(principles, [8, 9, 6, 4, 5])
    assert kinds == {"keep": 4.0, "follow": 7.0, "quality": 5.0}               # min keep, mean follow, mean quality
    assert reward == pytest.approx((7 * 4 * 5) ** (1 / 3) / 10)
    reward, kinds = verifier.aggregate(vp.as_principles(["follow: a", "follow: b"]), [3, 9])
    assert kinds == {"follow": 6.0} and reward == pytest.approx(0.6)
    reward, _ = verifier.aggregate(vp.as_principles(["follow: a", "keep: b"]), [10, 0])
    assert reward == 0.0


class ScriptedJudge:
    """generate_fn answering from a table: principle prompts by instruction, verdict prompts by instruction."""

    def __init__(self, principles: dict[str, str], verdicts: dict[str, str]):
        self.principles, self.verdicts, self.calls = principles, verdicts, []

    def __call__(self, prompts, images):
        self.calls.append((list(prompts), [len(row) for row in images]))
        out = []
        for prompt in prompts:
            instruction = prompt.split("The editing instruction is: ")[1].split("\n")[0]
            table = self.verdicts if "The principles are:" in prompt else self.principles
            out.append(table[instruction])
        return out


def test_scripted_judge_gives_hand_computed_rewards_and_keeps_every_verdict():
    generated = json.dumps({"principles": [{"kind": "follow", "text": "a cat sits on the sofa"},
                                           {"kind": "keep", "text": "the sofa is unchanged"}]})
    judge = ScriptedJudge({"add a cat": generated, "add a dog": "I cannot list principles"},
                          {"paint the car red": verdict_answer([8, 9, 6, 4, 5], final=6),
                           "add a cat": verdict_answer([9, 1], final=3),
                           "add a dog": verdict_answer([5])})
    row = EditRow(id="r0", source="s.png", instruction="paint the car red", principles=tuple(PRINCIPLES))
    src, cat_src = image(0), image(1)
    reward = verifier.VerifierReward(judge)
    batch = reward.score([src, cat_src, cat_src, image(2)], [row.instruction, "add a cat", "add a cat", "add a dog"],
                         [image(10), image(11), image(12), image(13)], principles=[row.principles, None, [], None])
    assert batch.reward.dtype == torch.float32 and batch.reward.shape == (4,)
    expected = [(7 * 4 * 5) ** (1 / 3) / 10, math.sqrt(9 * 1) / 10, math.sqrt(9 * 1) / 10, math.nan]
    torch.testing.assert_close(batch.reward, torch.tensor(expected, dtype=torch.float32), equal_nan=True)
    assert batch.failures == 1
    first = batch.details[0]
    assert first["principles_source"] == "given" and first["judge_final_score"] == 6.0
    assert first["kind_scores"] == {"keep": 4.0, "follow": 7.0, "quality": 5.0}
    assert [(v["kind"], v["verdict"], v["score"], v["reason"]) for v in first["verdicts"]] == [
        (vp.as_principle(p).kind, "pass", float(s), f"r{i}")
        for i, (p, s) in enumerate(zip(PRINCIPLES, [8, 9, 6, 4, 5]), 1)]
    assert batch.details[1]["principles_source"] == "generated" and batch.details[1]["principles_answer"] == generated
    assert batch.details[3]["stage"] == "principles" and "no JSON object" in batch.details[3]["error"]
    # one principle call for the two (instruction, source) pairs needing them, then one verdict call for three samples
    (principle_prompts, principle_images), (verdict_prompts, verdict_images) = judge.calls
    assert len(principle_prompts) == 2 and principle_images == [1, 1]
    assert len(verdict_prompts) == 3 and verdict_images == [2, 2, 2]
    assert "1. [follow] the car is red\n" in verdict_prompts[0] and "5. [quality] no artifacts\n" in verdict_prompts[0]


def test_verdict_failures_are_nan_and_counted():
    judge = ScriptedJudge({}, {"a": verdict_answer([5, 6]), "b": verdict_answer([5, 60]), "c": "???"})
    batch = verifier.VerifierReward(judge).score([image(0)] * 3, ["a", "b", "c"], [image(1)] * 3,
                                                 principles=[["follow: x", "quality: y"]] * 3)
    assert batch.failures == 2 and batch.reward[0] == pytest.approx(math.sqrt(30) / 10)
    assert batch.reward[1:].isnan().all()
    assert [d.get("stage") for d in batch.details] == [None, "verdicts", "verdicts"]
    assert "out of range" in batch.details[1]["error"] and batch.details[2]["answer"] == "???"


def test_bad_inputs_raise():
    reward = verifier.VerifierReward(ScriptedJudge({}, {}), generate_principles=False)
    with pytest.raises(ValueError, match="sample 1: .*kind prefix"):
        reward.score([image(0)] * 2, ["a", "b"], [image(1)] * 2, principles=[["follow: x"], ["x"]])
    with pytest.raises(ValueError, match="principle generation is off"):
        reward.score([image(0)], ["a"], [image(1)])
    with pytest.raises(ValueError, match="2 principle lists for 1 samples"):
        reward.score([image(0)], ["a"], [image(1)], principles=[None, None])


# ---- the tiny Qwen2.5-VL -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 8}, batch_size=3)


SIZES = [(64, 64), (80, 48), (40, 72), (96, 96)]
SOURCES = [image(i, s) for i, s in enumerate(SIZES)]
EDITED = [image(20 + i, s) for i, s in enumerate(SIZES)]
INSTRUCTIONS = ["make it red", "add a cat to the left", "remove the tree", "paint the house green"]


def test_tiny_model_gibberish_is_counted_not_guessed(tiny):
    batch = tiny.score(SOURCES, INSTRUCTIONS, EDITED, principles=[["follow: red"], None, None, ["follow: green"]])
    assert batch.reward.shape == (4,) and batch.reward.isnan().all() and batch.failures == 4
    assert all(isinstance(d["error"], str) and d["stage"] in ("principles", "verdicts") for d in batch.details)
    assert all(isinstance(d.get("answer", d.get("principles_answer")), str) for d in batch.details)


def test_tiny_batched_generation_equals_per_sample_under_greedy(tiny):
    generator = tiny.generate_fn
    prompts = [vp.verdict_prompt(i, vp.as_principles(["follow: " + i, "keep: the rest"])) for i in INSTRUCTIONS]
    images = [[s, e] for s, e in zip(SOURCES, EDITED)]
    batched = generator(prompts, images)
    single = verifier.VLMGenerator(generator.vlm, generator.sampling, batch_size=1)
    assert batched == [single([p], [imgs])[0] for p, imgs in zip(prompts, images)]
    assert all(isinstance(t, str) and t for t in batched)


def test_tiny_sampling_follows_its_seed(tiny):
    vlm = tiny.generate_fn.vlm
    sampled = [verifier.VLMGenerator(vlm, verifier.Sampling(max_new_tokens=8, temperature=1.0, top_k=50, seed=s))
               for s in (3, 3, 4)]
    prompt, imgs = [vp.principles_prompt("make it red")], [[SOURCES[0]]]
    a, b, c = (g(prompt, imgs)[0] for g in sampled)
    assert a == b and a != c
