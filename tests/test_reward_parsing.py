"""Parsing of judge answers against hand-written outputs, and the VIEScore combination against hand-computed
values. Nothing unreadable or out of range may come back as a number."""
from __future__ import annotations

import math

import pytest
import torch

from editrl_engine.reward.parsing import EDITSCORE_MAX, VIESCORE_MAX, combine_sc_pq, parse_judge_scores, rescale_to_ten

NAN = math.nan

# (answer, expected scores or None) for two scores on EditScore's 0-25 scale
READABLE = [
    ('{"reasoning": "The cube is now blue.", "score": [20, 15]}', (20.0, 15.0)),
    ('{"score": [20, 15], "reasoning": "order does not matter"}', (20.0, 15.0)),
    ('Here is my evaluation:\n```json\n{"reasoning": "fine", "score": [25, 0]}\n```\nHope it helps.', (25.0, 0.0)),
    ('```\n{"reasoning": "fine", "score": [7, 8]}\n```', (7.0, 8.0)),
    ('Thinking... {"reasoning": "ok", "score": [12.5, 3]} trailing words', (12.5, 3.0)),
    ('{\u201creasoning\u201d: \u201cthe edit didn\u2019t touch the sky\u201d, \u201cscore\u201d: [10, 11]}',
     (10.0, 11.0)),
    ("{'reasoning': 'python words', 'ok': true, 'score': [2, 3],}", (2.0, 3.0)),
    ("{'reasoning': 'single quotes', 'score': [4, 5]}", (4.0, 5.0)),
    ('{"reasoning": "trailing comma", "score": [4, 5,],}', (4.0, 5.0)),
    ('{"reasoning": "strings", "score": ["9", " 10.5 "]}', (9.0, 10.5)),
    ('{"reasoning": "braces {inside} text", "score": [1, 2]}', (1.0, 2.0)),
    ('{"reasoning": "cut after the scores", "score": [6, 7], "note": "the ed', (6.0, 7.0)),
    ('{"score": [6, 7], "reasoning": "the scores came first and then the text was cu', (6.0, 7.0)),
    ('{"score": [6, 7], "reasoning":', (6.0, 7.0)),
    ('```json\n{"reasoning": "unclosed fence", "score": [3, 2]}', (3.0, 2.0)),
    ('No object, but "score": [8, 9] appears in the text.', (8.0, 9.0)),
    ('{"Score": [0, 25]}', (0.0, 25.0)),
]
UNREADABLE = [
    ("", "empty"),
    ("   \n", "empty"),
    ("I cannot evaluate this image.", "no JSON"),
    ('{"reasoning": "no score key here"}', "no JSON"),
    ('{"reasoning": "cut inside the list", "score": [6, 7', "cut off"),
    ('{"reasoning": "cut inside the reasoning, before any sco', "no JSON"),
    ('{"reasoning": "one score", "score": [6]}', "expected 2"),
    ('{"reasoning": "three scores", "score": [6, 7, 8]}', "expected 2"),
    ('{"reasoning": "too high", "score": [26, 7]}', "out of range"),
    ('{"reasoning": "negative", "score": [6, -0.5]}', "out of range"),
    ('{"reasoning": "words", "score": ["high", 7]}', "non-numeric"),
    ('{"reasoning": "a boolean", "score": [true, 7]}', "non-numeric"),
    ('{"reasoning": "nan", "score": [NaN, 7]}', "non-numeric"),
    ('{"reasoning": "null", "score": [null, 7]}', "non-numeric"),
]


