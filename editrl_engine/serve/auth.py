"""API-key access control, as vLLM's --api-key: with a key set, every route but /healthz needs the header
`Authorization: Bearer <key>`; anything else is answered 401 (with WWW-Authenticate) before the app sees it.
The key is compared in constant time and never written to a log, a metric or an answer."""
from __future__ import annotations

import hmac
import ipaddress
import json

OPEN_PATHS = frozenset({"/healthz"})


class BearerAuth:
    """Pure ASGI middleware (it never buffers bodies, so streamed uploads and lifespan events pass untouched)."""

    def __init__(self, app, key: str, open_paths=OPEN_PATHS):
        if not key:
            raise ValueError("BearerAuth needs a non-empty key")
        self.app, self._expected, self.open_paths = app, f"Bearer {key}".encode(), open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or ()).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            return await self.app(scope, receive, send)
        body = json.dumps({"detail": "missing or wrong API key: send the header 'Authorization: Bearer <key>'"})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body.encode()})


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
