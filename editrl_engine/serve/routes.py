"""The HTTP routes: small functions of the request over the app's ServerState (request.app.state.server).

Each endpoint hands its work to state.answer, which gives every request exactly one answer and one count in the
metrics; the work raises ApiError for any answer other than 200. create_app (server.py) registers them.
"""
from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import schemas
from .batching import CallJob, GroupRequest, ScoreOutcome
from .bodies import ApiError, media_type, parse_json, read_body, read_form
from .images import ImageError, decode_image, image_from_base64, png_base64
from .outputs import jsonable
from .rerank import rerank
from .scoring import best_index
from .state import Exchange, ServerState, answer


def server_state(request: Request) -> ServerState:
    return request.app.state.server


# ---- POST /v1/score -------------------------------------------------------------------------------------------
async def score(request: Request) -> Response:
    return await answer(server_state(request), "score", _score, request)


async def _score(exchange: Exchange, request: Request) -> Response:
    state = exchange.state
    with state.batcher.arriving():         # the worker may wait for this request to join its batch
        job = await read_score_request(state, request)
        future = exchange.submit(job)
    outcome = await exchange.wait(future)
    return JSONResponse(schemas.ScoreResponse(**reward_fields(outcome, state.kind)).model_dump(mode="json"))


async def read_score_request(state: ServerState, request: Request) -> GroupRequest:
    """The request's instruction, decoded source and candidates; an ApiError (400 / 413 / 415) if bad."""
    config = state.config
    media = media_type(request)
    if media not in ("application/json", "multipart/form-data", ""):
        raise ApiError(415, f"unsupported content type {media!r}: send application/json (base64 images) "
                            "or multipart/form-data (image files)")
    body = await read_body(request, config.max_body_bytes)
    if media == "multipart/form-data":
        instruction, parts, several, candidates = await read_form(request, body, config.max_candidates + 16)
        sources = [(part, f"sources[{i}]" if several else "source") for i, part in enumerate(parts)]
        decode = decode_image                  # (bytes, field name, pixel limit)
    else:
        parsed = parse_json(body, schemas.ScoreRequest)
        instruction, sources, candidates = parsed.instruction, parsed.source_fields(), parsed.candidates
        several = parsed.sources is not None                                # JSON `sources`: a list per request
        decode = image_from_base64             # (base64 text, field name, pixel limit)
    if len(candidates) > config.max_candidates:
        raise ApiError(400, f"candidates: {len(candidates)} images, over the server's limit of "
                            f"{config.max_candidates} per request; split them into several requests")
    if several and not getattr(state.reward, "multi_source", False):
        raise ApiError(400, f"sources: the server's reward ({state.kind}) takes one source image per request; "
                            "send `source`")
    fields = sources + [(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    try:
        images = await run_in_threadpool(_decode_all, decode, fields, config.max_image_pixels)
    except ImageError as error:
        raise ApiError(error.status, str(error))
    count = len(sources)
    return GroupRequest(images[:count] if several else images[0], instruction, images[count:])


def _decode_all(decode, fields: list[tuple[Any, str]], max_pixels: int) -> list:
    return [decode(data, name, max_pixels) for data, name in fields]


def reward_fields(outcome: ScoreOutcome, kind: str) -> dict[str, Any]:
    """The /v1/score answer of one request's outcome (NaN rewards as null with their error)."""
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


# ---- POST /v1/rerank ------------------------------------------------------------------------------------------
async def rerank_endpoint(request: Request) -> Response:
    return await answer(server_state(request), "rerank", _rerank, request)


async def _rerank(exchange: Exchange, request: Request) -> Response:
    state, config = exchange.state, exchange.state.config
    media = media_type(request)
    if media not in ("application/json", ""):
        raise ApiError(415, f"unsupported content type {media!r}: send application/json")
    parsed = parse_json(await read_body(request, config.max_body_bytes), schemas.RerankRequest)
    if parsed.n > config.max_rerank_n:
        raise ApiError(400, f"n: {parsed.n} is over the server's limit of {config.max_rerank_n}")
    several = parsed.sources is not None
    if several and not getattr(state.policy, "multi_source", False):
        raise ApiError(400, f"sources: the server's policy ({state.family}) takes one source image per request; "
                            "send `source`, or serve qwen-image-edit-plus or flux2 for edits of several source images")
    if several and not getattr(state.reward, "multi_source", False):
        raise ApiError(400, f"sources: the server's reward ({state.kind}) takes one source image per request; "
                            "send `source`")
    try:
        images = await run_in_threadpool(_decode_all, image_from_base64, parsed.source_fields(),
                                         config.max_image_pixels)
    except ImageError as error:
        raise ApiError(error.status, str(error))
    source = images if several else images[0]
    steps = parsed.num_steps or config.rerank_steps
    job = CallJob(lambda: rerank(state.policy, state.reward, source, parsed.instruction, n=parsed.n,
                                 seed=parsed.seed, num_steps=steps))
    result = await exchange.wait(exchange.submit(job))
    pngs = await run_in_threadpool(lambda: [png_base64(c.image) for c in result.candidates])
    body = {"best_index": result.best_index, "best": None if result.best_index is None else pngs[result.best_index],
            "best_reward": jsonable(result.best_reward), "failures": result.failures, "error": result.error,
            "reward": state.kind, "num_steps": steps, "seed": parsed.seed,
            "candidates": [{"index": c.index, "seed": c.seed, "reward": jsonable(c.reward), "error": c.error,
                            "details": jsonable(c.details), "image": png}
                           for c, png in zip(result.candidates, pngs)]}
    return JSONResponse(schemas.RerankResponse(**body).model_dump(mode="json"))


async def no_rerank(request: Request) -> Response:
    """/v1/rerank of a server without a policy: 404, counted like any other answer."""
    return await answer(server_state(request), "rerank", _no_policy, request)


async def _no_policy(exchange: Exchange, request: Request) -> Response:
    raise ApiError(404, "/v1/rerank needs a policy to sample candidates, and this server has none: "
                        "start it with --policy DIR|tiny, or score your own candidates with /v1/score")


# ---- GET /healthz, GET /metrics -------------------------------------------------------------------------------
async def healthz(request: Request) -> dict:
    state = server_state(request)
    return {"status": "ok", "reward": state.kind, "policy": state.family, "queue_depth": state.batcher.depth(),
            "accepted": state.metrics.accepted_count, "answered": state.metrics.answered_count}


async def prometheus(request: Request) -> Response:
    metrics = server_state(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)
