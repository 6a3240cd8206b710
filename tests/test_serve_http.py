"""The reward server over loopback HTTP: served rewards equal reward.score, dynamic batching merges concurrent
requests and splits the rewards back, and every failure mode answers once with its status and a message:
400 (bad base64, not an image, a missing field), 413 (body, pixels), 503 + Retry-After (queue full), 504
(timeout), 500 (a model error; the server goes on), 404 (rerank without a policy), and graceful shutdown
answers every request in flight."""
from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from editrl_engine.data import make_tasks, task_images
from editrl_engine.reward.programmatic import ProgrammaticReward

from .serve_fakes import (
    CountingReward,
    GroupCountingReward,
    b64,
    noisy,
    png_bytes,
    red_mean,
    score_body,
    serve,
    solid,
    tiny_judge,
    tiny_policy,
    wait_until,
)

TIMEOUT = httpx.Timeout(60.0)


def post(server, body, path="/v1/score", **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT, **kwargs)


def metric_samples(server) -> dict:
    text = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def judge():
    return tiny_judge()


def test_served_rewards_equal_reward_score(judge):
    source, candidates = noisy(0, 32), [noisy(s, 32) for s in range(1, 6)]
    reference = judge.score([source] * 5, ["make it blue"] * 5, candidates)
    server = serve(judge)
    try:
        as_json = post(server, score_body("make it blue", source, candidates))
        files = [("source", ("s.png", png_bytes(source), "image/png"))] + \
                [("candidates", (f"{i}.jpg", png_bytes(c), "image/png")) for i, c in enumerate(candidates)]
        as_form = httpx.post(server.url + "/v1/score", data={"instruction": "make it blue"}, files=files,
                             timeout=TIMEOUT)
    finally:
        server.stop()
    for response in (as_json, as_form):
        assert response.status_code == 200, response.text
        body = response.json()
        torch.testing.assert_close(torch.tensor(body["rewards"]), reference.reward, atol=1e-5, rtol=0)
        assert body["best_index"] == int(reference.reward.argmax()) and body["failures"] == 0
        assert body["reward"] == "mllm_logit" and len(body["candidates"]) == 5
        for served, expected in zip(body["candidates"], reference.details):
            assert served["details"]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_served_programmatic_rewards_are_exact():
    tasks = make_tasks(2, seed=1, size=32)
    sources, targets = task_images(tasks)                                            # uint8 [2, 3, 32, 32]
    reward = ProgrammaticReward(tasks)
    server = serve(reward)
    try:
        for task, source, target in zip(tasks, sources, targets):
            candidates = [target, source, target // 2]
            response = post(server, score_body(task.instruction, source, candidates))
            assert response.status_code == 200, response.text
            expected = reward.score([source] * 3, [task.instruction] * 3, candidates).reward
            assert response.json()["rewards"] == expected.tolist() and response.json()["best_index"] == 0
    finally:
        server.stop()


def test_concurrent_requests_are_merged_into_one_batch():
    gate = threading.Event()
    reward = GroupCountingReward(gate=gate)
    server = serve(reward, max_batch=64, max_wait_ms=5)
    bodies = [score_body(f"edit {k}", solid((k, 0, 0)), [solid((10 * k + j, 0, 0)) for j in range(k + 1)])
              for k in range(5)]
    try:
        with ThreadPoolExecutor(5) as pool:
            first = pool.submit(post, server, bodies[0])
            wait_until(reward.entered.is_set, "the worker to start on the first request")   # it now holds the model
            rest = [pool.submit(post, server, body) for body in bodies[1:]]
            wait_until(lambda: server.app.state.batcher.depth() == 4, "four requests queued behind it")
            gate.set()
            responses = [first.result()] + [f.result() for f in rest]
    finally:
        gate.set()
        server.stop()
    assert len(reward.calls) == 2 and reward.calls[0] == ("groups", [1])      # one model call for the four waiting
    assert reward.calls[1][0] == "groups" and sorted(reward.calls[1][1]) == [2, 3, 4, 5]   # (in arrival order)
    for k, (body, response) in enumerate(zip(bodies, responses)):
        assert response.status_code == 200, response.text
        expected = [red_mean(solid((10 * k + j, 0, 0))) for j in range(k + 1)]          # split back per request
        assert response.json()["rewards"] == pytest.approx(expected, abs=1e-6)
        assert response.json()["batch"] == ({"requests": 1, "candidates": 1} if k == 0 else
                                            {"requests": 4, "candidates": 14})


def test_reward_without_group_path_scores_the_flattened_batch():
    gate = threading.Event()
    reward = CountingReward(gate=gate)
    server = serve(reward, max_batch=64)
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, server, score_body("a", solid((1, 0, 0)), [solid((9, 0, 0))]))
            wait_until(reward.entered.is_set, "the worker to start")
            rest = [pool.submit(post, server, score_body("b", solid((2, 0, 0)), [solid((v, 0, 0)), solid((v, 9, 9))]))
                    for v in (50, 60)]
            wait_until(lambda: server.app.state.batcher.depth() == 2, "two requests queued")
            gate.set()
            results = [first.result()] + [f.result() for f in rest]
    finally:
        gate.set()
        server.stop()
    assert reward.calls == [("flat", 1), ("flat", 4)]
    rewards = [value for r in results for value in r.json()["rewards"]]
    assert rewards == pytest.approx([9 / 255] + [50 / 255] * 2 + [60 / 255] * 2)


