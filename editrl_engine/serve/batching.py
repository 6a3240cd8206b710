"""Dynamic batching: one model worker thread scores the queued requests together.

Requests wait in a bounded queue (submit raises QueueFull beyond max_queue). The worker takes the oldest request,
then keeps taking score requests while their candidates fit in max_batch, waiting at most max_wait_s for more, but
only while more are on their way (the server brackets reading and decoding a request with `arriving()`): a lone
request is scored at once, not after max_wait_s. It scores the batch in one reward.score_groups call (each request
one group; the reward's shared-prefix path where it has one); the rewards are split back per request. A request
with more candidates than max_batch runs alone. Rerank requests (sampling + scoring) run alone, in the same thread: the
models are only ever touched from this one thread, never from the event loop.

If a batch of several requests raises, each is retried alone so that only the failing one gets the error.
A request whose caller gave up (its future cancelled) before it started is skipped. close() stops admitting
and lets the worker finish everything already queued: every admitted request's future gets exactly one result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from ..reward.base import RewardBatch, RewardModel


class QueueFull(Exception):
    """The queue holds max_queue requests already."""


class Closed(Exception):
    """The batcher is shutting down and admits nothing new."""


@dataclasses.dataclass
class GroupRequest:
    """One scoring request: a group of candidate edits of one (source, instruction)."""
    source: Any                       # PIL image
    instruction: str
    candidates: list                  # PIL images
    future: Future = dataclasses.field(default_factory=Future)


@dataclasses.dataclass
class CallJob:
    """Any other model work (a rerank): call() runs alone on the worker thread; its return value is the result."""
    call: Callable[[], Any]
    future: Future = dataclasses.field(default_factory=Future)


@dataclasses.dataclass
class ScoreOutcome:
    batch: RewardBatch                # this request's candidates only
    batch_requests: int               # requests scored in the same model call
    batch_candidates: int             # candidates scored in the same model call


class Batcher:
    def __init__(self, reward: RewardModel, *, max_batch: int = 32, max_wait_s: float = 0.005, max_queue: int = 256,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1 and max_wait_s >= 0, got {max_batch}, "
                             f"{max_queue}, {max_wait_s}")
        self.reward, self.max_batch, self.max_wait_s, self.max_queue = reward, max_batch, max_wait_s, max_queue
        self.on_batch, self.on_error = on_batch, on_error
        self._pending: deque[GroupRequest | CallJob] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._arriving = 0                # requests being read and decoded, not yet submitted
        self._thread = threading.Thread(target=self._run, name="editrl-serve-model", daemon=True)
        self._thread.start()

    # ---- the caller's side ---------------------------------------------------------------------------------
    def submit(self, job: GroupRequest | CallJob) -> Future:
        """Queue a job; its future gets the ScoreOutcome (or the call's value) or the model's exception."""
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
            self._pending.append(job)
            self._cond.notify()
        return job.future

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Bracket reading, decoding and submitting one request: while any is inside, the worker waits (up to
        max_wait_s) for it to join the batch it is filling."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def depth(self) -> int:
        """Requests waiting (not yet taken by the worker)."""
        return len(self._pending)

    def close(self, timeout: float | None = None) -> bool:
        """Admit nothing new, let the worker finish everything queued, join it. True when it finished."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the worker ----------------------------------------------------------------------------------------
    def _next(self) -> list[GroupRequest] | CallJob | None:
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._pending.popleft()
            if isinstance(first, CallJob):
                return first
            batch, total = [first], len(first.candidates)
            deadline = time.monotonic() + self.max_wait_s
            while total < self.max_batch:
                if self._pending:
                    following = self._pending[0]
                    if not isinstance(following, GroupRequest) or total + len(following.candidates) > self.max_batch:
                        break
                    batch.append(self._pending.popleft())
                    total += len(following.candidates)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing or self._arriving == 0:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            try:
                if isinstance(work, CallJob):
                    self._call(work)
                else:
                    self._score([job for job in work if job.future.set_running_or_notify_cancel()])
            except BaseException as error:  # never let the worker die: fail what it held, go on
                for job in [work] if isinstance(work, CallJob) else work:
                    if not job.future.done():
                        job.future.set_exception(error)

    def _call(self, job: CallJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.call())
        except Exception as error:
            self._report(error)
            job.future.set_exception(error)

    def _score(self, jobs: list[GroupRequest]) -> None:
        if not jobs:
            return
        total = sum(len(job.candidates) for job in jobs)
        try:
            batch = self.reward.score_groups([j.source for j in jobs], [j.instruction for j in jobs],
                                             [list(j.candidates) for j in jobs])
        except Exception as error:
            self._report(error)
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            for job in jobs:                      # find the request that fails; the others still get rewards
                try:
                    alone = self.reward.score_groups([job.source], [job.instruction], [list(job.candidates)])
                except Exception as single_error:
                    job.future.set_exception(single_error)
                else:
                    self._observe(1, len(job.candidates))
                    job.future.set_result(ScoreOutcome(alone, 1, len(job.candidates)))
            return
        self._observe(len(jobs), total)
        start = 0
        for job in jobs:
            stop = start + len(job.candidates)
            part = RewardBatch(batch.reward[start:stop], list(batch.details[start:stop]))
            part.failures = int(part.reward.isnan().sum())
            job.future.set_result(ScoreOutcome(part, len(jobs), total))
            start = stop

    def _observe(self, requests: int, candidates: int) -> None:
        if self.on_batch is not None:
            self.on_batch(requests, candidates)

    def _report(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(error)
