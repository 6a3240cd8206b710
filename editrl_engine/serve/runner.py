"""Running the app under uvicorn: in the foreground (`editrl serve`), or on a background thread on loopback
(tests, bench/serve.py) with an ephemeral port.

Shutdown is uvicorn's graceful one: it stops accepting connections, waits for the requests in flight (up to
the request timeout plus a margin), then runs the app's shutdown, which drains the model queue.
"""
from __future__ import annotations

import socket
import threading
import time

import uvicorn


def _config(app, config, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=int(config.timeout_s) + 5, access_log=log_level == "debug")


def serve_forever(app, log_level: str = "info") -> None:
    """Blocks until SIGINT / SIGTERM, then shuts down gracefully."""
    uvicorn.Server(_config(app, app.state.config, log_level)).run()


class BackgroundServer:
    """uvicorn on a thread, bound to host:port (port 0: a free one, read back into .port).

        with BackgroundServer(app) as server:
            httpx.post(server.url + "/v1/score", json=...)
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app, self.host = app, host
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
        # it a response written in two parts waits for the client's delayed ACK (about 40 ms a request)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = self._socket.getsockname()[1]
        config = _config(app, app.state.config, log_level)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="editrl-serve-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Graceful shutdown (in-flight requests finish, the queue drains); True when the thread ended."""
        self.server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
        return not self._thread.is_alive()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
