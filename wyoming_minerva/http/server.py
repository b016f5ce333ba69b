"""uvicorn in the process's own event loop, beside the Wyoming servers (no signal handlers, no reload).

Its limits are set here on purpose, not left to uvicorn's defaults: idle keep-alive connections close after
KEEP_ALIVE_SECONDS, a request head larger than MAX_HEAD_BYTES is a 400, connections past max_connections
(WebSockets included) get 503, and a request's headers must arrive within header_timeout (uvicorn has no such
timeout: HeaderTimedH11 adds it), so clients that trickle headers cannot hold connections forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

_LOGGER = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this (uvicorn's default, chosen)
MAX_HEAD_BYTES = 16 * 1024  # request line + headers; browsers send a few KiB


def header_timed(timeout: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head, from the connection (or the end of
    the previous response) to its last header; a connection that misses it is closed."""

    class HeaderTimedH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE or self.transport.get_protocol() is not self:
                self._disarm()  # the head is complete (or the connection became a WebSocket)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # keep-alive: the next request's head has the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = asyncio.get_running_loop().call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                _LOGGER.debug("HTTP %s: no complete request head within %.0f s; closing", self.client, timeout)
                self.transport.close()

    return HeaderTimedH11


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
    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        grace_seconds: float = 5.0,
        debug: bool = False,
        *,
        header_timeout: float = 10.0,
        max_connections: int = 256,
    ) -> None:
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
            http=header_timed(header_timeout),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            limit_concurrency=max_connections,
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