def test_bad_inputs_answer_400_naming_the_problem():
    server = serve(CountingReward())
    good = b64(solid((1, 2, 3)))
    cases = {
        "bad base64": ({"instruction": "x", "source": "not base64!!", "candidates": [good]},
                       "source: not valid base64"),
        "not an image": ({"instruction": "x", "source": good,
                          "candidates": [good, base64.b64encode(b"hello, not a picture").decode()]},
                         "candidates[1]: not a PNG or JPEG image"),
        "truncated": ({"instruction": "x", "source": base64.b64encode(png_bytes(noisy(0))[:60]).decode(),
                       "candidates": [good]}, "source: a broken image file"),
        "missing field": ({"instruction": "x", "source": good}, "candidates: Field required"),
        "empty instruction": ({"instruction": "", "source": good, "candidates": [good]}, "instruction:"),
        "no candidates": ({"instruction": "x", "source": good, "candidates": []}, "candidates:"),
    }
    try:
        for name, (body, message) in cases.items():
            response = post(server, body)
            assert response.status_code == 400 and message in response.json()["detail"], (name, response.text)
        not_json = httpx.post(server.url + "/v1/score", content=b"{oops", timeout=TIMEOUT,
                              headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
        form = httpx.post(server.url + "/v1/score", data={"instruction": "x"},
                          files=[("candidates", ("c.png", png_bytes(solid((1, 2, 3))), "image/png"))], timeout=TIMEOUT)
        assert form.status_code == 400 and "source" in form.json()["detail"]
        other = httpx.post(server.url + "/v1/score", content=b"x", headers={"content-type": "text/plain"},
                           timeout=TIMEOUT)
        assert other.status_code == 415
        health = httpx.get(server.url + "/healthz", timeout=TIMEOUT).json()
    finally:
        server.stop()
    assert health["accepted"] == 0                  # rejected before the queue: the model never saw them


def test_size_limits_answer_413():
    server = serve(CountingReward(), max_body_mb=0.01, max_image_pixels=32 * 32)
    try:
        big = post(server, score_body("x", solid((1, 2, 3)), [noisy(s, 32) for s in range(8)]))   # > 10 KiB
        assert big.status_code == 413 and "limit" in big.json()["detail"], big.text
        chunked = httpx.post(server.url + "/v1/score", content=iter([b"{" + b" " * 6000, b" " * 6000 + b"}"]),
                             headers={"content-type": "application/json"}, timeout=TIMEOUT)   # no Content-Length
        assert chunked.status_code == 413, chunked.text
        pixels = post(server, score_body("x", solid((1, 2, 3), size=33), [solid((1, 2, 3))]))
        assert pixels.status_code == 413 and "source" in pixels.json()["detail"]
        fine = post(server, score_body("x", solid((1, 2, 3)), [solid((4, 5, 6))]))
        assert fine.status_code == 200
    finally:
        server.stop()


def test_full_queue_answers_503_with_retry_after():
    gate = threading.Event()
    reward = CountingReward(gate=gate)
    server = serve(reward, max_batch=1, max_queue=2, retry_after_s=3)
    body = score_body("x", solid((1, 2, 3)), [solid((7, 0, 0))])
    try:
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(post, server, body)
            wait_until(reward.entered.is_set, "the worker to hold the model")
            queued = [pool.submit(post, server, body) for _ in range(2)]
            wait_until(lambda: server.app.state.batcher.depth() == 2, "the queue to fill")
            refused = post(server, body)
            gate.set()
            answered = [running.result()] + [f.result() for f in queued]
        health = httpx.get(server.url + "/healthz", timeout=TIMEOUT).json()
    finally:
        gate.set()
        server.stop()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "queue is full" in refused.json()["detail"]
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert health["accepted"] == health["answered"] == 3


def test_slow_model_answers_504_and_the_worker_goes_on():
    gate = threading.Event()
    reward = CountingReward(gate=gate)
    server = serve(reward, timeout_s=0.3)
    try:
        late = post(server, score_body("x", solid((1, 2, 3)), [solid((7, 0, 0))]))
        gate.set()
        after = post(server, score_body("x", solid((1, 2, 3)), [solid((8, 0, 0))]))
    finally:
        gate.set()
        server.stop()
    assert late.status_code == 504 and "no answer within" in late.json()["detail"]
    assert after.status_code == 200 and after.json()["rewards"] == pytest.approx([8 / 255])


def test_model_error_answers_500_and_the_server_lives_on():
    gate = threading.Event()
    reward = GroupCountingReward(gate=gate, fail_on="explode")
    server = serve(reward, max_batch=64)
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, server, score_body("fine", solid((1, 0, 0)), [solid((5, 0, 0))]))
            wait_until(reward.entered.is_set, "the worker to start")
            bad = pool.submit(post, server, score_body("explode", solid((1, 0, 0)), [solid((6, 0, 0))]))
            good = pool.submit(post, server, score_body("fine", solid((1, 0, 0)), [solid((7, 0, 0))]))
            wait_until(lambda: server.app.state.batcher.depth() == 2, "both queued together")
            gate.set()
            first, bad, good = first.result(), bad.result(), good.result()
        later = post(server, score_body("fine", solid((1, 0, 0)), [solid((9, 0, 0))]))
        errors = metric_samples(server)[("editrl_serve_model_errors_total", ())]
    finally:
        gate.set()
        server.stop()
    assert bad.status_code == 500 and "the judge crashed on 'explode'" in bad.json()["detail"]
    assert good.status_code == 200 and good.json()["rewards"] == pytest.approx([7 / 255])   # not poisoned by it
    assert first.status_code == 200 and later.status_code == 200
    assert later.json()["rewards"] == pytest.approx([9 / 255]) and errors >= 1


