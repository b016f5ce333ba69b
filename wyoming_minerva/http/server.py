"""uvicorn in the process's own event loop, beside the Wyoming servers (no signal handlers, no reload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

_LOGGER = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the App owns SIGINT/SIGTERM and stops us through stop()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port fails at start and port 0 is known at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    def __init__(self, app: ASGIApp, host: str, port: int, grace_seconds: float = 5.0, debug: bool = False) -> None:
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # keep the process's logging setup
            access_log=debug,
            server_header=False,
            timeout_graceful_shutdown=max(1, math.ceil(grace_seconds)),  # uvicorn takes whole seconds
        )
        self._server = _EmbeddedServer(self._config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """OSError when the address cannot be bound."""
        self._socket = bind(self.host, self._requested_port)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        _LOGGER.info("HTTP API on http://%s:%d", self.host if ":" not in self.host else f"[{self.host}]", self.port)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish within the grace time, then close."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        except Exception:
            _LOGGER.exception("HTTP server failed while stopping")
        self._task = None
