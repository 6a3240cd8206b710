"""Access control as vLLM's --api-key: with a key, every route but /healthz needs `Authorization: Bearer <key>`
(401 with WWW-Authenticate otherwise); the key never shows in /metrics, /healthz, answers or logs; the CLI reads it
from an environment variable and warns when a keyless server listens beyond loopback."""
from __future__ import annotations

import logging

import httpx
import pytest

from editrl_engine import cli
from editrl_engine.serve.auth import is_loopback

from .serve_fakes import FixedReward, noisy, score_body, serve

KEY = "k3y-for-tests-only"
ROUTES = [("POST", "/v1/score"), ("POST", "/v1/rerank"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
          ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs")]


@pytest.fixture(scope="module")
def server():
    server = serve(FixedReward([0.5]), api_key=KEY)
    yield server
    server.stop()


def call(server, method, path, headers=None):
    body = score_body("make it red", noisy(0, 16), [noisy(1, 16)]) if path == "/v1/score" else None
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_every_route_but_healthz_needs_the_key(server, method, path, headers):
    answer = call(server, method, path, headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer.json()["detail"] and KEY not in answer.text


def test_with_the_key_the_routes_answer_and_healthz_is_open(server, caplog):
    with caplog.at_level(logging.DEBUG):
        good = {"Authorization": f"Bearer {KEY}"}
        assert call(server, "POST", "/v1/score", good).status_code == 200
        assert call(server, "GET", "/metrics", good).status_code == 200
        assert call(server, "GET", "/healthz").status_code == 200
        texts = [call(server, "GET", path, good).text for path in ("/metrics", "/healthz", "/openapi.json")]
    assert all(KEY not in text for text in texts) and KEY not in caplog.text
    assert KEY not in repr(server.app.state.config)


def test_without_a_key_the_server_stays_open():
    server = serve(FixedReward([0.5]))
    try:
        assert httpx.post(server.url + "/v1/score", json=score_body("x", noisy(0, 16), [noisy(1, 16)]),
                          timeout=30).status_code == 200
    finally:
        server.stop()


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.5", "::", "example.org"))


def test_the_cli_reads_the_key_from_the_environment_and_refuses_a_missing_one(monkeypatch):
    from editrl_engine.cli_serve import serve_config
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--reward", "programmatic", "--api-key-env", "JUDGE_KEY"])
    monkeypatch.setenv("JUDGE_KEY", KEY)
    assert serve_config(args).api_key == KEY
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(ValueError, match="JUDGE_KEY: that environment variable is not set"):
        serve_config(args)
    both = parser.parse_args(["serve", "--reward", "programmatic", "--api-key", "a", "--api-key-env", "B"])
    with pytest.raises(ValueError, match="not both"):
        serve_config(both)