def test_nan_reward_is_null_with_an_error():
    server = serve(CountingReward(nan_on="unjudgeable"))
    try:
        response = post(server, score_body("unjudgeable", solid((1, 0, 0)), [solid((5, 0, 0))] * 2))
    finally:
        server.stop()
    body = response.json()
    assert response.status_code == 200 and body["rewards"] == [None, None] and body["best_index"] is None
    assert body["failures"] == 2 and body["candidates"][0]["error"] == "judge answered nothing"


def test_rerank_without_a_policy_is_404_and_with_one_returns_the_best(judge):
    bare = serve(judge)
    try:
        missing = post(bare, {"instruction": "x", "source": b64(solid((1, 2, 3)))}, "/v1/rerank")
        paths = httpx.get(bare.url + "/openapi.json", timeout=TIMEOUT).json()["paths"]
    finally:
        bare.stop()
    assert missing.status_code == 404 and "--policy" in missing.json()["detail"]
    assert "/v1/rerank" not in paths and "/v1/score" in paths

    server = serve(judge, tiny_policy(), rerank_steps=2)
    source = noisy(4, 32)
    try:
        response = post(server, {"instruction": "make it blue", "source": b64(source), "n": 3, "seed": 5},
                        "/v1/rerank")
        too_many = post(server, {"instruction": "x", "source": b64(source), "n": 1000}, "/v1/rerank")
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["seed"] for c in body["candidates"]] == [5, 6, 7]
    decoded = [Image.open(io.BytesIO(base64.b64decode(c["image"]))).convert("RGB") for c in body["candidates"]]
    reference = judge.score([source] * 3, ["make it blue"] * 3, decoded).reward
    assert [c["reward"] for c in body["candidates"]] == pytest.approx(reference.tolist(), abs=1e-5)
    assert body["best"] == body["candidates"][body["best_index"]]["image"]
    assert body["best_reward"] == pytest.approx(float(reference.max()), abs=1e-5)
    assert too_many.status_code == 400


