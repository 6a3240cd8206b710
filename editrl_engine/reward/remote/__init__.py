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
import inspect

from ...errors import InputError
from .judges import RemoteChat, RemoteLogitReward
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
    config = TransportConfig(**{k: options.pop(k) for k in TRANSPORT_OPTIONS if k in options})
    check_options(kind, options)
    transport = Transport(endpoints, api_key_env=api_key_env, config=config)
    chat = RemoteChat(transport, model)
    if kind == "mllm_logit":
        return RemoteLogitReward(chat, **options)
    if kind == "editscore":
        from .generative import RemoteEditScore
        return RemoteEditScore(chat, send_top_k, **options)
    from .generative import RemoteVerifier
    return RemoteVerifier(chat, send_top_k, **options)


def check_options(kind: str, options: dict) -> None:
    """Refuse, by name, an option the remote judge of `kind` does not take (e.g. lora=: weights live on the server)."""
    if kind == "mllm_logit":
        takes = set(inspect.signature(RemoteLogitReward).parameters) - {"chat"}
    elif kind == "editscore":
        from ..editscore import EditScoreReward
        takes = set(inspect.signature(EditScoreReward).parameters) - {"vlm", "generate_fn"}
    else:
        from ..verifier import VerifierReward
        takes = set(inspect.signature(VerifierReward).parameters) - {"generate_fn", "origin"} | {"sampling"}
    unknown = sorted(set(options) - takes)
    if unknown:
        raise InputError(f"the remote {kind} judge does not take {', '.join(unknown)} (a served judge's weights, "
                         f"adapters and devices are the server's); it takes {', '.join(sorted(takes))} and the "
                         f"transport settings {', '.join(TRANSPORT_OPTIONS)}")


__all__ = ["Failure", "KINDS", "RemoteLogitReward", "Transport", "TransportConfig", "load"]
