"""The gate in front of every route, before a byte of the body is read: API key, body size, concurrency.

Pure ASGI on purpose: FastAPI parses a multipart body before dependencies run, so checks made there would
come after reading a 25 MB upload. Here a wrong key is a 401, a Content-Length over the cap a 413, and a full
house a 429 at once; a body without Content-Length (chunked) is counted as it streams in and cut at the cap.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import busy_headers, error_response

OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
HEAVY_PREFIX = "/v1/audio/"  # POSTs here hold an upload or a synthesis: they count against the limit


class BodyTooLarge(Exception):
    """Raised from receive() when a streamed body passes the cap (the guard answers 413 instead)."""


@dataclass
class Gate:
    """Requests holding uploads or syntheses right now; per app (never module state)."""

    limit: int
    active: int = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
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
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, gate: Gate) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if self.api_key and not key_matches(scope, self.api_key):
                await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
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
        if heavy and not self.gate.try_enter():
            _note(scope, "server_busy")
            message = f"the server is busy ({self.gate.limit} requests in progress); try again shortly"
            await error_response(429, message, "server_busy", headers=busy_headers())(scope, receive, send)
            return
        try:
            await self._bounded(scope, receive, send)
        finally:
            if heavy:
                self.gate.leave()

    def _refuse(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        needs_key = self.api_key and scope["method"] != "OPTIONS" and scope["path"] not in OPEN_PATHS
        if needs_key and not key_matches(scope, self.api_key or ""):
            message = "missing or wrong API key (send Authorization: Bearer KEY or X-API-Key: KEY)"
            return 401, message, "invalid_api_key", {"WWW-Authenticate": "Bearer"}
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, "invalid Content-Length header", "bad_request", {}
            if int(length) > self.max_body_bytes:
                return 413, self._too_large(), "request_too_large", {}
        return None

    def _too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_body_bytes / 1048576:.1f} MiB"

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with the body counted as it arrives; past the cap its answer is replaced by a 413."""
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to the aborted body (often a 400) is dropped for our 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            _note(scope, "request_too_large")
            await error_response(413, self._too_large(), "request_too_large")(scope, receive, send)


def _note(scope: Scope, code: str) -> None:
    scope.setdefault("state", {})["error_code"] = code
