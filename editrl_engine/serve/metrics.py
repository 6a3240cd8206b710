"""The server's Prometheus metrics, in a registry of its own (several apps in one process do not collide).

requests by endpoint and status, the queue depth, candidates and requests per scored batch, request latency,
the accepted / answered counts behind "every accepted request gets exactly one answer", and the chat
completions' prefix cache (hits, misses, evictions, bytes, entries).
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
PREFIX_STORE_METRICS = {"hits": "chat requests whose shared prefix was in the prefix cache",
                        "misses": "chat requests whose shared prefix had to be prefilled",
                        "evictions": "prefixes dropped to keep the cache within its byte bound",
                        "bytes": "bytes of KV cache the prefix cache holds",
                        "entries": "prefixes the prefix cache holds"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int], prefix_store=None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("editrl_serve_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.accepted = Counter("editrl_serve_accepted", "requests admitted to the model queue", registry=r)
        self.answered = Counter("editrl_serve_answered", "admitted requests that got their one answer", registry=r)
        self.queue_depth = Gauge("editrl_serve_queue_depth", "requests waiting for the model worker", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.batch_candidates = Histogram("editrl_serve_batch_candidates", "candidates scored per model batch",
                                          buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("editrl_serve_batch_requests", "requests merged per model batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.latency = Histogram("editrl_serve_request_latency_seconds", "request latency, arrival to answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_errors = Counter("editrl_serve_model_errors", "batches on which the model raised", registry=r)
        if prefix_store is not None:                # the chat completions' cross-request prefix cache
            for name, text in PREFIX_STORE_METRICS.items():
                gauge = Gauge(f"editrl_serve_prefix_cache_{name}", text, registry=r)
                gauge.set_function(lambda name=name: prefix_store.stats()[name])
        self._lock = threading.Lock()
        self.accepted_count = 0
        self.answered_count = 0

    def accept(self) -> None:
        """A request entered the model queue: it is owed exactly one answer."""
        with self._lock:
            self.accepted_count += 1
        self.accepted.inc()

    def answer(self, endpoint: str, status: int | str, seconds: float, accepted: bool) -> None:
        """A request was answered (accepted: it had been admitted to the queue)."""
        if accepted:
            with self._lock:
                self.answered_count += 1
            self.answered.inc()
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
