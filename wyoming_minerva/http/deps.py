"""What routes share: the per-app context (settings, engines, manager, metrics) and request helpers.

Routers get the context through `Depends(context)` (it lives on app.state, never in a module global), so the
WebSocket routes of a later module can use the very same engines and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..runtime.manager import ModelManager
from ..settings import HttpSettings, Settings
from ..speakers.service import SpeakerService
from ..stt.service import SpeechToText
from ..tts.piper import TextToSpeech
from ..upstream import UpstreamPool
from .errors import CLIENT_CLOSED, ApiError
from .guard import Gate
from .metrics import Metrics

T = TypeVar("T")


class EngineSet(Protocol):
    """The engines the HTTP API serves (app.Engines); None = that engine is not available."""

    stt: SpeechToText | None
    tts: TextToSpeech | None
    speakers: SpeakerService | None  # diarization and enrolled voices (speakers_routes, diarized transcriptions)


@dataclass
class HttpContext:
    settings: Settings
    http: HttpSettings
    engines: EngineSet
    manager: ModelManager
    metrics: Metrics
    gate: Gate
    created: int = 0  # unix time the app was made: the `created` of its model cards

    def stt(self) -> SpeechToText:
        if self.engines.stt is None:
            raise ApiError(503, "speech-to-text is not available on this server", "service_unavailable")
        return self.engines.stt

    def tts(self) -> TextToSpeech:
        if self.engines.tts is None:
            raise ApiError(503, "text-to-speech is not available on this server", "service_unavailable")
        return self.engines.tts


def upstream_pools(engines: EngineSet) -> list[UpstreamPool[Any]]:
    """The upstream pools of the engines (--stt-upstream, --tts-upstream), for /ready and /metrics."""
    pools = (engines.stt.upstream if engines.stt else None, engines.tts.upstream if engines.tts else None)
    return [pool for pool in pools if pool is not None]


def context(request: Request) -> HttpContext:
    ctx = request.app.state.minerva
    assert isinstance(ctx, HttpContext)
    return ctx


Ctx = Annotated[HttpContext, Depends(context)]


# Declared for the OpenAPI docs ("Authorize" in /docs); the key is enforced by guard.RequestGuard, which runs
# before the body is read. Both schemes are alternatives.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (when --api-key is set)")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY (when --api-key is set)")


async def api_key_schemes(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    key: Annotated[str | None, Security(_header_key)],
) -> None:
    return None


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it when the client disconnects first (its model work stops with it).

    Only for routes that have read their whole body: after that, receive() yields only http.disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ApiError(CLIENT_CLOSED, "the client closed the connection", "client_closed")
    finally:
        for pending in (task, watcher):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
