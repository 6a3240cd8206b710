"""POST /v1/chat/completions over loopback HTTP equals the in-process judge: the logit judge's digit probabilities
from logprobs, the generative judges' greedy answers token for token; seeded sampling is reproducible; bad bodies
are 400 naming the field; the cross-request prefix cache answers as an uncached forward."""
from __future__ import annotations

import httpx
import pytest
import torch

from editrl_engine.reward import chat, load_reward
from editrl_engine.serve import ServeConfig, create_app
from editrl_engine.serve.completions import Completer, Params, split_prompt

from .serve_fakes import noisy, serve, tiny_judge

TIMEOUT = httpx.Timeout(120.0)
VOCAB = 877                     # the tiny logit judge's vocabulary: every token's logprob comes back


def completion(server, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=TIMEOUT, **kwargs)


def digit_probabilities(top_logprobs: list[dict]) -> torch.Tensor:
    """p [6] over "0".."5" from an answer's top_logprobs, renormalised over the digits (float64)."""
    by_token = {entry["token"]: entry["logprob"] for entry in top_logprobs}
    return torch.softmax(torch.tensor([by_token[str(d)] for d in range(6)], dtype=torch.float64), dim=0)


@pytest.fixture(scope="module")
def logit_server():
    server = serve(tiny_judge(), max_logprobs=VOCAB)
    yield server
    server.stop()


def test_logprobs_give_the_logit_judges_digit_probabilities(logit_server):
    judge = tiny_judge()
    source, candidates = noisy(0, 32), [noisy(s, 32) for s in range(1, 4)]
    expected = judge.rating_probabilities([source] * 3, ["make it blue"] * 3, candidates, [None] * 3)   # [3, 6]
    for candidate, row in zip(candidates, expected):
        prompt = judge.layout.prompt("make it blue", None)
        messages = chat.to_messages(prompt, [judge.image(source), judge.image(candidate)])
        answer = completion(logit_server, {"messages": messages, "max_tokens": 1, "temperature": 0,
                                           "logprobs": True, "top_logprobs": VOCAB})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "chat.completion" and body["model"] == "mllm_logit"
        [choice] = body["choices"]
        [token] = choice["logprobs"]["content"]
        assert len(token["top_logprobs"]) == VOCAB and choice["finish_reason"] in ("stop", "length")
        torch.testing.assert_close(digit_probabilities(token["top_logprobs"]), row, rtol=1e-5, atol=1e-7)
    stats = logit_server.app.state.server.completer.store.stats()
    assert stats["misses"] == 1 and stats["hits"] == 2           # one group: the prefix was prefilled once


def test_the_cached_prefix_answers_as_the_whole_prompt_does():
    judge = tiny_judge()
    source, edited = noisy(3, 32), noisy(4, 32)
    prompt = judge.layout.prompt("turn it red", "keep the frame")
    images = [judge.image(source), judge.image(edited)]
    params = Params(max_tokens=1, temperature=0, top_logprobs=VOCAB)
    whole = Completer(judge.vlm, judge.image_size)(prompt, images, params)
    store_completer = Completer(judge.vlm, judge.image_size, create_app(judge).state.server.completer.store)
    first, second = (store_completer(prompt, images, params) for _ in range(2))
    assert (first.cached_tokens, second.cached_tokens) == (0, len(
        judge.vlm.processor(text=[split_prompt(prompt, 2)[0]], images=images[:1], size=judge.image_size,
                            return_tensors="pt")["input_ids"][0]))
    reference = torch.tensor([lp for _, lp in whole.choices[0].logprobs[0].top], dtype=torch.float64)
    for answer in (first, second):
        got = torch.tensor([lp for _, lp in answer.choices[0].logprobs[0].top], dtype=torch.float64)
        assert [t for t, _ in answer.choices[0].logprobs[0].top][:20] == \
            [t for t, _ in whole.choices[0].logprobs[0].top][:20]
        torch.testing.assert_close(got.exp(), reference.exp(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["editscore", "verifier"])
def test_greedy_answers_equal_the_in_process_generative_judge(kind):
    source, edited = noisy(5, 32), noisy(6, 32)
    if kind == "editscore":
        judge = load_reward("editscore", preset="tiny", greedy=True, max_new_tokens=24)
        [call, _] = judge.calls([source], ["add a hat"], [edited])
        prompt, images, tokens = call.text, list(call.images), 24
        expected = judge.generate([call], judge.decoding(0))[0]
    else:
        judge = load_reward("verifier", preset="tiny", sampling={"max_new_tokens": 24})
        from editrl_engine.reward import verifier_prompts as vp
        principles = vp.as_principles(["follow: a hat is added", "keep: the face"])
        prompt, images, tokens = vp.verdict_prompt("add a hat", principles), [source, edited], 24
        expected = judge.generate_fn([prompt], [images])[0]
    server = serve(judge)
    try:
        answer = completion(server, {"messages": chat.to_messages(prompt, images), "max_tokens": tokens,
                                     "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == expected
    finally:
        server.stop()


def test_seeded_sampling_is_reproducible_and_n_gives_n_choices(logit_server):
    judge = tiny_judge()
    messages = chat.to_messages(judge.layout.prompt("blur it", None), [noisy(7, 32), noisy(8, 32)])
    body = {"messages": messages, "max_tokens": 6, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 11,
            "n": 3}
    first, second = (completion(logit_server, body).json() for _ in range(2))
    texts = [c["message"]["content"] for c in first["choices"]]
    assert len(texts) == 3 and texts == [c["message"]["content"] for c in second["choices"]]
    other = completion(logit_server, {**body, "seed": 12}).json()
    assert [c["message"]["content"] for c in other["choices"]] != texts
    assert first["usage"]["completion_tokens"] <= 18


@pytest.mark.parametrize("change, words", [
    ({"messages": []}, "messages"),
    ({"temperature": -1}, "temperature"),
    ({"n": 99}, "n: 99 is over"),
    ({"logprobs": True, "top_logprobs": VOCAB + 1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs needs logprobs=true"),
    ({"stream": True}, "streaming"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]},
     "messages[0].content[0]"),
    ({"model": "gpt-9"}, "not served here"),
])
def test_bad_bodies_are_refused_naming_the_field(logit_server, change, words):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **change}
    answer = completion(logit_server, body)
    assert answer.status_code in (400, 404) and words in answer.json()["detail"], answer.text


def test_models_lists_the_served_name():
    server = serve(tiny_judge(), model_name="judge-32b")
    try:
        assert httpx.get(server.url + "/v1/models", timeout=TIMEOUT).json()["data"][0]["id"] == "judge-32b"
        ok = completion(server, {"model": "judge-32b", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 1})
        assert ok.status_code == 200 and ok.json()["model"] == "judge-32b"
    finally:
        server.stop()


def test_a_reward_without_a_language_model_answers_404():
    from editrl_engine.reward.programmatic import ProgrammaticReward
    server = serve(ProgrammaticReward())
    try:
        answer = completion(server, {"messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 404 and "language model" in answer.json()["detail"]
    finally:
        server.stop()


def test_serve_settings_check_the_chat_limits():
    with pytest.raises(ValueError, match="max_n must be > 0"):
        ServeConfig(max_n=0)
    with pytest.raises(ValueError, match="prefix_cache_mb must be >= 0"):
        ServeConfig(prefix_cache_mb=-1)
    assert "secret" not in repr(ServeConfig(api_key="secret"))
