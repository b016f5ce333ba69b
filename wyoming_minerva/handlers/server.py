"""Wyoming transport: listen on tcp/unix/stdio, read events with size limits, hand them to handlers.

The `wyoming` library's reader has no limits and turns bad JSON into a silent disconnect; this one
answers broken framing with an `error` event, closes only that connection, and keeps serving the rest.

Budgets (settings.WyomingLimits): connections per service, an idle timeout for connections with no request
under way, and the process-wide AudioBudget, from which every audio payload takes its bytes while it is read
and handled. Fairness: one event per connection per turn of the event loop, and a connection whose answers
are not being read is not read either (backpressure), so a flood on one connection cannot starve the others.
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

from ..budget import AudioBudget, BudgetLease
from ..errors import MinervaError, ProtocolError, ServerBusyError
from ..settings import ListenUri, WyomingLimits

_LOGGER = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # one JSON header line
MAX_DATA_BYTES = 1024 * 1024  # data_length
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # payload_length (one audio chunk)
MAX_QUEUED_SENDS = 16  # answers waiting to be written on one connection before its reading pauses
BUSY_RECHECK_SECONDS = 1.0  # while a request is under way, how often to look whether it has ended


class EventSink(Protocol):
    """What a handler may do with its connection: send events. Handlers never see sockets."""

    peer: str

    async def send(self, event: Event) -> None: ...


class ConnectionHandler(Protocol):
    @property
    def busy(self) -> bool:
        """A request is under way: the idle timeout does not apply."""
        ...

    async def handle_event(self, event: Event) -> bool:
        """Handle one event; False closes the connection."""
        ...

    async def disconnect(self) -> None:
        """The client is gone (or the server stops): free per-connection state, cancel work."""
        ...


HandlerFactory = Callable[[EventSink], ConnectionHandler]


class StreamSink:
    """Serialises writes from the read loop and background tasks onto one stream.

    Each write waits until the transport has drained (a client that does not read holds its writers), and
    `wait_writable` lets the read loop pause while too many answers are waiting to be written.
    """

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self._writer = writer
        self._lock = asyncio.Lock()
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self.peer = peer
        self.closed = False

    @property
    def queued(self) -> int:
        """Answers being written or waiting to be."""
        return self._queued

    async def send(self, event: Event) -> None:
        if self.closed:
            return
        self._queued += 1
        if self._queued >= MAX_QUEUED_SENDS:
            self._room.clear()
        try:
            async with self._lock:
                if not self.closed:
                    await async_write_event(event, self._writer)
        except (ConnectionError, RuntimeError):
            self.close()
        finally:
            self._queued -= 1
            if self._queued < MAX_QUEUED_SENDS:
                self._room.set()

    async def wait_writable(self) -> None:
        """Until fewer than MAX_QUEUED_SENDS answers wait (at once when the connection is closed)."""
        await self._room.wait()

    def close(self) -> None:
        self.closed = True
        self._room.set()


def _length(header: dict[str, Any], key: str, cap: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer")
    if value > cap:
        raise ProtocolError(f"{key} {value} is over the limit of {cap} bytes")
    return value


async def _next_line(reader: asyncio.StreamReader, idle: float | None, busy: Callable[[], bool]) -> bytes:
    """The next header line; TimeoutError once `idle` seconds pass without one while nothing is `busy`."""
    if idle is None:
        return await reader.readline()
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        if busy():
            quiet_since = loop.time()
            wait = min(idle, BUSY_RECHECK_SECONDS)
        else:
            wait = quiet_since + idle - loop.time()
            if wait <= 0:
                raise TimeoutError
        try:
            async with asyncio.timeout(wait):
                return await reader.readline()  # cancel-safe: a partial line stays in the buffer
        except TimeoutError:
            continue


async def read_event(
    reader: asyncio.StreamReader,
    lease: BudgetLease | None = None,
    idle: float | None = None,
    busy: Callable[[], bool] = lambda: False,
) -> Event | None:
    """One event, None at end of stream; ProtocolError for anything malformed, too large or too slow.

    TimeoutError when no header arrives within `idle` seconds while not `busy`; the data and payload must
    then arrive within `idle` seconds too. The payload's bytes are taken from `lease` before they are read
    (ServerBusyError when the budget is spent).
    """
    try:
        line = await _next_line(reader, idle, busy)
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
    if lease is not None and payload_length:
        lease.take(payload_length)
    try:
        async with asyncio.timeout(idle):
            if data_length:
                extra = json.loads(await reader.readexactly(data_length))
                if not isinstance(extra, dict):
                    raise ProtocolError("additional data must be a JSON object")
                data = {**data, **extra}
            payload = await reader.readexactly(payload_length) if payload_length else None
    except TimeoutError:
        raise ProtocolError(f"the data and payload of one event must arrive within {idle:g} s") from None
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
    reader: asyncio.StreamReader,
    sink: StreamSink,
    factory: HandlerFactory,
    service: str,
    drain_on_eof: bool = False,
    limits: WyomingLimits | None = None,
    budget: AudioBudget | None = None,
) -> None:
    """The read loop of one connection. Errors become `error` events; nothing escapes to other clients."""
    handler = factory(sink)
    idle = limits.idle_timeout_seconds if limits is not None and limits.idle_timeout_seconds > 0 else None
    lease = budget.lease() if budget is not None else None
    try:
        while True:
            await sink.wait_writable()  # answers not being read: read no more from this client for now
            try:
                event = await read_event(reader, lease, idle, lambda: handler.busy)
            except TimeoutError:
                _LOGGER.debug("%s %s: idle for %g s with no request under way; closing", service, sink.peer, idle)
                break
            except (ProtocolError, ServerBusyError) as err:
                # Closed either way: the rest of a refused payload would be read as the next header.
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
            finally:
                if lease is not None:
                    lease.release()  # the payload is handled: whoever keeps audio holds a lease of its own
            await asyncio.sleep(0)  # one event per turn: let every other connection have its turn too
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if lease is not None:
            lease.release()
        try:
            await handler.disconnect()
        except Exception:
            _LOGGER.exception("%s %s: error while disconnecting", service, sink.peer)


class WyomingServer:
    """One listening Wyoming service; tracks its connections for a graceful stop."""

    def __init__(
        self,
        service: str,
        uri: ListenUri,
        factory: HandlerFactory,
        limits: WyomingLimits | None = None,
        budget: AudioBudget | None = None,
    ) -> None:
        self.service = service
        self.uri = uri
        self.factory = factory
        self.limits = limits or WyomingLimits()
        self.budget = budget or AudioBudget(self.limits.max_buffered_audio_bytes)
        self.refused_connections = 0
        self._refusing = False  # logged once per episode of a full house, not once per connection
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
        sink = StreamSink(writer, peer)
        if len(self._tasks) >= self.limits.max_connections:
            await self._refuse(sink, writer)
            return
        self._refusing = False
        self._tasks.add(task)
        _LOGGER.debug("%s: %s connected", self.service, peer)
        try:
            await serve_connection(reader, sink, self.factory, self.service, limits=self.limits, budget=self.budget)
        except asyncio.CancelledError:
            # Closed by close(): end quietly, or asyncio logs the cancelled connection callback as an error.
            pass
        finally:
            self._tasks.discard(task)
            sink.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            _LOGGER.debug("%s: %s disconnected", self.service, peer)

    async def _refuse(self, sink: StreamSink, writer: asyncio.StreamWriter) -> None:
        """One connection too many: say so (server_busy) and close it, holding nothing for it."""
        self.refused_connections += 1
        if not self._refusing:
            self._refusing = True
            _LOGGER.warning(
                "%s: %d connections are open, the limit (--wyoming-max-connections); refusing new ones",
                self.service,
                len(self._tasks),
            )
        limit = self.limits.max_connections
        try:
            async with asyncio.timeout(1):
                await sink.send(error_event(ServerBusyError(f"{limit} connections are open, the limit; try later")))
        except TimeoutError:
            pass
        sink.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(sys.stdout.fileno(), "wb")
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        # A pipe has one client and no idle timeout: it ends with stdin.
        limits = WyomingLimits(self.limits.max_connections, 0.0, self.limits.max_buffered_audio_mb)
        sink = StreamSink(writer, "stdio")
        await serve_connection(reader, sink, self.factory, self.service, True, limits, self.budget)

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
