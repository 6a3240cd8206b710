"""The HTTP app (FastAPI): reward scoring and Best-of-N reranking over HTTP, with dynamic batching.

    app = create_app(reward, policy=None, config=ServeConfig(max_batch=32, max_wait_ms=5))
    POST /v1/score    instruction, source, candidates (JSON with base64 PNG / JPEG, or a multipart upload)
    POST /v1/rerank   instruction, source, n, seed -> the best and every candidate (only with a policy)
    GET  /healthz     status, queue depth, accepted / answered counts
    GET  /metrics     Prometheus text format
    GET  /openapi.json

Answers: 400 a bad image, bad base64, a missing or malformed field (the message names it); 404 /v1/rerank
without a policy; 413 a body over max_body_mb or an image over max_image_pixels; 415 another content type;
503 + Retry-After when the queue is full or the server is shutting down; 504 when no answer came within
timeout_s; 500 when the model raised (the server goes on). The models run on one worker thread (batching.py),
never in the event loop; shutdown lets every admitted request finish and answers each exactly once.
Request bodies are read and checked in bodies.py, images in images.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..reward.base import RewardModel
from . import schemas
from .batching import Batcher, CallJob, Closed, QueueFull, ScoreJob, ScoreOutcome
from .bodies import ApiError, media_type, parse_json, read_body, read_form
from .images import ImageError, decode_image, image_from_base64, png_base64
from .metrics import Metrics
from .outputs import jsonable
from .rerank import rerank
from .scoring import best_index

log = logging.getLogger("editrl_engine.serve")


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

    def __post_init__(self):
        problems = [f"{name} must be > 0, got {getattr(self, name)}" for name in
                    ("max_batch", "max_queue", "timeout_s", "max_body_mb", "max_candidates", "max_image_pixels",
                     "retry_after_s", "rerank_steps", "max_rerank_n") if not getattr(self, name) > 0]
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_candidates > schemas.MAX_CANDIDATES:
            problems.append(f"max_candidates must be <= {schemas.MAX_CANDIDATES}, got {self.max_candidates}")
        if self.max_rerank_n > schemas.MAX_RERANK_N:
            problems.append(f"max_rerank_n must be <= {schemas.MAX_RERANK_N}, got {self.max_rerank_n}")
        if problems:
            raise ValueError("bad serve settings: " + "; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


ERRORS = {status: {"model": schemas.ErrorBody, "description": text} for status, text in {
    400: "a bad image, bad base64, or a missing or malformed field", 413: "body or image too large",
    415: "unsupported content type", 500: "the model raised", 503: "queue full or shutting down (see Retry-After)",
    504: "no answer within the timeout"}.items()}


def _reward_fields(outcome: ScoreOutcome, kind: str) -> dict[str, Any]:
    rewards = [float(r) for r in outcome.batch.reward.tolist()]                     # N floats, NaN kept here
    candidates = []
    for i, (value, details) in enumerate(zip(rewards, outcome.batch.details)):
        finite = math.isfinite(value)
        error = None if finite else str(details.get("error") or "the reward is NaN (no score could be had)")
        candidates.append({"index": i, "reward": value if finite else None, "error": error,
                           "details": jsonable(details)})
    return {"rewards": [c["reward"] for c in candidates], "best_index": best_index(outcome.batch.reward),
            "failures": sum(c["reward"] is None for c in candidates), "candidates": candidates, "reward": kind,
            "batch": {"requests": outcome.batch_requests, "candidates": outcome.batch_candidates}}


def create_app(reward: RewardModel, policy=None, config: ServeConfig | None = None) -> FastAPI:
    """The app over one reward (and optionally one policy, for /v1/rerank). Its model worker starts now and is
    drained and stopped by the app's shutdown (lifespan)."""
    config = config or ServeConfig()
    kind = str(getattr(reward, "kind", type(reward).__name__))
    family = getattr(policy, "family", None) if policy is not None else None
    metrics = Metrics(queue_depth=lambda: batcher.depth())

    def on_error(error: BaseException) -> None:
        metrics.model_errors.inc()
        log.error("model error: %s: %s", type(error).__name__, error)

    batcher = Batcher(reward, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1e3,
                      max_queue=config.max_queue, on_error=on_error,
                      on_batch=lambda requests, candidates: (metrics.batch_requests.observe(requests),
                                                             metrics.batch_candidates.observe(candidates)))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        # uvicorn runs this after the requests in flight have been answered; the worker then finishes what is
        # left in its queue (requests whose callers gave up) and stops
        if not await asyncio.to_thread(batcher.close, config.timeout_s + 30):
            log.error("the model worker did not stop within %.0f s of shutdown", config.timeout_s + 30)

    app = FastAPI(title="editrl-engine reward server", version="1", lifespan=lifespan,
                  description="Scores image edits with a vision-language reward and reranks Best-of-N samples.")
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, config

    async def handle(endpoint: str, work) -> Response:
        """Runs one request; every request is counted once, by status; admitted ones also in `answered`."""
        started = time.perf_counter()
        admitted = {"yes": False}
        try:
            response = await work(admitted)
        except ApiError as error:
            response = error.response()
        except asyncio.CancelledError:
            metrics.answer(endpoint, "cancelled", time.perf_counter() - started, admitted["yes"])
            raise
        except Exception as error:  # a bug of ours, not the model's: still one answer, and the server lives on
            log.exception("unexpected error in %s", endpoint)
            response = ApiError(500, f"internal error: {type(error).__name__}: {error}").response()
        metrics.answer(endpoint, response.status_code, time.perf_counter() - started, admitted["yes"])
        return response

    def submit(job: ScoreJob | CallJob, admitted: dict) -> Future:
        """Queue the job (503 + Retry-After when full or shutting down); from here it is owed one answer."""
        try:
            future = batcher.submit(job)
        except QueueFull as error:
            raise ApiError(503, f"{error}; retry after {config.retry_after_s} s",
                           headers={"Retry-After": str(config.retry_after_s)})
        except Closed as error:
            raise ApiError(503, f"{error}; retry on another replica or after a restart",
                           headers={"Retry-After": str(config.retry_after_s)})
        admitted["yes"] = True
        metrics.accept()
        return future

    async def wait(future: Future) -> Any:
        """The job's result; 504 past the timeout, 500 when the model raised."""
        waiting = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiting}, timeout=config.timeout_s)
        except asyncio.CancelledError:
            waiting.cancel()
            raise
        if not done:
            waiting.cancel()
            future.cancel()              # skipped by the worker if it has not started it
            raise ApiError(504, f"no answer within {config.timeout_s} s (queue depth {batcher.depth()}); the "
                                "server is overloaded or the model is slow: retry later or raise --timeout-s")
        error = waiting.exception()
        if error is not None:
            raise ApiError(500, f"the model failed on this request: {type(error).__name__}: {error}")
        return waiting.result()

    score_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schemas.ScoreRequest.model_json_schema()},
        "multipart/form-data": {"schema": schemas.MULTIPART_SCORE_SCHEMA}}}}

    async def read_score_request(request: Request) -> ScoreJob:
        """The request's instruction, decoded source and candidates; an ApiError (400 / 413 / 415) if bad."""
        media = media_type(request)
        if media not in ("application/json", "multipart/form-data", ""):
            raise ApiError(415, f"unsupported content type {media!r}: send application/json (base64 images) "
                                "or multipart/form-data (image files)")
        body = await read_body(request, config.max_body_bytes)
        if media == "multipart/form-data":
            instruction, source, candidates = await read_form(request, body, config.max_candidates + 1)
            decode = lambda data, field: decode_image(data, field, config.max_image_pixels)  # noqa: E731
        else:
            parsed = parse_json(body, schemas.ScoreRequest)
            instruction, source, candidates = parsed.instruction, parsed.source, parsed.candidates
            decode = lambda text, field: image_from_base64(text, field, config.max_image_pixels)  # noqa: E731
        if len(candidates) > config.max_candidates:
            raise ApiError(400, f"candidates: {len(candidates)} images, over the server's limit of "
                                f"{config.max_candidates} per request; split them into several requests")
        try:
            images = await run_in_threadpool(
                lambda: [decode(source, "source")] + [decode(c, f"candidates[{i}]")
                                                      for i, c in enumerate(candidates)])
        except ImageError as error:
            raise ApiError(error.status, str(error))
        return ScoreJob(images[0], instruction, images[1:])

    @app.post("/v1/score", response_model=schemas.ScoreResponse, openapi_extra=score_body,
              responses=ERRORS, summary="Score candidate edits of one (source, instruction)")
    async def score(request: Request) -> Response:
        async def work(admitted: dict) -> Response:
            with batcher.arriving():         # the worker may wait for this request to join its batch
                job = await read_score_request(request)
                future = submit(job, admitted)
            outcome = await wait(future)
            return JSONResponse(schemas.ScoreResponse(**_reward_fields(outcome, kind)).model_dump(mode="json"))
        return await handle("score", work)

    if policy is not None:
        rerank_body = {"requestBody": {"required": True, "content": {
            "application/json": {"schema": schemas.RerankRequest.model_json_schema()}}}}

        @app.post("/v1/rerank", response_model=schemas.RerankResponse, openapi_extra=rerank_body,
                  responses=ERRORS, summary="Sample n edits with the policy and return the best and all")
        async def rerank_endpoint(request: Request) -> Response:
            async def work(admitted: dict) -> Response:
                media = media_type(request)
                if media not in ("application/json", ""):
                    raise ApiError(415, f"unsupported content type {media!r}: send application/json")
                parsed = parse_json(await read_body(request, config.max_body_bytes), schemas.RerankRequest)
                if parsed.n > config.max_rerank_n:
                    raise ApiError(400, f"n: {parsed.n} is over the server's limit of {config.max_rerank_n}")
                try:
                    source = await run_in_threadpool(image_from_base64, parsed.source, "source",
                                                     config.max_image_pixels)
                except ImageError as error:
                    raise ApiError(error.status, str(error))
                steps = parsed.num_steps or config.rerank_steps
                job = CallJob(lambda: rerank(policy, reward, source, parsed.instruction, n=parsed.n,
                                             seed=parsed.seed, num_steps=steps))
                result = await wait(submit(job, admitted))
                pngs = await run_in_threadpool(lambda: [png_base64(c.image) for c in result.candidates])
                body = {"best_index": result.best_index,
                        "best": None if result.best_index is None else pngs[result.best_index],
                        "best_reward": jsonable(result.best_reward), "failures": result.failures,
                        "error": result.error, "reward": kind, "num_steps": steps, "seed": parsed.seed,
                        "candidates": [{"index": c.index, "seed": c.seed, "reward": jsonable(c.reward),
                                        "error": c.error, "details": jsonable(c.details), "image": png}
                                       for c, png in zip(result.candidates, pngs)]}
                return JSONResponse(schemas.RerankResponse(**body).model_dump(mode="json"))
            return await handle("rerank", work)
    else:
        @app.post("/v1/rerank", include_in_schema=False)
        async def no_rerank() -> Response:
            async def work(admitted: dict) -> Response:
                raise ApiError(404, "/v1/rerank needs a policy to sample candidates, and this server has none: "
                                    "start it with --policy DIR|tiny, or score your own candidates with /v1/score")
            return await handle("rerank", work)

    @app.get("/healthz", response_model=schemas.Health, summary="Liveness, queue depth and answer counts")
    async def healthz() -> dict:
        return {"status": "ok", "reward": kind, "policy": family, "queue_depth": batcher.depth(),
                "accepted": metrics.accepted_count, "answered": metrics.answered_count}

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
