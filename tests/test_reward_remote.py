"""Remote judges over a scripted OpenAI-compatible server: the logit reward's expectation and digit-mass floor
against hand-computed cases, the generative judges' requests and parsing, and the faults, each bounded in time: a
stalled server (timeout -> NaN), 503 with Retry-After (retried, then answered), a body that is not JSON or lacks
logprobs (NaN with the reason), a server killed mid-run (NaN, counted; scoring resumes when it is back), two
endpoints with one down (every group served by the other, each group on one endpoint); the API key is sent and
never stored."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from PIL import Image

from editrl_engine.errors import InputError
from editrl_engine.reward import load_reward

from .openai_fake import FakeServer, logprob_answer, text_answer

FAST = dict(connect_timeout_s=1.0, read_timeout_s=2.0, retries=2, backoff_s=0.05, max_wait_s=1.0, down_s=30.0)


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def logit_judge(server, **options):
    return load_reward("mllm_logit", endpoint=server.url if isinstance(server, FakeServer) else server,
                       model="fake-judge", **{**FAST, **options})


@pytest.fixture
def fakes():
    started = []

    def make(script, **kwargs):
        started.append(FakeServer(script, **kwargs))
        return started[-1]
    yield make
    for server in started:
        server.stop()


def test_the_logit_reward_is_the_expectation_over_the_digits_that_appear(fakes):
    server = fakes([logprob_answer({"5": 0.5, "3": 0.3}, other=0.2)])
    batch = logit_judge(server, min_digit_mass=0.5).score([image(0)], ["make it red"], [image(1)])
    expected = (5 * 0.5 + 3 * 0.3) / 0.8                                # renormalised over the digits present
    assert batch.reward[0].item() == pytest.approx(expected / 5, rel=1e-6)
    assert batch.details[0]["digit_mass"] == pytest.approx(0.8)
    assert batch.details[0]["probabilities"] == pytest.approx([0, 0, 0, 0.375, 0, 0.625])
    body = server.requests[0][1]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["model"] == "fake-judge" and [p["type"] for m in body["messages"] for p in m["content"]].count(
        "image_url") == 2


def test_below_the_digit_mass_floor_the_reward_is_nan_and_counted(fakes):
    server = fakes([logprob_answer({"4": 0.1}, other=0.9)])
    batch = logit_judge(server, min_digit_mass=0.5).score([image(0)], ["x"], [image(1)])
    assert math.isnan(batch.reward[0]) and batch.failures == 1
    assert "cover 0.100" in batch.details[0]["error"]


def test_a_stalled_server_times_out_into_nan(fakes):
    server = fakes([("stall", 3.0)])
    start = time.monotonic()
    batch = logit_judge(server, read_timeout_s=0.3, retries=0).score([image(0)], ["x"], [image(1)])
    assert math.isnan(batch.reward[0]) and "timed out" in batch.details[0]["error"]
    assert time.monotonic() - start < 2.5


def test_503_with_retry_after_is_retried_then_answered(fakes):
    server = fakes([("status", 503, {"Retry-After": "0.2"}), logprob_answer({"2": 1.0})])
    start = time.monotonic()
    reward = logit_judge(server)
    batch = reward.score([image(0)], ["x"], [image(1)])
    assert batch.reward[0].item() == pytest.approx(2 / 5) and len(server.requests) == 2
    assert time.monotonic() - start >= 0.2
    assert reward.metadata()["remote"]["endpoints"][server.url]["retries"] == 1


@pytest.mark.parametrize("answer, words", [
    ("not_json", "not JSON"),
    (text_answer("5"), "no logprobs"),
    (("status", 400), "HTTP 400"),
])
def test_bad_answers_are_nan_with_the_reason(fakes, answer, words):
    server = fakes([answer])
    batch = logit_judge(server).score([image(0)], ["x"], [image(1)])
    assert math.isnan(batch.reward[0]) and batch.failures == 1 and words in batch.details[0]["error"]
    assert len(server.requests) == 1                                     # not a transport failure: no retry


def test_a_server_killed_mid_run_gives_nan_and_scoring_resumes_when_it_is_back(fakes):
    server = fakes([logprob_answer({"5": 1.0})])
    reward = logit_judge(server, retries=1, down_s=0.0)
    assert reward.score([image(0)], ["x"], [image(1)]).reward[0].item() == pytest.approx(1.0)
    server.stop()
    batch = reward.score([image(0)] * 2, ["x"] * 2, [image(1), image(2)])
    assert batch.failures == 2 and all("connection failed" in d["error"] for d in batch.details)
    server.start()                                                       # the same port
    assert reward.score([image(0)], ["x"], [image(3)]).reward[0].item() == pytest.approx(1.0)


def test_with_one_endpoint_down_every_group_goes_to_the_other_and_stays_there(fakes):
    up = fakes([logprob_answer({"3": 1.0})])
    down = fakes([logprob_answer({"3": 1.0})])
    down.stop()
    reward = logit_judge([down.url, up.url])
    sources, groups = [image(0), image(1), image(2)], [[image(10 + 3 * g + c) for c in range(3)] for g in range(3)]
    batch = reward.score_groups(sources, ["x", "y", "z"], groups)
    assert batch.failures == 0 and len(up.requests) == 9
    stats = reward.metadata()["remote"]["endpoints"]
    assert not stats[down.url]["healthy"] and stats[down.url]["down"] == 1


def test_groups_are_spread_over_healthy_endpoints_and_each_stays_on_one(fakes):
    first, second = fakes([logprob_answer({"1": 1.0})]), fakes([logprob_answer({"1": 1.0})])
    reward = logit_judge([first.url, second.url])
    instructions = [f"instruction {g}" for g in range(4)]
    batch = reward.score_groups([image(g) for g in range(4)], instructions,
                                [[image(20 + 3 * g + c) for c in range(3)] for g in range(4)])
    assert batch.failures == 0 and len(first.requests) == len(second.requests) == 6
    for server in (first, second):                                       # each group's 3 requests on one server
        texts = [str(body["messages"]) for _, body, _ in server.requests]
        assert sum(instructions[g] in t for t in texts for g in range(4)) == 6
        assert len({g for t in texts for g in range(4) if instructions[g] in t}) == 2


def test_the_api_key_is_sent_and_never_stored(fakes, monkeypatch):
    server = fakes([logprob_answer({"5": 1.0})])
    monkeypatch.setenv("JUDGE_KEY", "s3cret-key")
    reward = logit_judge(server, api_key_env="JUDGE_KEY")
    reward.score([image(0)], ["x"], [image(1)])
    assert server.requests[0][2]["authorization"] == "Bearer s3cret-key"
    assert "s3cret" not in repr(reward.metadata()) and "s3cret" not in repr(reward.chat.transport)
    for kind in ("editscore", "verifier"):                               # the generative judges likewise
        judge = load_reward(kind, endpoint=server.url, model="fake-judge", api_key_env="JUDGE_KEY", **FAST)
        assert judge.metadata()["remote"]["model"] == "fake-judge" and "s3cret" not in repr(judge.metadata())
        assert "s3cret" not in repr(judge) and "s3cret" not in repr(vars(judge))
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(InputError, match="JUDGE_KEY"):
        logit_judge(server, api_key_env="JUDGE_KEY")


def test_editscore_sends_greedy_and_sampled_calls_and_parses_the_answers(fakes):
    server = fakes([text_answer('{"reasoning": "ok", "score": [8, 6]}')])
    reward = load_reward("editscore", endpoint=server.url, model="fake-judge", passes=2, greedy=False, **FAST)
    batch = reward.score([image(0)], ["add a hat"], [image(1)])
    bodies = [body for _, body, _ in server.requests]
    assert len(bodies) == 4 and {b["seed"] for b in bodies} == {42, 43}            # SC + PQ per pass
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["top_k"] == 20 for b in bodies)
    assert batch.failures == 0 and batch.details[0]["sc"] == pytest.approx(min(8, 6) * 10 / 25)   # min, 0-25 -> 0-10
    counters = reward.stats()["endpoints"][server.url]
    assert counters["requests"] == 4 and counters["failures"] == counters["retries"] == 0 and counters["healthy"]
    assert reward.metadata()["origin"] == "remote" and reward.metadata()["remote"] == reward.stats()
    greedy = load_reward("editscore", endpoint=server.url, model="fake-judge", greedy=True, send_top_k=False,
                         **FAST)
    greedy.score([image(0)], ["add a hat"], [image(1)])
    assert server.requests[-1][1]["temperature"] == 0 and "top_k" not in server.requests[-1][1]


def test_a_failed_generative_call_is_nan_with_the_transport_reason(fakes):
    server = fakes([("status", 404)])
    reward = load_reward("verifier", endpoint=server.url, model="fake-judge", **FAST)
    batch = reward.score([image(0)], ["add a hat"], [image(1)], principles=[["follow: a hat"]])
    assert batch.failures == 1 and "no answer" in batch.details[0]["error"] and "HTTP 404" in \
        batch.details[0]["error"]


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="endpoint must be an http"):
        load_reward("mllm_logit", endpoint="judge:8000")
    with pytest.raises(InputError, match="no remote backend"):
        load_reward("programmatic", endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="endpoint= and also path= or preset="):
        load_reward("mllm_logit", endpoint="http://127.0.0.1:1/v1", preset="tiny")
    with pytest.raises(InputError, match="retries"):
        load_reward("mllm_logit", endpoint="http://127.0.0.1:1/v1", model="m", retries=-1)
    with pytest.raises(InputError, match="does not take lora"):
        load_reward("verifier", endpoint="http://127.0.0.1:1/v1", model="m", lora="/adapters/verifier")
    with pytest.raises(InputError, match="does not take layot"):
        load_reward("mllm_logit", endpoint="http://127.0.0.1:1/v1", model="m", layot="interleaved")


def test_the_verifier_asks_for_principles_then_verdicts_with_the_in_process_prompts(fakes):
    from editrl_engine.reward import verifier_prompts as vp
    from editrl_engine.reward.chat import from_messages
    principles = [{"kind": "follow", "text": "the cat wears a hat"}, {"kind": "keep", "text": "the background"},
                  {"kind": "keep", "text": "the cat's face"}, {"kind": "quality", "text": "no artifacts"}]
    verdicts = {"reasoning": "mostly right", "final_score": 7, "verdicts": [
        {"id": 1, "verdict": "pass", "score": 8}, {"id": 2, "verdict": "partial", "score": 5},
        {"id": 3, "verdict": "pass", "score": 9}, {"id": 4, "verdict": "pass", "score": 6}]}

    def answer(body):                          # the principles call shows the source only; the verdict call both
        images = sum(p["type"] == "image_url" for m in body["messages"] for p in m["content"])
        return text_answer(json.dumps({"principles": principles} if images == 1 else verdicts))
    server = fakes([answer])
    reward = load_reward("verifier", endpoint=server.url, model="fake-judge", **FAST)
    batch = reward.score([image(0)], ["put a hat on the cat"], [image(1)])
    assert batch.failures == 0
    assert batch.reward[0].item() == pytest.approx((8 * min(5, 9) * 6) ** (1 / 3) / 10, rel=1e-6)  # (F*K*Q)^(1/3)/10
    first, second = (from_messages(body["messages"]) for _, body, _ in server.requests)
    chosen = vp.as_principles(principles)
    assert first[0] == vp.principles_prompt("put a hat on the cat")
    assert second[0] == vp.verdict_prompt("put a hat on the cat", chosen)
    assert [np.asarray(im).tolist() for im in second[1]] == [np.asarray(image(s)).tolist() for s in (0, 1)]
    assert server.requests[0][1]["temperature"] == 0                      # greedy by default, as in-process


def test_the_logit_request_carries_the_in_process_prompt_and_pixels(fakes):
    from editrl_engine.reward.chat import from_messages
    from editrl_engine.reward.mllm_prompts import load_layout
    server = fakes([logprob_answer({"4": 1.0})])
    logit_judge(server).score([[image(0), image(1)]], ["merge them"], [image(2)])   # two sources, one edit
    prompt, images = from_messages(server.requests[0][1]["messages"])
    assert prompt == load_layout("interleaved").prompt("merge them", None, 2)
    assert [np.asarray(im).tolist() for im in images] == [np.asarray(image(s)).tolist() for s in (0, 1, 2)]


def test_in_flight_requests_per_endpoint_are_bounded(fakes):
    server = fakes([("stall", 0.2, logprob_answer({"3": 1.0}))])
    start = time.monotonic()
    batch = logit_judge(server, max_in_flight=2).score([image(0)] * 6, ["x"] * 6, [image(s) for s in range(1, 7)])
    assert batch.failures == 0 and server.peak == 2                      # 6 requests, never more than 2 at once
    assert time.monotonic() - start >= 3 * 0.2


def test_retries_back_off_exponentially(fakes):
    server = fakes([("status", 503), ("status", 429), logprob_answer({"1": 1.0})])   # no Retry-After: backoff
    start = time.monotonic()
    reward = logit_judge(server, backoff_s=0.1, retries=2)
    batch = reward.score([image(0)], ["x"], [image(1)])
    assert batch.reward[0].item() == pytest.approx(1 / 5) and len(server.requests) == 3
    assert time.monotonic() - start >= 0.1 + 0.2                         # waits backoff_s * 2**k
    assert reward.stats()["endpoints"][server.url]["retries"] == 2


def test_a_down_endpoint_is_left_alone_for_down_s_then_probed_again(fakes):
    first, second = fakes([logprob_answer({"2": 1.0})]), fakes([logprob_answer({"2": 1.0})])
    reward = logit_judge([first.url, second.url], down_s=0.5, retries=0)
    first.stop()

    def score_four_groups():
        return reward.score_groups([image(g) for g in range(4)], [f"i{g}" for g in range(4)],
                                   [[image(30 + 2 * g + c) for c in range(2)] for g in range(4)])
    assert score_four_groups().failures == 0 and len(second.requests) == 8
    first.start()                                                        # back, but still within down_s
    assert score_four_groups().failures == 0 and len(first.requests) == 0 and len(second.requests) == 16
    time.sleep(0.6)
    assert score_four_groups().failures == 0 and len(first.requests) == 4 and len(second.requests) == 20
    stats = reward.stats()["endpoints"]
    assert stats[first.url]["down"] == 1 and stats[first.url]["healthy"]
