"""What every WebSocket route shares: bounded reads, JSON checks with clear error codes, serialised writes.

A bad message (malformed JSON, an unknown type, a frame over --realtime-max-frame-bytes, audio before the
start message) gets an error message and the connection stays open; JSON no client sends (a number past
Python's 4,300 digits, nesting deeper than MAX_JSON_DEPTH) gets the error and a 1007 close. A vanished client
ends the route, whose `finally` closes its session so no task outlives the socket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, NoReturn

from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import BadRequestError
from ..settings import RealtimeSettings
from ..stt.live.hub import LiveHub
from ..stt.live.types import LatencyHistogram
from ..wake.service import WakeWords
from .deps import HttpContext
from .guard import chosen_subprotocol

_LOGGER = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007  # JSON beyond any real client's (huge numbers, deep nesting)
CLOSE_POLICY = 1008  # a client that broke the protocol beyond repair (e.g. never reads)
CLOSE_UNAVAILABLE = 1011  # the engine this route needs is not running
CLOSE_TRY_AGAIN = 1013  # session_limit: come back later
CLOSE_TIMEOUT_SECONDS = 2.0  # a client that does not read gets its error and close this long, no longer
MAX_JSON_DEPTH = 16  # objects/arrays inside each other; the deepest real message (a Realtime session) has 5


class FrameTooLargeError(BadRequestError):
    """A WebSocket message larger than --realtime-max-frame-bytes (it is dropped)."""

    code = "frame_too_large"


class BadJsonError(BadRequestError):
    """A text message that is not a JSON object."""

    code = "bad_json"


class InvalidDataError(BadJsonError):
    """JSON that parses only by costing the server (huge integers, deep nesting): the connection is closed (1007)."""

    code = "invalid_data"


class UnknownMessageError(BadRequestError):
    """A JSON message whose `type` this endpoint does not know."""

    code = "unknown_type"


class NotStartedError(BadRequestError):
    """Audio or a command before the start message."""

    code = "not_started"


class Disconnected(Exception):
    """The client went away."""


class Channel:
    """One accepted WebSocket: size-checked receive, writes from several tasks in order, a close that never hangs."""

    def __init__(self, websocket: WebSocket, max_frame_bytes: int) -> None:
        self.websocket = websocket
        self.max_frame_bytes = max_frame_bytes
        client = websocket.client
        self.peer = f"ws:{client.host}:{client.port}" if client else "ws:?"
        self.closed = False
        self._lock = asyncio.Lock()

    async def receive(self) -> str | bytes:
        """The next message; Disconnected when the client is gone; FrameTooLargeError (message dropped)."""
        try:
            message = await self.websocket.receive()
        except (WebSocketDisconnect, RuntimeError) as err:
            self.closed = True
            raise Disconnected from err
        if message["type"] == "websocket.disconnect":
            self.closed = True
            raise Disconnected
        text, data = message.get("text"), message.get("bytes")
        payload: str | bytes = text if text is not None else (data or b"")
        if len(payload) > self.max_frame_bytes:
            raise FrameTooLargeError(
                f"a message of {len(payload)} bytes is over the limit of {self.max_frame_bytes} "
                "(--realtime-max-frame-bytes); it was dropped"
            )
        return payload

    async def send_json(self, data: dict[str, Any]) -> None:
        await self._send(json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, data: str | bytes) -> None:
        if self.closed:
            return
        async with self._lock:
            try:
                if isinstance(data, str):
                    await self.websocket.send_text(data)
                else:
                    await self.websocket.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True  # the client is gone; the reader notices and ends the route

    async def close_invalid(self, err: InvalidDataError, last: dict[str, Any]) -> NoReturn:
        """Send `last` (the error), close with 1007 and end the route (Disconnected)."""
        await self.close(CLOSE_INVALID_DATA, str(err), last)
        raise Disconnected

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "", last: dict[str, Any] | None = None) -> None:
        """Send `last` (an error, say) and close, giving a client that does not read a few seconds at most."""
        if self.closed or self.websocket.client_state != WebSocketState.CONNECTED:
            self.closed = True
            return
        with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                if last is not None:
                    await self.send_json(last)
                self.closed = True
                await self.websocket.close(code, reason[:120])
        self.closed = True


def parse_message(text: str) -> dict[str, Any]:
    """A JSON object with a string `type`; BadJsonError, or InvalidDataError for JSON beyond the limits."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadJsonError(f"not valid JSON: {err}") from err
    except RecursionError as err:
        raise InvalidDataError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from err
    except ValueError as err:  # an integer past Python's limit of 4,300 digits
        raise InvalidDataError("a JSON number with too many digits") from err
    if _nested_deeper_than(data, MAX_JSON_DEPTH):
        raise InvalidDataError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise BadJsonError("a message must be a JSON object")
    if not isinstance(data.get("type"), str):
        raise BadJsonError("a message needs a string 'type'")
    return data


def _nested_deeper_than(value: object, limit: int) -> bool:
    """Without recursion: deep values would otherwise blow the stack later (repr in an error message, say)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def decode_base64(value: object, field: str = "audio") -> bytes:
    if not isinstance(value, str):
        raise BadRequestError(f"'{field}' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequestError(f"'{field}' is not valid base64: {err}") from err


def int_field(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    """An optional integer field within [low, high] (booleans are not integers here)."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequestError(f"'{key}' must be an integer from {low} to {high}, got {value!r}")
    return value


def str_field(data: dict[str, Any], key: str, max_len: int = 2000) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequestError(f"'{key}' must be a string of at most {max_len} characters")
    return value or None


def bool_field(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequestError(f"'{key}' must be true or false, got {value!r}")
    return value


# ---- the context the streaming routes share (on app.state, set by stream_routes.install) ---------------


@dataclass
class StreamContext:
    http: HttpContext
    hub: LiveHub | None  # None when the server has no speech-to-text engine
    settings: RealtimeSettings
    tts_first_audio: LatencyHistogram = field(default_factory=LatencyHistogram)  # request → first PCM frame

    @property
    def wake(self) -> WakeWords | None:
        wake = getattr(self.http.engines, "wake", None)  # EngineSet names only stt and tts
        return wake if isinstance(wake, WakeWords) else None


async def accept(websocket: WebSocket, preferred: str | None = None) -> None:
    """Accept naming one of the offered subprotocols (as the guard's refusal does): a browser that sends the API
    key as one (`["minerva", "openai-insecure-api-key.KEY"]`) fails a handshake whose answer names none."""
    await websocket.accept(subprotocol=chosen_subprotocol(websocket.scope, preferred))


def stream_context(websocket: WebSocket | Request) -> StreamContext:
    ctx = websocket.app.state.minerva_streams
    assert isinstance(ctx, StreamContext)
    return ctx
