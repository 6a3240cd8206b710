"""Best-of-N reranking and reward serving.

- rerank.py    rerank(policy, reward, source, instruction, n, seed) -> RerankResult (the library call)
- scoring.py   best_index: the best finite reward of a scored group (groups go through reward.score_groups)
- outputs.py   JSON-safe values, atomic JSON / PNG writes, the contact sheet of candidates
- server.py    the HTTP app (FastAPI): create_app(reward, policy, config); its parts: routes.py (the routes),
               state.py (ServerState, one request's bookkeeping), batching.py (the model worker), bodies.py
               (request bodies), images.py, schemas.py, metrics.py, runner.py (uvicorn).
               They need the `serve` extra (fastapi, uvicorn, prometheus-client, python-multipart)
The HTTP parts are imported only when asked for, so the library call needs no web stack.
"""
from __future__ import annotations

from .rerank import Candidate, RerankResult, rerank

_SERVER_NAMES = {"create_app": "server", "ServeConfig": "server", "BackgroundServer": "runner"}


def __getattr__(name: str):
    if name in _SERVER_NAMES:
        import importlib
        return getattr(importlib.import_module(f".{_SERVER_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Candidate", "RerankResult", "rerank", *_SERVER_NAMES]