# unambiguous answers outside strict JSON: a bare list, a keyed list without quotes or braces, unquoted keys
UNAMBIGUOUS = [
    ("[20, 15]", (20.0, 15.0)),
    ("  [20, 15]\n", (20.0, 15.0)),
    ("My scores: [20, 15]", (20.0, 15.0)),                             # the one bracketed list, no score key
    ("score: [20, 18]", (20.0, 18.0)),
    ("Score = [20, 18]", (20.0, 18.0)),
    ("Reasoning: the cat is there.\nscores: [3, 4]", (3.0, 4.0)),
    ('score: [20, 18]\n"score": [20, 18]', (20.0, 18.0)),               # the same list twice agrees
    ('{score: [20, 18], reasoning: "the sky, reasoning: fine"}', (20.0, 18.0)),
    ('{reasoning: "it\'s fine", score: [1, 2],}', (1.0, 2.0)),
    ("```json\n{reasoning: 'fenced', score: ['9', 10]}\n```", (9.0, 10.0)),
    ('output score = [score1, score2]\n{"reasoning": "a", "score": [5, 6]}', (5.0, 6.0)),  # an echo that is no list
]
AMBIGUOUS = [
    ('{"score": [20, 15]} and then {"score": [10, 5]}', "several different score lists"),
    ("score: [20, 18] or rather score: [10, 1]", "several different score lists"),
    ('{"reasoning": "first score: [9, 9]", "score": [1, 2]}', "several different score lists"),
    ("Image [1] and image [2] get [20, 15]", "several bracketed lists"),
    ("[20, 15] [18, 12]", "several bracketed lists"),
    ('{"reasoning": "no score key", "rating": [20, 15]}', "no JSON"),   # an object, but no score in it
    ("[26, 1]", "out of range"),
    ("score: [20, 30]", "out of range"),
    ("[20]", "expected 2"),
    ("[20, 15, 10]", "expected 2"),
    ("[]", "expected 2"),
    ("[high, low]", "unreadable score list"),
    ("score: [a, b]", "unreadable score list"),
    ("I'm sorry, but I can't assist with that request.", "no JSON"),
    ("score1: 20, score2: 15", "no JSON"),                               # numbers but no list
    ("[20, 1", "no JSON"),                                              # cut off inside the list
    ("{score: [20, 18", "cut off"),
]


@pytest.mark.parametrize("answer, expected", UNAMBIGUOUS)
def test_unambiguous_answers_outside_strict_json(answer, expected):
    parsed = parse_judge_scores(answer, count=2, max_score=EDITSCORE_MAX)
    assert parsed.ok and parsed.error is None and parsed.scores == expected


@pytest.mark.parametrize("answer, reason", AMBIGUOUS)
def test_ambiguous_or_invalid_answers_give_no_scores(answer, reason):
    parsed = parse_judge_scores(answer, count=2, max_score=EDITSCORE_MAX)
    assert not parsed.ok and parsed.scores is None
    assert reason.lower() in parsed.error.lower()


@pytest.mark.parametrize("answer, expected", READABLE)
def test_readable_answers(answer, expected):
    parsed = parse_judge_scores(answer, count=2, max_score=EDITSCORE_MAX)
    assert parsed.ok and parsed.error is None
    assert parsed.scores == expected


@pytest.mark.parametrize("answer, reason", UNREADABLE)
def test_unreadable_answers_give_no_scores_and_a_reason(answer, reason):
    parsed = parse_judge_scores(answer, count=2, max_score=EDITSCORE_MAX)
    assert not parsed.ok and parsed.scores is None
    assert reason.lower() in parsed.error.lower()


def test_reasoning_is_kept_and_non_strings_are_empty():
    assert parse_judge_scores('{"reasoning": "why", "score": [1, 2]}', count=2, max_score=10).reasoning == "why"
    assert parse_judge_scores(None, count=2, max_score=10).error == "empty answer"


def test_range_depends_on_the_scale():
    answer = '{"reasoning": "r", "score": [12, 8]}'
    assert parse_judge_scores(answer, count=2, max_score=EDITSCORE_MAX).scores == (12.0, 8.0)
    assert "out of range [0, 10]" in parse_judge_scores(answer, count=2, max_score=VIESCORE_MAX).error


