"""HTTP to OpenAI-compatible endpoints: an async client on a background event loop (the reward API is
synchronous), bounded in-flight requests per endpoint, timeouts, retries with exponential backoff on connection
errors, timeouts, 429, 500, 502, 503 and 504 (Retry-After honoured), and routing (routing.py) that keeps a group's
requests on one endpoint.

A request that finally fails gives a Failure with its reason, never a made-up answer; the judges turn it into a
NaN reward counted in `failures`. An endpoint that fails at the transport level (no connection, a timeout, 5xx
after the retries) is marked down for `down_s` and its groups move to a healthy endpoint.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from ...errors import InputError
from .routing import Endpoint, Router

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a request got no answer; `transport` failures (not a bad answer) mark the endpoint down."""
    reason: str
    transport: bool = True


@dataclasses.dataclass(frozen=True)
class TransportConfig:
    max_in_flight: int = 8                  # concurrent requests per endpoint
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0           # a long generation is slow, not dead
    retries: int = 3                        # after the first try
    backoff_s: float = 0.5                  # the wait before retry k is backoff_s * 2**k (capped at max_wait_s)
    max_wait_s: float = 30.0                # the longest wait, also for a Retry-After
    down_s: float = 10.0                    # how long a failed endpoint is left alone before it is tried again
    routing: str = "group"                  # group: a group's requests share an endpoint; request: each its own
                                            # (least loaded: round-robin when equally loaded; for comparisons)

    def __post_init__(self):
        if self.routing not in ("group", "request"):
            raise InputError(f"routing must be 'group' or 'request', got {self.routing!r}")
        bad = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
               if f.name != "routing"
               and not getattr(self, f.name) >= (0 if f.name in ("retries", "backoff_s", "down_s") else 1e-9)]
        if bad or self.max_in_flight < 1:
            raise InputError(f"bad remote judge transport settings: {', '.join(bad) or 'max_in_flight < 1'}; "
                             "timeouts and max_in_flight must be > 0, retries, backoff_s and down_s >= 0")


def api_key_from(env: str | None) -> str | None:
    """The key in environment variable `env` (None without one); a clear error when it is named but unset."""
    if not env:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise InputError(f"api_key_env={env!r}: that environment variable is not set or empty; export {env}=<key>")
    return key


def retry_after(headers, fallback: float, cap: float) -> float:
    value = headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), cap) if value is not None else fallback
    except ValueError:
        return fallback


class Transport:
    def __init__(self, endpoints: Sequence[str], *, api_key_env: str | None = None,
                 config: TransportConfig = TransportConfig()):
        try:
            import httpx
        except ModuleNotFoundError:
            raise InputError("remote judges need httpx: pip install 'editrl-engine[remote]'") from None
        self._httpx, self.config = httpx, config
        self.router = Router([Endpoint(url.rstrip("/")) for url in endpoints], down_s=config.down_s)
        key = api_key_from(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="editrl-remote-judge", daemon=True)
        self._thread.start()
        self._client = self._run(self._make_client())
        self._limits = {e.url: asyncio.Semaphore(config.max_in_flight) for e in self.router.endpoints}

    def __repr__(self) -> str:                                  # never the key
        return f"Transport({[e.url for e in self.router.endpoints]})"

    async def _make_client(self):
        c = self.config
        timeout = self._httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s)
        limits = self._httpx.Limits(max_connections=c.max_in_flight * len(self.router.endpoints) + 4)
        return self._httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def get(self, path: str) -> dict:
        """GET path on the first healthy endpoint (e.g. /models); raises InputError naming why it failed."""
        async def go():
            endpoint = self.router.endpoints[0]
            response = await self._client.get(endpoint.url + path)
            response.raise_for_status()
            return response.json()
        try:
            return self._run(go())
        except Exception as error:
            raise InputError(f"GET {path} on {self.router.endpoints[0].url} failed ({type(error).__name__}: "
                             f"{error}); is the judge server up, and is the endpoint its /v1 base URL?") from None

    def post_groups(self, path: str, bodies: Sequence[dict], groups: Sequence[Any]) -> list[dict | Failure]:
        """POST each body to `path`, all at once within the per-endpoint bounds; bodies with the same group key go
        to the same endpoint. One answer (the parsed JSON) or Failure per body, in order."""
        return self._run(self._post_all(path, list(bodies), list(groups)))

    async def _post_all(self, path: str, bodies: list[dict], groups: list) -> list[dict | Failure]:
        if self.config.routing == "request":
            groups = list(range(len(bodies)))
        sizes: dict[Any, int] = {}
        for group in groups:
            sizes[group] = sizes.get(group, 0) + 1
        assigned = {group: self.router.assign(size) for group, size in sizes.items()}
        tasks = [self._post_in_group(path, body, group, assigned) for body, group in zip(bodies, groups)]
        return list(await asyncio.gather(*tasks))

    async def _post_in_group(self, path: str, body: dict, group, assigned: dict) -> dict | Failure:
        """One request of a group, on the group's endpoint; after a transport failure the group moves (once per
        endpoint) to another healthy one, and this request is tried there."""
        counted, tried = assigned[group], set()       # `counted`: the endpoint whose `pending` holds this request
        while True:
            endpoint = assigned[group]
            if endpoint is not counted:
                counted.finish()
                endpoint.pending += 1
                counted = endpoint
            tried.add(endpoint.url)
            result = await self._post(endpoint, path, body)
            if not (isinstance(result, Failure) and result.transport):
                break
            if assigned[group] is endpoint:           # the first of the group to fail there moves the group
                self.router.mark_down(endpoint)
                moved = self.router.assign(0, avoid=tried)
                if moved is None:
                    break
                assigned[group] = moved
            elif assigned[group].url in tried:
                break
        counted.finish()
        return result

    async def _post(self, endpoint: Endpoint, path: str, body: dict) -> dict | Failure:
        httpx, c = self._httpx, self.config
        failure = Failure("not sent")
        for attempt in range(c.retries + 1):
            wait = min(c.backoff_s * 2 ** attempt, c.max_wait_s)
            endpoint.stats["requests"] += 1
            try:
                async with self._limits[endpoint.url]:
                    response = await self._client.post(endpoint.url + path, json=body)
            except httpx.TimeoutException as error:
                failure = Failure(f"{endpoint.url}: timed out ({type(error).__name__})")
            except httpx.TransportError as error:
                failure = Failure(f"{endpoint.url}: connection failed ({type(error).__name__}: {error})")
            else:
                if response.status_code == 200:
                    return _json_answer(response, endpoint.url)
                detail = response.text[:300]
                failure = Failure(f"{endpoint.url}: HTTP {response.status_code}: {detail}",
                                  transport=response.status_code in RETRY_STATUSES)
                if response.status_code not in RETRY_STATUSES:
                    endpoint.stats["failures"] += 1
                    return failure
                wait = retry_after(response.headers, wait, c.max_wait_s)
            if attempt < c.retries:
                endpoint.stats["retries"] += 1
                await asyncio.sleep(wait)
        endpoint.stats["failures"] += 1
        return dataclasses.replace(failure, reason=f"{failure.reason} (after {c.retries + 1} tries)")

    def stats(self) -> dict[str, dict]:
        return self.router.stats()


def _json_answer(response, url: str) -> dict | Failure:
    try:
        answer = json.loads(response.content)
    except ValueError:
        return Failure(f"{url}: the answer is not JSON ({response.text[:80]!r})", transport=False)
    if not isinstance(answer, dict):
        return Failure(f"{url}: the answer is not a JSON object", transport=False)
    return answer
