"""The HTTP app (FastAPI): reward scoring and Best-of-N reranking over HTTP, with dynamic batching.

    app = create_app(reward, policy=None, config=ServeConfig(max_batch=32, max_wait_ms=5))
    POST /v1/score    instruction, source, candidates (JSON with base64 PNG / JPEG, or a multipart upload)
    POST /v1/rerank   instruction, source, n, seed -> the best and every candidate (only with a policy)
    POST /v1/chat/completions, GET /v1/models   the judge's model, OpenAI-compatible (chat_routes.py)
    GET  /healthz     status, queue depth, accepted / answered counts
    GET  /metrics     Prometheus text format
    GET  /openapi.json

Answers: 400 a bad image, bad base64, a missing or malformed field (the message names it); 404 /v1/rerank
without a policy; 413 a body over max_body_mb or an image over max_image_pixels; 415 another content type;
503 + Retry-After when the queue is full or the server is shutting down; 504 when no answer came within
timeout_s; 500 when the model raised (the server goes on). The models run on one worker thread (batching.py),
never in the event loop; shutdown lets every admitted request finish and answers each exactly once.
The routes are small functions in routes.py over one ServerState (state.py: the models, the settings, the
worker, the metrics); request bodies are read and checked in bodies.py, images in images.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from fastapi import FastAPI
from fastapi.responses import Response

from ..errors import InputError
from ..reward.base import RewardModel
from . import chat_routes, routes, schemas
from .auth import BearerAuth
from .state import ServerState


@dataclasses.dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32                 # candidates per model call (a larger request runs alone)
    max_wait_ms: float = 5.0            # how long the worker waits for more requests to fill a batch
    max_queue: int = 256                # requests waiting; beyond it 503 + Retry-After
    timeout_s: float = 30.0             # per request, from admission to answer; beyond it 504
    max_body_mb: float = 32.0           # request body limit; beyond it 413
    max_candidates: int = 64            # per /v1/score request
    max_image_pixels: int = 4096 * 4096
    retry_after_s: int = 1
    rerank_steps: int = 28              # sampling steps of /v1/rerank when the request gives none
    max_rerank_n: int = 32
    api_key: str = dataclasses.field(default="", repr=False)   # "" = open; else Bearer <key> on all but /healthz
    model_name: str = ""                # the model name /v1/models and chat answers give ("" = the reward's kind)
    prefix_cache_mb: float = 256.0      # chat completions: KV of shared prompt prefixes across requests (0 = off)
    max_logprobs: int = 20              # chat completions: the most top_logprobs a request may ask for
    max_tokens: int = 2048              # chat completions: the most new tokens (and the default)
    max_n: int = 16                     # chat completions: the most choices per request

    def __post_init__(self):
        problems = [f"{name} must be > 0, got {getattr(self, name)}" for name in
                    ("max_batch", "max_queue", "timeout_s", "max_body_mb", "max_candidates", "max_image_pixels",
                     "retry_after_s", "rerank_steps", "max_rerank_n", "max_tokens", "max_n")
                    if not getattr(self, name) > 0]
        problems += [f"{name} must be >= 0, got {getattr(self, name)}" for name in ("prefix_cache_mb", "max_logprobs")
                     if not getattr(self, name) >= 0]
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_candidates > schemas.MAX_CANDIDATES:
            problems.append(f"max_candidates must be <= {schemas.MAX_CANDIDATES}, got {self.max_candidates}")
        if self.max_rerank_n > schemas.MAX_RERANK_N:
            problems.append(f"max_rerank_n must be <= {schemas.MAX_RERANK_N}, got {self.max_rerank_n}")
        if problems:
            raise InputError("bad serve settings: " + "; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


ERRORS = {status: {"model": schemas.ErrorBody, "description": text} for status, text in {
    400: "a bad image, bad base64, or a missing or malformed field", 413: "body or image too large",
    415: "unsupported content type", 500: "the model raised", 503: "queue full or shutting down (see Retry-After)",
    504: "no answer within the timeout"}.items()}


def _score_body() -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schemas.ScoreRequest.model_json_schema()},
        "multipart/form-data": {"schema": schemas.MULTIPART_SCORE_SCHEMA}}}}


def _rerank_body() -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schemas.RerankRequest.model_json_schema()}}}}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    # uvicorn runs this after the requests in flight have been answered; the worker then finishes what is left in
    # its queue (requests whose callers gave up) and stops
    await asyncio.to_thread(app.state.server.close)


def create_app(reward: RewardModel, policy=None, config: ServeConfig | None = None) -> FastAPI:
    """The app over one reward (and optionally one policy, for /v1/rerank). Its model worker starts now and is
    drained and stopped by the app's shutdown (lifespan)."""
    state = ServerState(reward, policy, config or ServeConfig())
    app = FastAPI(title="editrl-engine reward server", version="1", lifespan=lifespan,
                  description="Scores image edits with a vision-language reward and reranks Best-of-N samples.")
    app.state.server = state
    app.state.batcher, app.state.metrics, app.state.config = state.batcher, state.metrics, state.config
    add_routes(app, with_rerank=policy is not None)
    if state.config.api_key:
        app.add_middleware(BearerAuth, key=state.config.api_key)
    return app


def add_routes(app: FastAPI, with_rerank: bool) -> None:
    """Registers the routes of routes.py; /v1/rerank answers 404 (and is not documented) without a policy."""
    app.add_api_route("/v1/score", routes.score, methods=["POST"], response_model=schemas.ScoreResponse,
                      openapi_extra=_score_body(), responses=ERRORS,
                      summary="Score candidate edits of one (source, instruction)")
    if with_rerank:
        app.add_api_route("/v1/rerank", routes.rerank_endpoint, methods=["POST"],
                          response_model=schemas.RerankResponse, openapi_extra=_rerank_body(), responses=ERRORS,
                          summary="Sample n edits with the policy and return the best and all")
    else:
        app.add_api_route("/v1/rerank", routes.no_rerank, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/chat/completions", chat_routes.chat_completions, methods=["POST"], responses=ERRORS,
                      summary="OpenAI-compatible chat completions on the judge's model (logprobs, n, seed)")
    app.add_api_route("/v1/models", chat_routes.models, methods=["GET"], summary="The served model")
    app.add_api_route("/healthz", routes.healthz, methods=["GET"], response_model=schemas.Health,
                      summary="Liveness, queue depth and answer counts")
    app.add_api_route("/metrics", routes.prometheus, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics", responses={200: {"content": {"text/plain": {}}}})