def test_single_score_may_be_a_bare_number_but_not_a_cut_one():
    assert parse_judge_scores('{"reasoning": "r", "score": 7}', count=1, max_score=10).scores == (7.0,)
    assert parse_judge_scores('{"reasoning": "r", "score": [7]}', count=1, max_score=10).scores == (7.0,)
    assert not parse_judge_scores('{"reasoning": "r", "score": 7', count=1, max_score=10).ok   # 7 or 7x?


def test_bad_arguments():
    with pytest.raises(ValueError):
        parse_judge_scores("{}", count=0, max_score=10)
    with pytest.raises(ValueError):
        parse_judge_scores("{}", count=1, max_score=0)


# ---- combination -------------------------------------------------------------------------------------------
def test_rescale():
    assert rescale_to_ten(25.0, EDITSCORE_MAX) == 10.0
    assert rescale_to_ten(5.0, EDITSCORE_MAX) == 2.0
    assert rescale_to_ten(7.0, VIESCORE_MAX) == 7.0


def viescore(sc, pq, max_score) -> dict:
    """One sample through the batched combination the editscore reward uses; an unparsed call (None) is NaN."""
    row = lambda scores: torch.tensor([list(scores) if scores else [NAN]], dtype=torch.float64)  # noqa: E731
    sc_, pq_, overall, reward = (float(t[0]) for t in combine_sc_pq(row(sc), row(pq), max_score))
    return {"sc": sc_, "pq": pq_, "overall": overall, "reward": reward}


@pytest.mark.parametrize("sc, pq, max_score, expected", [
    # SC = min(20, 15) / 2.5 = 6; PQ = min(25, 10) / 2.5 = 4; O = sqrt(24)
    ([20, 15], [25, 10], EDITSCORE_MAX, (6.0, 4.0, math.sqrt(24.0))),
    ([25, 25], [25, 25], EDITSCORE_MAX, (10.0, 10.0, 10.0)),
    ([9, 4], [9], VIESCORE_MAX, (4.0, 9.0, 6.0)),
    ([0, 10], [10, 10], VIESCORE_MAX, (0.0, 10.0, 0.0)),
])
def test_viescore_by_hand(sc, pq, max_score, expected):
    out = viescore(sc, pq, max_score)
    assert out["sc"] == pytest.approx(expected[0]) and out["pq"] == pytest.approx(expected[1])
    assert out["overall"] == pytest.approx(expected[2]) and out["reward"] == pytest.approx(expected[2] / 10)


@pytest.mark.parametrize("sc, pq", [(None, [5]), ([5], None), ([NAN, 5], [5]), ([5], [5, NAN]), ([], [5])])
def test_viescore_nan_in_nan_out(sc, pq):
    out = viescore(sc, pq, VIESCORE_MAX)
    assert math.isnan(out["overall"]) and math.isnan(out["reward"])


def test_combine_batched_matches_by_hand_and_propagates_nan():
    sc_scores = torch.tensor([[20.0, 15.0], [NAN, 25.0], [25.0, 25.0]])                      # [3, 2]
    pq_scores = torch.tensor([[25.0, 10.0], [25.0, 25.0], [NAN, 5.0]])                       # [3, 2]
    sc, pq, overall, reward = combine_sc_pq(sc_scores, pq_scores, EDITSCORE_MAX)
    assert sc[0] == pytest.approx(6.0) and pq[0] == pytest.approx(4.0)
    assert overall[0] == pytest.approx(math.sqrt(24.0)) and reward[0] == pytest.approx(math.sqrt(24.0) / 10)
    assert sc[1].isnan() and pq[1] == pytest.approx(10.0) and reward[1].isnan()
    assert sc[2] == pytest.approx(10.0) and pq[2].isnan() and reward[2].isnan()
    assert reward.dtype == torch.float32
    with pytest.raises(ValueError):
        combine_sc_pq(torch.zeros(3), torch.zeros(3, 1), 10)
