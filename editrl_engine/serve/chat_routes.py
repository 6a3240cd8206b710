"""POST /v1/chat/completions and GET /v1/models: the OpenAI-compatible face of the served judge, so one client
(reward/remote/) talks to `editrl serve`, vLLM, SGLang or a hosted API alike.

The request's messages are rendered as the model's chat template renders them (reward/chat.py), the images
decoded under the server's pixel limit, and the completion (completions.py) runs on the model worker, never in
the event loop. Fields: model, messages (text and image_url parts, images as base64 data URLs), max_tokens (or
max_completion_tokens), temperature (0: greedy), top_p, top_k (vLLM's extension; 0 or -1: off), seed, n, logprobs,
top_logprobs (at most max_logprobs, like vLLM's --max-logprobs). Unknown fields are ignored, as servers do.
"""
from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..errors import InputError
from ..reward.chat import QWEN2_5_VL_SYSTEM, from_messages
from .batching import CallJob
from .bodies import ApiError, media_type, parse_json, read_body
from .completions import Completion, Params
from .state import Exchange, ServerState, answer


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1)
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0)
    stream: bool = False


def _state(request: Request) -> ServerState:
    return request.app.state.server


def served_model(state: ServerState) -> str:
    return state.config.model_name or state.kind


async def models(request: Request) -> dict:
    state = _state(request)
    return {"object": "list", "data": [{"id": served_model(state), "object": "model", "owned_by": "editrl-engine",
                                        "created": int(state.started)}]}


async def chat_completions(request: Request) -> Response:
    return await answer(_state(request), "chat", _chat, request)


def params_of(parsed: ChatRequest, state: ServerState) -> Params:
    config = state.config
    if parsed.stream:
        raise ApiError(400, "stream: streaming answers are not supported; send stream=false")
    if parsed.n > config.max_n:
        raise ApiError(400, f"n: {parsed.n} is over the server's limit of {config.max_n}")
    top = parsed.top_logprobs if parsed.logprobs else None
    if parsed.top_logprobs and not parsed.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true")
    if top is not None and top > config.max_logprobs:
        raise ApiError(400, f"top_logprobs: {top} is over the server's limit of {config.max_logprobs} "
                            "(--max-logprobs)")
    max_tokens = parsed.max_completion_tokens or parsed.max_tokens or config.max_tokens
    if max_tokens > config.max_tokens:
        raise ApiError(400, f"max_tokens: {max_tokens} is over the server's limit of {config.max_tokens}")
    return Params(max_tokens=max_tokens, temperature=parsed.temperature, top_p=parsed.top_p,
                  top_k=max(parsed.top_k, 0), seed=parsed.seed, n=parsed.n, top_logprobs=top)


async def _chat(exchange: Exchange, request: Request) -> Response:
    state = exchange.state
    if state.completer is None:
        raise ApiError(404, f"/v1/chat/completions needs a judge with a language model; the served reward "
                            f"({state.kind}) has none")
    if media_type(request) not in ("application/json", ""):
        raise ApiError(415, "unsupported content type: send application/json")
    parsed = parse_json(await read_body(request, state.config.max_body_bytes), ChatRequest)
    if parsed.model and parsed.model != served_model(state):
        raise ApiError(404, f"model: {parsed.model!r} is not served here; this server serves "
                            f"{served_model(state)!r} (GET /v1/models)")
    params = params_of(parsed, state)
    system = None if type(state.completer.vlm.model).__name__.startswith("Qwen3") else QWEN2_5_VL_SYSTEM
    try:
        prompt, images = await run_in_threadpool(from_messages, parsed.messages, default_system=system,
                                                 max_pixels=state.config.max_image_pixels)
    except InputError as error:
        raise ApiError(400, str(error))
    completion = await exchange.wait(exchange.submit(CallJob(lambda: state.completer(prompt, images, params))))
    return JSONResponse(response_body(completion, served_model(state), params))


def response_body(completion: Completion, model: str, params: Params) -> dict:
    choices = []
    for i, choice in enumerate(completion.choices):
        logprobs = None
        if choice.logprobs is not None:
            logprobs = {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                                     "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode())}
                                                      for s, v in t.top]} for t in choice.logprobs]}
        choices.append({"index": i, "message": {"role": "assistant", "content": choice.text},
                        "logprobs": logprobs, "finish_reason": choice.finish_reason})
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "total_tokens": completion.prompt_tokens + completion.completion_tokens,
             "prompt_tokens_details": {"cached_tokens": completion.cached_tokens}}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": usage}
