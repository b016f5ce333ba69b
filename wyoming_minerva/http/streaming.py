"""Server-sent events as OpenAI sends them: `data: {json}` blocks, an error as `data: {"error": {...}}`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ..errors import MinervaError
from .errors import envelope, from_minerva

SSE_MEDIA_TYPE = "text/event-stream"
# No proxy buffering, no caching: each event must reach the client when it is made.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_error(err: BaseException) -> bytes:
    """An error after the stream began (the status is already 200): the SDKs raise it as an APIError."""
    if isinstance(err, MinervaError):
        api = from_minerva(err)
        body = envelope(api.status, api.message, api.code, api.param)
    else:
        body = envelope(500, "internal error: see the server log", "internal_error")
    return sse({"type": "error", **body})


async def aclose(items: AsyncIterator[Any]) -> None:
    """Close an async generator now (its finally blocks stop the model work), not when it is collected."""
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()
