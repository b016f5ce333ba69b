"""The gate in front of every route, before a byte of the body is read: API key, body size, body time, concurrency.

Pure ASGI on purpose: FastAPI parses a multipart body before dependencies run, so checks made there would
come after reading a 25 MB upload. Here a wrong key is a 401 and a Content-Length over the cap a 413 at once;
a body without Content-Length (chunked) is counted as it streams in and cut at the cap; a body that does not
arrive in time is a 408. The concurrency slot is taken when the body is complete, so clients that upload slowly
never lock out the others; a full house (of complete requests) is a 429 before the body is read, or when it
ends. A request still running when the shutdown grace ends gets a 503 in the error envelope.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import busy_headers, error_response

OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
HEAVY_PREFIX = "/v1/audio/"  # POSTs here hold an upload or a synthesis: they count against the limit
BODY_BYTES_PER_SECOND = 64 * 1024  # each 64 KiB that arrives adds a second to the body timeout


@dataclass
class Gate:
    """Requests whose body has arrived and whose work (a transcription, a synthesis) is under way; per app."""

    limit: int
    active: int = 0

    @property
    def full(self) -> bool:
        return self.active >= self.limit

    def try_enter(self) -> bool:
        if self.full:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


WS_KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def presented_keys(scope: Scope) -> Iterable[str]:
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            yield token.strip()
    api_key = _header(scope, b"x-api-key")
    if api_key:
        yield api_key.strip()
    if scope.get("type") == "websocket":
        # Browsers cannot set headers on a WebSocket handshake; OpenAI's clients send the key as a subprotocol.
        for protocol in (_header(scope, b"sec-websocket-protocol") or "").split(","):
            prefix, _, key = protocol.strip().partition(WS_KEY_PROTOCOL_PREFIX)
            if not prefix and key:
                yield key


def key_matches(scope: Scope, api_key: str) -> bool:
    expected = api_key.encode()
    # compare_digest on every presented key: the time taken says nothing about how much of a key was right.
    return any(hmac.compare_digest(given.encode(), expected) for given in presented_keys(scope))


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        gate: Gate,
        body_timeout: float | None = None,
        open_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.open_paths = OPEN_PATHS | frozenset(open_paths)  # more paths served without the key (the console)
        self.max_body_bytes = max_body_bytes
        self.gate = gate
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if self.api_key and not key_matches(scope, self.api_key):
                await refuse_websocket(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refuse(scope)
        if refusal is not None:
            status, message, code, headers = refusal
            _note(scope, code)
            await error_response(status, message, code, headers=headers)(scope, receive, send)
            return
        heavy = scope["method"] == "POST" and scope["path"].startswith(HEAVY_PREFIX)
        if heavy and self.gate.full:  # requests with complete bodies fill it: refuse before reading this one
            _note(scope, "server_busy")
            await error_response(429, self.busy(), "server_busy", headers=busy_headers())(scope, receive, send)
            return
        await Exchange(self, scope, receive, send, heavy).run()

    def _refuse(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        needs_key = self.api_key and scope["method"] != "OPTIONS" and scope["path"] not in self.open_paths
        if needs_key and not key_matches(scope, self.api_key or ""):
            message = "missing or wrong API key (send Authorization: Bearer KEY or X-API-Key: KEY)"
            return 401, message, "invalid_api_key", {"WWW-Authenticate": "Bearer"}
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, "invalid Content-Length header", "bad_request", {}
            if int(length) > self.max_body_bytes:
                return 413, self.too_large(), "request_too_large", {}
        return None

    def busy(self) -> str:
        return f"the server is busy ({self.gate.limit} requests in progress); try again shortly"

    def too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_body_bytes / 1048576:.1f} MiB"


class Exchange:
    """One HTTP request: its body counted and timed as it arrives, a slot of the gate taken once it is complete.

    A client that trickles its body holds a connection (until the body timeout), never a slot: the slot is for
    the work that follows the body. After the body, receive() is left alone (routes watch it for disconnects).
    """

    def __init__(self, guard: RequestGuard, scope: Scope, receive: Receive, send: Send, heavy: bool) -> None:
        self.guard = guard
        self.scope = scope
        self._receive = receive
        self._send = send
        self.heavy = heavy
        self.received = 0
        self.body_complete = False
        self.holds_slot = False
        self.started = False  # the app's response has begun
        self.abort: Abort | None = None
        self.since = asyncio.get_running_loop().time()

    async def run(self) -> None:
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except Abort:
            pass
        except asyncio.CancelledError:
            if self.started or not _cancelled_here():
                raise
            # uvicorn cancels what still runs when the shutdown grace ends: answer that, not a plain-text 500.
            _uncancel()
            shutting_down = Abort(503, "the server is shutting down; try again shortly", "shutting_down", RETRY_LATER)
            await self._answer(shutting_down)
        except Exception:
            if self.abort is None:
                raise
        finally:
            if self.holds_slot:
                self.guard.gate.leave()
        if self.abort is not None and not self.started:
            await self._answer(self.abort)

    async def receive(self) -> Message:
        if self.body_complete:
            return await self._receive()
        message = await self._next_body_message()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.guard.max_body_bytes:
                raise self._fail(Abort(413, self.guard.too_large(), "request_too_large"))
            if not message.get("more_body", False):
                self.body_complete = True
                self._enter()
        return message

    async def _next_body_message(self) -> Message:
        timeout = self.guard.body_timeout
        if timeout is None:
            return await self._receive()
        # The body has `timeout` seconds, plus one second per BODY_BYTES_PER_SECOND bytes that arrived: a slow
        # but real upload gets through, a trickle of a byte now and then does not.
        deadline = self.since + timeout + self.received / BODY_BYTES_PER_SECOND
        try:
            async with asyncio.timeout_at(deadline):
                return await self._receive()
        except TimeoutError:
            message = f"the request body did not arrive within {timeout:g} s (--http-body-timeout)"
            raise self._fail(Abort(408, message, "request_timeout", CLOSE)) from None

    def _enter(self) -> None:
        if not self.heavy:
            return
        if not self.guard.gate.try_enter():  # filled while this body was arriving
            raise self._fail(Abort(429, self.guard.busy(), "server_busy", busy_headers()))
        self.holds_slot = True

    def _fail(self, abort: Abort) -> Abort:
        self.abort = abort
        return abort

    async def send(self, message: Message) -> None:
        if self.abort is not None:
            return  # the app's own answer to the aborted body (often a 400) is dropped for ours
        self.started = True
        await self._send(message)

    async def _answer(self, abort: Abort) -> None:
        _note(self.scope, abort.code)
        response = error_response(abort.status, abort.message, abort.code, headers=abort.headers)
        self.started = True
        await response(self.scope, self._receive, self._send)


class Abort(Exception):
    """Raised from receive() to stop a request; the guard answers it in place of the app."""

    def __init__(self, status: int, message: str, code: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


# The rest of the body is never read: the connection cannot carry another request.
CLOSE: Mapping[str, str] = MappingProxyType({"Connection": "close"})
RETRY_LATER: Mapping[str, str] = MappingProxyType({**busy_headers(), **CLOSE})


def _cancelled_here() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then close with 1008 and the reason: a browser sees that code; a refused handshake is only 1006.

    A browser also fails a handshake that picks none of the subprotocols it offered, so one of them is picked.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": chosen_subprotocol(scope), "headers": []})
    await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})


def chosen_subprotocol(scope: Scope, preferred: str | None = None) -> str | None:
    """The subprotocol to accept a WebSocket with: a browser fails the handshake when the answer names none of
    those it offered. `preferred` when offered, else the first that is not the API key, else the key's own
    (echoing the client's key to itself discloses nothing); None when none was offered."""
    offered = [str(p) for p in scope.get("subprotocols") or ()]
    if preferred is not None and preferred in offered:
        return preferred
    plain = [p for p in offered if not p.startswith(WS_KEY_PROTOCOL_PREFIX)]
    candidates = plain or offered
    return candidates[0] if candidates else None


def _note(scope: Scope, code: str) -> None:
    scope.setdefault("state", {})["error_code"] = code
