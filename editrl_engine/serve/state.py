"""The server's state and one request's bookkeeping.

ServerState holds what every route works over: the reward (and optional policy), the settings, the model worker
(batching.py) and the metrics. Exchange is one request on one endpoint: its admission to the model queue (from
then on it is owed exactly one answer), its wait for the result, and the one line it adds to the metrics.
answer(state, endpoint, work, request) runs a route's work and turns whatever it raises into that one answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response

from ..reward.base import RewardModel
from .batching import Batcher, Closed, QueueFull
from .bodies import ApiError
from .completions import Completer, judge_vlm
from .metrics import Metrics
from .prefix_store import PrefixStore

if TYPE_CHECKING:
    from .server import ServeConfig

log = logging.getLogger("editrl_engine.serve")


@dataclasses.dataclass
class ServerState:
    """The app's models, settings, model worker (started on construction) and metrics."""
    reward: RewardModel
    policy: Any                                   # a policy for /v1/rerank, or None
    config: ServeConfig
    kind: str = dataclasses.field(init=False)     # the reward's kind, as answered
    family: str | None = dataclasses.field(init=False)
    metrics: Metrics = dataclasses.field(init=False)
    batcher: Batcher = dataclasses.field(init=False)
    completer: Completer | None = dataclasses.field(init=False)   # chat completions on the judge's VLM, or None
    started: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.kind = str(getattr(self.reward, "kind", type(self.reward).__name__))
        self.family = getattr(self.policy, "family", None) if self.policy is not None else None
        self.started = time.time()
        judge = judge_vlm(self.reward)
        store = PrefixStore(int(self.config.prefix_cache_mb * 2**20)) if self.config.prefix_cache_mb > 0 else None
        self.completer = Completer(*judge, store=store) if judge is not None else None
        self.metrics = Metrics(queue_depth=self.queue_depth, prefix_store=store)
        self.batcher = Batcher(self.reward, max_batch=self.config.max_batch,
                               max_wait_s=self.config.max_wait_ms / 1e3, max_queue=self.config.max_queue,
                               on_error=self._model_error, on_batch=self._batch_scored)

    def queue_depth(self) -> int:
        return self.batcher.depth()

    def _model_error(self, error: BaseException) -> None:
        self.metrics.model_errors.inc()
        log.error("model error: %s: %s", type(error).__name__, error)

    def _batch_scored(self, requests: int, candidates: int) -> None:
        self.metrics.batch_requests.observe(requests)
        self.metrics.batch_candidates.observe(candidates)

    def close(self) -> None:
        """Admit nothing new; the worker finishes what is left in its queue and stops (the app's shutdown)."""
        limit = self.config.timeout_s + 30
        if not self.batcher.close(limit):
            log.error("the model worker did not stop within %.0f s of shutdown", limit)


@dataclasses.dataclass
class Exchange:
    """One request on one endpoint, from its arrival to its one answer."""
    state: ServerState
    endpoint: str
    started: float = dataclasses.field(default_factory=time.perf_counter)
    admitted: bool = False                        # in the model queue: owed exactly one answer

    def submit(self, job) -> Future:
        """Queue the job (503 + Retry-After when full or shutting down); from here it is owed one answer."""
        retry_after = self.state.config.retry_after_s
        try:
            future = self.state.batcher.submit(job)
        except QueueFull as error:
            raise ApiError(503, f"{error}; retry after {retry_after} s", headers={"Retry-After": str(retry_after)})
        except Closed as error:
            raise ApiError(503, f"{error}; retry on another replica or after a restart",
                           headers={"Retry-After": str(retry_after)})
        self.admitted = True
        self.state.metrics.accept()
        return future

    async def wait(self, future: Future) -> Any:
        """The job's result; 504 past the timeout, 500 when the model raised."""
        timeout_s = self.state.config.timeout_s
        waiting = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiting}, timeout=timeout_s)
        except asyncio.CancelledError:
            waiting.cancel()
            raise
        if not done:
            waiting.cancel()
            future.cancel()              # skipped by the worker if it has not started it
            raise ApiError(504, f"no answer within {timeout_s} s (queue depth {self.state.batcher.depth()}); the "
                                "server is overloaded or the model is slow: retry later or raise --timeout-s")
        error = waiting.exception()
        if error is not None:
            raise ApiError(500, f"the model failed on this request: {type(error).__name__}: {error}")
        return waiting.result()

    def record(self, status: int | str) -> None:
        """Count the answer once, by status (admitted requests also in `answered`)."""
        self.state.metrics.answer(self.endpoint, status, time.perf_counter() - self.started, self.admitted)


Work = Callable[[Exchange, Request], Awaitable[Response]]


async def answer(state: ServerState, endpoint: str, work: Work, request: Request) -> Response:
    """Runs work(exchange, request) and returns its response, or the ApiError's, or a 500 for a bug of ours (the
    server lives on); every request is counted once, a cancelled one as "cancelled"."""
    exchange = Exchange(state, endpoint)
    try:
        response = await work(exchange, request)
    except ApiError as error:
        response = error.response()
    except asyncio.CancelledError:
        exchange.record("cancelled")
        raise
    except Exception as error:  # a bug of ours, not the model's: still one answer, and the server lives on
        log.exception("unexpected error in %s", endpoint)
        response = ApiError(500, f"internal error: {type(error).__name__}: {error}").response()
    exchange.record(response.status_code)
    return response
