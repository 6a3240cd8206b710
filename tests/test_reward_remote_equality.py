"""Remote judges against `editrl serve` on loopback equal the same judges in-process: logit rewards within 1e-5,
greedy generations identical (EditScore, verifier), sampled passes reproducible by seed."""
from __future__ import annotations

import pytest
import torch

from editrl_engine.reward import load_reward

from .serve_fakes import noisy, serve, tiny_judge

VOCAB = 877                                 # the tiny logit judge's vocabulary: all digits come back


@pytest.fixture(scope="module")
def pair():
    source = noisy(0, 32)
    groups = [[noisy(10 + c, 32) for c in range(3)], [noisy(20 + c, 32) for c in range(2)]]
    return [source, noisy(1, 32)], ["make it blue", "add a frame"], groups


def test_remote_logit_rewards_equal_in_process(pair):
    judge = tiny_judge()
    server = serve(judge, max_logprobs=VOCAB)
    try:
        remote = load_reward("mllm_logit", endpoint=server.url + "/v1", top_logprobs=VOCAB, min_digit_mass=0.0)
        sources, instructions, groups = pair
        expected = judge.score_groups(sources, instructions, groups)
        got = remote.score_groups(sources, instructions, groups)
        assert got.failures == 0
        torch.testing.assert_close(got.reward, expected.reward, rtol=1e-5, atol=1e-6)
        assert remote.chat.model == "mllm_logit"                                  # found through GET /v1/models
    finally:
        server.stop()


def test_remote_editscore_greedy_answers_and_seeded_passes(pair):
    judge = load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=16)
    server = serve(judge)
    try:
        url = server.url + "/v1"
        sources, instructions, groups = pair
        remote = load_reward("editscore", endpoint=url, greedy=True, max_new_tokens=16)
        expected, got = (r.score([sources[0]] * 3, [instructions[0]] * 3, groups[0]) for r in (judge, remote))
        texts = [[(p["sc_text"], p["pq_text"]) for p in d["passes"]] for d in got.details]
        assert all(all(pair) for row in texts for pair in row)                        # real answers, not failures
        assert texts == [[(p["sc_text"], p["pq_text"]) for p in d["passes"]] for d in expected.details]
        torch.testing.assert_close(got.reward, expected.reward, equal_nan=True)
        sampled = load_reward("editscore", endpoint=url, passes=2, greedy=False, max_new_tokens=8)
        first, second = (sampled.score([sources[0]], [instructions[0]], [groups[0][0]]) for _ in range(2))
        assert [p["sc_text"] for p in first.details[0]["passes"]] == [p["sc_text"] for p in second.details[0]["passes"]]
    finally:
        server.stop()


def test_remote_verifier_greedy_answers_equal_in_process(pair):
    judge = load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 16})
    server = serve(judge)
    try:
        remote = load_reward("verifier", endpoint=server.url + "/v1", sampling={"max_new_tokens": 16})
        sources, instructions, groups = pair
        principles = [["follow: the cat is blue", "keep: the dog"]] * 3
        expected, got = (r.score([sources[0]] * 3, [instructions[0]] * 3, groups[0], principles=principles)
                         for r in (judge, remote))
        assert all(d["answer"] for d in expected.details)
        assert [d["answer"] for d in got.details] == [d["answer"] for d in expected.details]
    finally:
        server.stop()
