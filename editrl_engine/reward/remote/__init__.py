"""Remote judges: every judge kind over an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted
API, or `editrl serve`), with the in-process judges' prompts and parsers.

    reward = load_reward("mllm_logit", endpoint="http://judge:8000/v1", model="Qwen/Qwen2.5-VL-32B-Instruct")
    reward = load_reward("editscore", endpoint=["http://a:8000/v1", "http://b:8000/v1"], api_key_env="JUDGE_KEY",
                         passes=4)

endpoint: a /v1 base URL or a list of them; model: the served model name (None: the first of GET /models);
api_key_env: the environment variable holding the API key (the key itself is never stored). Transport settings
(transport.TransportConfig: max_in_flight, connect_timeout_s, read_timeout_s, retries, backoff_s, max_wait_s,
down_s) and the judge's own options go in as keywords.
"""
from __future__ import annotations

import dataclasses

from ...errors import InputError
from .judges import GenerateRemote, RemoteChat, RemoteLogitReward
from .transport import Failure, Transport, TransportConfig

KINDS = ("mllm_logit", "editscore", "verifier")
TRANSPORT_OPTIONS = tuple(f.name for f in dataclasses.fields(TransportConfig))


def load(kind: str, endpoint: str | list[str], model: str | None = None, api_key_env: str | None = None, *,
         send_top_k: bool = True, **options):
    """A remote judge of `kind` (one of KINDS)."""
    if kind not in KINDS:
        raise InputError(f"reward kind {kind!r} has no remote backend; remote judges are {', '.join(KINDS)}")
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint or [])
    if not endpoints or not all(isinstance(e, str) and e.startswith(("http://", "https://")) for e in endpoints):
        raise InputError(f"endpoint must be an http(s) /v1 base URL or a list of them, got {endpoint!r}; e.g. "
                         "endpoint='http://127.0.0.1:8000/v1'")
    transport = Transport(endpoints, api_key_env=api_key_env, config=TransportConfig(
        **{k: options.pop(k) for k in TRANSPORT_OPTIONS if k in options}))
    chat = RemoteChat(transport, model)
    if kind == "mllm_logit":
        return RemoteLogitReward(chat, **options)
    if kind == "editscore":
        return _editscore(chat, send_top_k, options)
    return _verifier(chat, send_top_k, options)


def _editscore(chat: RemoteChat, send_top_k: bool, options: dict):
    from ..editscore import EditScoreReward
    generate = GenerateRemote(chat, send_top_k)

    def generate_fn(calls, decoding):
        temperature = decoding.temperature if decoding.do_sample else 0.0
        fields = generate.fields(decoding.max_new_tokens, temperature, decoding.top_p, decoding.top_k, decoding.seed)
        return generate([c.text for c in calls], [c.images for c in calls], fields)

    reward = EditScoreReward(None, generate_fn=generate_fn, **options)
    reward.remote = chat
    return reward


def _verifier(chat: RemoteChat, send_top_k: bool, options: dict):
    from ..verifier import Sampling, VerifierReward
    sampling = options.pop("sampling", None)
    sampling = Sampling(**sampling) if isinstance(sampling, dict) else sampling or Sampling()
    generate = GenerateRemote(chat, send_top_k)
    fields = generate.fields(sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.top_k,
                             sampling.seed)
    reward = VerifierReward(lambda prompts, images: generate(prompts, images, fields), origin="remote", **options)
    reward.remote = chat
    return reward


__all__ = ["Failure", "KINDS", "RemoteLogitReward", "Transport", "TransportConfig", "load"]
