"""Wyoming transport: listen on tcp/unix/stdio, read events with size limits, hand them to handlers.

The `wyoming` library's reader has no limits and turns bad JSON into a silent disconnect; this one
answers broken framing with an `error` event, closes only that connection, and keeps serving the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from wyoming.error import Error
from wyoming.event import Event, async_write_event

from .errors import MinervaError, ProtocolError
from .settings import ListenUri

_LOGGER = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # one JSON header line
MAX_DATA_BYTES = 1024 * 1024  # data_length
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # payload_length (one audio chunk)


class EventSink(Protocol):
    """What a handler may do with its connection: send events. Handlers never see sockets."""

    peer: str

    async def send(self, event: Event) -> None: ...


class ConnectionHandler(Protocol):
    async def handle_event(self, event: Event) -> bool:
        """Handle one event; False closes the connection."""
        ...

    async def disconnect(self) -> None:
        """The client is gone (or the server stops): free per-connection state, cancel work."""
        ...


HandlerFactory = Callable[[EventSink], ConnectionHandler]


class StreamSink:
    """Serialises writes from the read loop and background tasks onto one stream."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self._writer = writer
        self._lock = asyncio.Lock()
        self.peer = peer
        self.closed = False

    async def send(self, event: Event) -> None:
        if self.closed:
            return
        async with self._lock:
            try:
                await async_write_event(event, self._writer)
            except (ConnectionError, RuntimeError):
                self.closed = True


def _length(header: dict[str, Any], key: str, cap: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer")
    if value > cap:
        raise ProtocolError(f"{key} {value} is over the limit of {cap} bytes")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """One event, None at end of stream; ProtocolError for anything malformed or too large."""
    try:
        line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError) as err:
        raise ProtocolError(f"header line is over the limit of {MAX_HEADER_BYTES} bytes") from err
    if not line:
        return None
    if not line.endswith(b"\n"):
        return None  # connection closed in the middle of a header
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as err:  # also integers over 4300 digits and absurd nesting
        raise ProtocolError(f"header is not valid JSON: {_reason(err)}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("'data' must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise ProtocolError("additional data must be a JSON object")
            data = {**data, **extra}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"additional data is not valid JSON: {_reason(err)}") from None
    # null means absent
    data = {key: value for key, value in data.items() if value is not None}
    return Event(type=header["type"], data=data, payload=payload)


def _reason(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)[:200]


def error_event(err: BaseException) -> Event:
    if isinstance(err, MinervaError):
        return Error(text=str(err), code=err.code).event()
    return Error(text="internal error: see the server log", code="internal_error").event()


async def serve_connection(
    reader: asyncio.StreamReader, sink: EventSink, factory: HandlerFactory, service: str, drain_on_eof: bool = False
) -> None:
    """The read loop of one connection. Errors become `error` events; nothing escapes to other clients."""
    handler = factory(sink)
    try:
        while True:
            try:
                event = await read_event(reader)
            except ProtocolError as err:
                _LOGGER.warning("%s %s: %s; closing this connection", service, sink.peer, err)
                await sink.send(error_event(err))
                break
            if event is None:
                # stdin closed but stdout still open (a piped request): let answers under way go out first.
                drain = getattr(handler, "drain", None)
                if drain_on_eof and drain is not None:
                    await drain()
                break
            try:
                if not await handler.handle_event(event):
                    break
            except MinervaError as err:
                _LOGGER.warning(
                    "%s %s: %s (%s)",
                    service,
                    sink.peer,
                    err,
                    err.code,
                    exc_info=_LOGGER.isEnabledFor(logging.DEBUG),
                )
                await sink.send(error_event(err))
            except (ConnectionError, asyncio.IncompleteReadError):
                break
            except Exception as err:
                _LOGGER.exception("%s %s: unexpected error handling %s", service, sink.peer, event.type)
                await sink.send(error_event(err))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            await handler.disconnect()
        except Exception:
            _LOGGER.exception("%s %s: error while disconnecting", service, sink.peer)


class WyomingServer:
    """One listening Wyoming service; tracks its connections for a graceful stop."""

    def __init__(self, service: str, uri: ListenUri, factory: HandlerFactory) -> None:
        self.service = service
        self.uri = uri
        self.factory = factory
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stdio_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.uri.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def bound_host(self) -> str:
        return self.uri.host

    async def start(self) -> None:
        if self.uri.scheme == "tcp":
            self._server = await asyncio.start_server(
                self._on_connect, self.uri.host, self.uri.port, limit=MAX_HEADER_BYTES
            )
        elif self.uri.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                Path(self.uri.path).unlink()
            self._server = await asyncio.start_unix_server(self._on_connect, self.uri.path, limit=MAX_HEADER_BYTES)
        else:
            self._stdio_task = asyncio.create_task(self._serve_stdio())
        _LOGGER.info("%s service listening on %s", self.service, self.describe_address())

    async def wait_stdio_closed(self) -> None:
        """Returns when a stdio:// service's input ends (never for sockets, which wait for a signal)."""
        if self._stdio_task is None:
            await asyncio.Event().wait()
        else:
            await asyncio.shield(self._stdio_task)

    def describe_address(self) -> str:
        if self.uri.scheme == "tcp":
            return str(ListenUri("tcp", self.uri.host, self.port))
        return str(self.uri)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername or "unix")
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sink = StreamSink(writer, peer)
        _LOGGER.debug("%s: %s connected", self.service, peer)
        try:
            await serve_connection(reader, sink, self.factory, self.service)
        except asyncio.CancelledError:
            # Closed by close(): end quietly, or asyncio logs the cancelled connection callback as an error.
            pass
        finally:
            self._tasks.discard(task)
            sink.closed = True
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            _LOGGER.debug("%s: %s disconnected", self.service, peer)

    async def _serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(sys.stdout.fileno(), "wb")
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        await serve_connection(reader, StreamSink(writer, "stdio"), self.factory, self.service, drain_on_eof=True)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_idle(self, timeout: float) -> bool:
        """Let in-flight connections finish; True when all did within `timeout`."""
        pending = set(self._tasks)
        if self._stdio_task is not None:
            pending.add(self._stdio_task)
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def close(self) -> None:
        for task in list(self._tasks) + ([self._stdio_task] if self._stdio_task else []):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self.uri.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                Path(self.uri.path).unlink()
