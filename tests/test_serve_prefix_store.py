"""The chat completions' prefix store: hits and misses counted, least recently used entries evicted to keep the
byte bound, an entry over the bound not kept; keys are the exact token ids and image pixels; and through the server
the later candidates of a group reuse the prefix (counted in /metrics) within its memory bound."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from editrl_engine.reward import chat
from editrl_engine.serve.prefix_store import Entry, PrefixStore, prefix_key

from .serve_fakes import noisy, serve, tiny_judge


def entry(nbytes: int) -> Entry:
    return Entry(prefix=None, inputs={}, nbytes=nbytes)


def test_lru_eviction_keeps_the_byte_bound():
    store = PrefixStore(100)
    for name in "abc":
        store.put(name, entry(40))                 # c evicts a (80 + 40 > 100)
    assert store.get("a") is None and store.get("b") is not None        # b is now the most recent
    store.put("d", entry(40))                      # evicts c, the least recently used
    assert store.get("c") is None and store.get("b") is not None and store.get("d") is not None
    stats = store.stats()
    assert stats == {"hits": 3, "misses": 2, "evictions": 2, "too_large": 0, "bytes": 80, "entries": 2}


def test_an_entry_over_the_bound_is_not_kept_and_replacing_a_key_does_not_double_count():
    store = PrefixStore(100)
    store.put("big", entry(101))
    store.put("x", entry(30))
    store.put("x", entry(50))
    assert store.get("big") is None and store.stats()["too_large"] == 1 and store.stats()["bytes"] == 50
    with pytest.raises(ValueError, match="max_bytes > 0"):
        PrefixStore(0)


def test_keys_are_exact_tokens_and_pixels():
    ids = torch.tensor([[1, 2, 3]])
    image = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    changed = Image.fromarray(np.eye(4, dtype=np.uint8)[..., None].repeat(3, -1))
    assert prefix_key(ids, [image]) == prefix_key(ids.clone(), [image.copy()])
    assert prefix_key(ids, [image]) != prefix_key(torch.tensor([[1, 2, 4]]), [image])
    assert prefix_key(ids, [image]) != prefix_key(ids, [changed])


def prefix_metrics(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {s.name.removeprefix("editrl_serve_prefix_cache_"): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("editrl_serve_prefix_cache_")}


def test_groups_reuse_their_prefix_across_requests_within_the_memory_bound():
    judge = tiny_judge()
    server = serve(judge, prefix_cache_mb=0.02)     # ~21 kB: two of the tiny judge's prefixes (7.7 kB each) fit
    try:
        for group in range(4):
            prompt = judge.layout.prompt(f"instruction {group}", None)
            for candidate in range(3):
                messages = chat.to_messages(prompt, [noisy(group, 32), noisy(10 + candidate, 32)])
                answer = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                                    json={"messages": messages, "max_tokens": 1, "temperature": 0})
                assert answer.status_code == 200, answer.text
        got = prefix_metrics(server)
        assert got["hits"] == 8 and got["misses"] == 4 and got["evictions"] == 2
        assert got["bytes"] <= 0.02 * 2**20 and got["entries"] == 2
    finally:
        server.stop()
