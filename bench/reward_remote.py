"""The remote rows of bench/reward.py: the logit judge over HTTP, `editrl serve` on loopback in this process.

Each call scores `groups` groups of G candidates through score_groups (one request per candidate), with at most c
requests in flight per server:
  remote c=1/8/32       one server, group routing, the cross-request prefix cache on
  no prefix cache       one server, c=8, --prefix-cache-mb 0 (every request prefills its whole prompt)
  2 servers, group      two servers, c=8 each, a group's requests on one server (its prefix cache holds the group)
  2 servers, request    two servers, c=8 each, every request to the least loaded (round-robin): a group's prefix
                        is prefilled on both
Rows carry the servers' prefix-cache hits and misses. The random judge's digits are rare tokens, so these rows ask
for the logprob of every token (up to 1024 alternatives, not the 20 a trained judge needs): a much larger answer
per request. On CPU with the tiny judge the HTTP, PNG and JSON overheads dominate; the GPU run measures the served
7B-sized judge.
"""
from __future__ import annotations

from editrl_engine.reward import load_reward
from editrl_engine.serve import BackgroundServer, ServeConfig, create_app

CONCURRENCY = (1, 8, 32)


def _servers(judge, count: int, cache_mb: float) -> list[BackgroundServer]:
    config = ServeConfig(max_logprobs=1024, prefix_cache_mb=cache_mb, max_queue=1024, timeout_s=600)
    return [BackgroundServer(create_app(judge, config=config)).start() for _ in range(count)]


def _cache_counts(servers) -> dict:
    stats = [s.app.state.server.completer.store.stats() for s in servers if s.app.state.server.completer.store]
    return {"prefix_hits": sum(s["hits"] for s in stats), "prefix_misses": sum(s["misses"] for s in stats)}


def remote_rows(judge, config: dict, sets: list, time_each_call, row, error_text, log) -> list[dict]:
    """Rows for the served logit judge `judge` (an in-process MllmLogitReward); sets: [(source, [G edits])]."""
    g, groups, warmup, calls = config["group"], config["remote_groups"], 1, config["remote_calls"]
    vocabulary = len(judge.vlm.tokenizer)
    plans = [(f"remote c={c}", 1, c, "group", 256.0) for c in CONCURRENCY]
    plans += [("no prefix cache", 1, 8, "group", 0.0), ("2 servers, group", 2, 8, "group", 256.0),
              ("2 servers, request", 2, 8, "request", 256.0)]
    rows = []
    for mode, count, in_flight, routing, cache_mb in plans:
        log(f"mllm_logit remote {mode}")
        servers = []
        try:
            servers = _servers(judge, count, cache_mb)
            remote = load_reward("mllm_logit", endpoint=[s.url + "/v1" for s in servers], model="mllm_logit",
                                 top_logprobs=min(vocabulary, 1024), min_digit_mass=0.0, max_in_flight=in_flight,
                                 routing=routing)

            def call(i, remote=remote):
                chosen = [sets[(i + k) % len(sets)] for k in range(groups)]
                batch = remote.score_groups([s for s, _ in chosen], [f"edit {i} {k}" for k in range(groups)],
                                            [edits for _, edits in chosen])
                if batch.failures:
                    raise RuntimeError(f"{batch.failures} requests failed: {batch.details[0].get('error')}")

            timed = time_each_call(call, groups * g, calls, warmup, None)
            rows.append(row("mllm_logit", "remote", mode, **timed, **_cache_counts(servers)))
            remote.chat.transport.close()
        except Exception as exc:
            rows.append(row("mllm_logit", "remote", mode, error=error_text(exc)))
        finally:
            for server in servers:
                server.stop()
    return rows
