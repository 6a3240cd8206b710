"""A scripted OpenAI-compatible chat-completions server on loopback, for the remote-judge tests.

Each request is answered by the next step of the fake's script (the last step repeats): a dict is the JSON answer;
a callable gives the answer from the request body; ("status", code, headers) answers that status; ("stall",
seconds[, answer]) waits, then answers (by default the text "late"); "not_json" answers 200 with a body that is not
JSON. Every request body is recorded, with the port it arrived on and its headers; `peak` is the most requests it
held at once.
"""
from __future__ import annotations

import asyncio
import math
import threading
import types

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from editrl_engine.serve.runner import BackgroundServer


def logprob_answer(digits: dict[str, float], other: float = 0.0) -> dict:
    """An answer whose first token's top_logprobs hold the given {token: probability} (plus "x" with `other`)."""
    top = [{"token": t, "logprob": math.log(p)} for t, p in digits.items()]
    if other:
        top.append({"token": "x", "logprob": math.log(other)})
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": max(digits, key=digits.get)},
                         "logprobs": {"content": [{"token": max(digits, key=digits.get), "logprob": 0.0,
                                                   "top_logprobs": top}]}, "finish_reason": "length"}]}


def text_answer(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": "stop"}]}


class FakeServer:
    def __init__(self, script: list, port: int = 0):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        self.port, self.server = port, None
        self.active = self.peak = 0                 # requests being answered now, and the most at once
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> FastAPI:
        app = FastAPI()
        app.state.config = types.SimpleNamespace(host="127.0.0.1", port=self.port, timeout_s=1.0)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "fake-judge", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self.lock:
                self.requests.append((self.port, body, dict(request.headers)))
                step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                if isinstance(step, tuple) and step[0] == "stall":
                    await asyncio.sleep(step[1])
                    step = step[2] if len(step) > 2 else text_answer("late")
            finally:
                with self.lock:
                    self.active -= 1
            if isinstance(step, tuple) and step[0] == "status":
                return JSONResponse({"detail": "scripted"}, status_code=step[1], headers=step[2] if len(step) > 2
                                    else None)
            if step == "not_json":
                return PlainTextResponse("<html>bad gateway</html>")
            return JSONResponse(step(body) if callable(step) else step)

        return app

    def start(self) -> "FakeServer":
        self.server = BackgroundServer(self.app(), port=self.port).start()
        self.port = self.server.port
        return self

    def stop(self) -> None:
        self.server.stop(timeout=10)
