"""Which endpoint serves a group: all requests of one group go to one endpoint (its prefix cache then holds the
group's shared source and instruction), the least loaded of the healthy ones; an endpoint that failed is down for
`down_s` seconds, then tried again by the next group sent to it (its probe). With every endpoint down, the one
that has been down longest is tried: the run goes on, and a request that still fails is a Failure (NaN)."""
from __future__ import annotations

import dataclasses
import threading
import time


@dataclasses.dataclass(eq=False)
class Endpoint:
    url: str                                # the /v1 base URL
    pending: int = 0                        # requests assigned and not yet finished
    down_until: float = 0.0                 # time.monotonic() before which it is not chosen
    stats: dict = dataclasses.field(default_factory=lambda: {"requests": 0, "retries": 0, "failures": 0,
                                                             "down": 0, "groups": 0})

    def finish(self) -> None:
        self.pending -= 1


class Router:
    def __init__(self, endpoints: list[Endpoint], down_s: float):
        if not endpoints:
            raise ValueError("a remote judge needs at least one endpoint")
        self.endpoints, self.down_s = endpoints, down_s
        self._lock = threading.Lock()

    def assign(self, requests: int, avoid: set[str] = frozenset()) -> Endpoint | None:
        """The endpoint for a group of `requests`: the least loaded healthy one not in `avoid` (ties: the first
        listed); with none healthy, the one down longest (None if every endpoint is avoided)."""
        now = time.monotonic()
        with self._lock:
            open_ = [e for e in self.endpoints if e.url not in avoid]
            if not open_:
                return None
            healthy = [e for e in open_ if e.down_until <= now]
            chosen = min(healthy, key=lambda e: e.pending) if healthy else min(open_, key=lambda e: e.down_until)
            chosen.pending += requests
            chosen.stats["groups"] += 1
            return chosen

    def mark_down(self, endpoint: Endpoint) -> None:
        """Down for down_s from now; counted once per outage (groups failing there together count once)."""
        now = time.monotonic()
        with self._lock:
            if endpoint.down_until <= now:
                endpoint.stats["down"] += 1
            endpoint.down_until = now + self.down_s

    def stats(self) -> dict[str, dict]:
        now = time.monotonic()
        with self._lock:
            return {e.url: {**e.stats, "healthy": e.down_until <= now} for e in self.endpoints}