def test_shutdown_drains_requests_in_flight_and_each_gets_one_answer():
    gate = threading.Event()
    reward = CountingReward(gate=gate)
    server = serve(reward, max_batch=1)
    bodies = [score_body(f"e{k}", solid((1, 0, 0)), [solid((k, 0, 0))]) for k in range(6)]
    with ThreadPoolExecutor(7) as pool:
        sent = [pool.submit(post, server, body) for body in bodies]
        wait_until(lambda: reward.entered.is_set() and server.app.state.batcher.depth() == 5,
                   "one request on the model and five queued")
        stopping = pool.submit(server.stop, 60)

        def refused() -> bool:
            try:
                httpx.get(server.url + "/healthz", timeout=1.0)
            except httpx.TransportError:
                return True
            return False
        wait_until(refused, "the server to stop accepting connections")   # shutdown is under way
        gate.set()
        responses = [f.result() for f in sent]
        assert stopping.result() is True
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["rewards"][0] for r in responses] == pytest.approx([k / 255 for k in range(6)])
    metrics = server.app.state.metrics
    assert metrics.accepted_count == metrics.answered_count == 6
    assert len(reward.calls) == 6


def test_every_accepted_request_gets_exactly_one_answer():
    reward = GroupCountingReward(fail_on="explode", nan_on="nan")
    server = serve(reward, max_batch=16, max_wait_ms=2)
    kinds = ["fine", "explode", "nan", "bad"] * 10
    def send(kind: str) -> httpx.Response:
        if kind == "bad":
            return post(server, {"instruction": "x", "source": "%%%", "candidates": ["%%%"]})
        return post(server, score_body(kind, solid((1, 0, 0)), [solid((3, 0, 0)), solid((4, 0, 0))]))
    try:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(send, kinds))
        samples = metric_samples(server)
        health = httpx.get(server.url + "/healthz", timeout=TIMEOUT).json()
    finally:
        server.stop()
    statuses = [r.status_code for r in responses]
    assert statuses == [{"fine": 200, "explode": 500, "nan": 200, "bad": 400}[k] for k in kinds]
    assert health["accepted"] == health["answered"] == 30                              # the 10 bad never queued
    counted = {labels: v for (name, labels), v in samples.items() if name == "editrl_serve_requests_total"}
    assert counted == {(("endpoint", "score"), ("status", status)): count
                       for status, count in (("200", 20.0), ("500", 10.0), ("400", 10.0))}
    assert samples[("editrl_serve_accepted_total", ())] == samples[("editrl_serve_answered_total", ())] == 30
    assert samples[("editrl_serve_queue_depth", ())] == 0
    assert samples[("editrl_serve_batch_candidates_count", ())] >= 1
    assert ("editrl_serve_request_latency_seconds_count", (("endpoint", "score"),)) in samples


def test_jpeg_images_are_accepted_and_decoded_as_sent():
    server = serve(CountingReward())
    candidate = noisy(5, 32)
    jpeg = png_bytes(candidate, format="JPEG")
    try:
        response = post(server, {"instruction": "x", "source": b64(solid((1, 2, 3)), format="JPEG"),
                                 "candidates": [base64.b64encode(jpeg).decode()]})
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert response.json()["rewards"] == pytest.approx([red_mean(Image.open(io.BytesIO(jpeg)))], abs=1e-6)
