"""Several source images per request: `sources` beside `source` (exactly one of the two) in /v1/score and
/v1/rerank, and a list passed through rerank() to policy.encode and reward.score_groups."""
from __future__ import annotations

import importlib

import httpx
import torch

from .serve_fakes import GroupCountingReward, b64, png_bytes, red_mean, serve, solid, tiny_policy

TIMEOUT = httpx.Timeout(60.0)
rerank_module = importlib.import_module("editrl_engine.serve.rerank")    # the package exports the function too


class MultiSourceReward(GroupCountingReward):
    """GroupCountingReward that takes a list of sources per group and records what it was given."""

    multi_source = True

    def score_groups(self, sources, instructions, candidates):
        self.seen = list(sources)
        return super().score_groups(sources, instructions, candidates)


def post(server, body, path="/v1/score") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT)


def test_score_request_with_sources_passes_the_list_in_order():
    reward = MultiSourceReward()
    server = serve(reward)
    red, green, blue = solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))
    try:
        several = post(server, {"instruction": "merge", "sources": [b64(red), b64(green)],
                                "candidates": [b64(blue), b64(red)]})
        seen_several = reward.seen
        one = post(server, {"instruction": "merge", "source": b64(green), "candidates": [b64(red)]})
        seen_one = reward.seen
        both = post(server, {"instruction": "x", "source": b64(red), "sources": [b64(red)], "candidates": [b64(red)]})
        neither = post(server, {"instruction": "x", "candidates": [b64(red)]})
        empty = post(server, {"instruction": "x", "sources": [], "candidates": [b64(red)]})
        broken = post(server, {"instruction": "x", "sources": [b64(red), "bm90IGFuIGltYWdl"],
                               "candidates": [b64(red)]})
    finally:
        server.stop()
    assert several.status_code == 200, several.text
    assert several.json()["rewards"] == [0.0, 1.0]
    assert len(seen_several) == 1 and isinstance(seen_several[0], list)
    assert [red_mean(image) for image in seen_several[0]] == [1.0, 0.0]
    assert green.getpixel((0, 0)) == (0, 255, 0)
    assert one.status_code == 200 and not isinstance(seen_one[0], list)     # a single source stays one image
    for response in (both, neither):
        assert response.status_code == 400
        assert "exactly one of `source` (one image) and `sources`" in response.json()["detail"]
    assert empty.status_code == 400 and "sources" in empty.json()["detail"]
    assert broken.status_code == 400 and "sources[1]" in broken.json()["detail"]


def test_sources_to_a_single_source_reward_or_policy_answer_400():
    reward = GroupCountingReward()
    server = serve(reward, tiny_policy(), rerank_steps=1)
    red = solid((255, 0, 0))
    try:
        score = post(server, {"instruction": "x", "sources": [b64(red), b64(red)], "candidates": [b64(red)]})
        rerank = post(server, {"instruction": "x", "sources": [b64(red), b64(red)], "n": 1}, "/v1/rerank")
    finally:
        server.stop()
    assert score.status_code == 400 and "takes one source image per request" in score.json()["detail"]
    assert rerank.status_code == 400 and "flux-kontext" in rerank.json()["detail"]
    assert "qwen-image-edit-plus" in rerank.json()["detail"]


def test_rerank_passes_a_list_of_sources_to_encode_and_score_groups(monkeypatch):
    given = {}

    def fake_generate(policy, source, instruction, n, *args):
        given["source"] = source
        return torch.stack([torch.full((3, 4, 4), 255 * (i % 2), dtype=torch.uint8) for i in range(n)])

    monkeypatch.setattr(rerank_module, "generate", fake_generate)
    reward = MultiSourceReward()
    red, blue = solid((255, 0, 0)), solid((0, 0, 255))
    result = rerank_module.rerank(object(), reward, [red, blue], "merge", n=2, num_steps=1)
    assert isinstance(given["source"], list) and [red_mean(i) for i in given["source"]] == [1.0, 0.0]
    assert reward.seen == [given["source"]]
    assert result.best_index == 1 and result.rewards.tolist() == [0.0, 1.0]


def test_generate_hands_encode_one_row_holding_the_list():
    calls = []

    class Stop(Exception):
        pass

    class Policy:
        def encode(self, sources, instructions):
            calls.append((sources, instructions))
            raise Stop

    red, blue = solid((255, 0, 0)), solid((0, 0, 255))
    try:
        rerank_module.generate(Policy(), [red, blue], "merge", 2, 0, 1)
    except Stop:
        pass
    assert calls == [([[red, blue]], ["merge"])]


def test_multipart_score_takes_sources_as_several_file_parts():
    reward = MultiSourceReward()
    server = serve(reward)
    red, green, blue = solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))
    form = lambda *files: httpx.post(server.url + "/v1/score", data={"instruction": "merge"}, files=list(files),
                                     timeout=TIMEOUT)
    png = lambda name, image: (name, (f"{name}.png", png_bytes(image), "image/png"))
    try:
        several = form(png("sources", red), png("sources", green), png("candidates", blue), png("candidates", red))
        seen = reward.seen
        both = form(png("source", red), png("sources", green), png("candidates", blue))
        neither = form(png("candidates", blue))
        broken = form(png("sources", red), ("sources", ("x.png", b"not an image", "image/png")),
                      png("candidates", blue))
    finally:
        server.stop()
    assert several.status_code == 200, several.text
    assert several.json()["rewards"] == [0.0, 1.0]
    assert isinstance(seen[0], list) and [red_mean(image) for image in seen[0]] == [1.0, 0.0]
    for response in (both, neither):
        assert response.status_code == 400 and "exactly one of `source`" in response.json()["detail"]
    assert broken.status_code == 400 and "sources[1]" in broken.json()["detail"]
