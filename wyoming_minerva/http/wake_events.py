"""Wake word detections, pushed as they happen: SSE and WebSocket feeds, and detection over WebSocket.

- `GET /v1/wake/events` (Server-Sent Events) and `WS /v1/wake/events`: every detection of every wake stream
  (Wyoming clients and WS /v1/wake/detect) as `{"type": "wake.detection", "name", "model", "engine",
  "timestamp" (ms of that stream's audio), "probability", "client", "stream_id", "time" (unix seconds)}`.
  A feed that falls behind loses its oldest events (detection never waits for it); SSE sends a comment every
  15 s so proxies keep the stream open.
- `WS /v1/wake/detect`: `{"type": "start", "rate", "width", "channels", "names"}`, then PCM as binary messages;
  the server answers `{"type": "ready", "models"}`, then `{"type": "detection", "name", "timestamp", ...}` as
  they happen; `{"type": "stop"}` → `{"type": "done", "detected"}` and the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import StreamingResponse

from ..audio import AudioFormat
from ..errors import BadRequestError, MinervaError
from ..wake.service import WakeDetection, WakeEvent, WakeStream, WakeWords
from .errors import ApiError
from .stream_common import (
    CLOSE_NORMAL,
    CLOSE_UNAVAILABLE,
    Channel,
    Disconnected,
    InvalidDataError,
    NotStartedError,
    UnknownMessageError,
    accept,
    int_field,
    parse_message,
    stream_context,
)
from .streaming import SSE_HEADERS, SSE_MEDIA_TYPE, sse

_LOGGER = logging.getLogger(__name__)

router = APIRouter()

KEEPALIVE_SECONDS = 15.0
SUBSCRIBER_BACKLOG = 256


def detection_message(detection: WakeDetection) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": detection.name,
        "model": detection.model,
        "engine": str(detection.engine.value),
        "timestamp": detection.timestamp_ms,
        "probability": round(float(detection.probability), 4),
    }
    if detection.speaker is not None:  # an enrolled voice said it (docs/speakers.md)
        message.update(speaker=detection.speaker, speaker_score=detection.speaker_score)
    return message


def event_message(event: WakeEvent) -> dict[str, Any]:
    return {
        "type": "wake.detection",
        **detection_message(event.detection),
        "client": event.peer,
        "stream_id": event.stream_id,
        "time": round(event.wall_time, 3),
    }


def _wake_or_503(request: Request) -> WakeWords:
    wake = stream_context(request).wake
    if wake is None:
        raise ApiError(503, "wake word detection is not available on this server", "service_unavailable")
    return wake


@router.get(
    "/v1/wake/events",
    summary="Wake word detections as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {SSE_MEDIA_TYPE: {}}, "description": "`data: {wake.detection}` events"}},
)
async def wake_events_sse(request: Request) -> StreamingResponse:
    wake = _wake_or_503(request)
    subscription = wake.subscribe(SUBSCRIBER_BACKLOG)  # subscribed now: nothing after this response is missed

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            iterator = aiter(subscription)
            while True:
                try:
                    event = await asyncio.wait_for(anext(iterator), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                except StopAsyncIteration:
                    return
                yield sse(event_message(event))
        finally:
            subscription.close()

    return StreamingResponse(events(), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


@router.websocket("/v1/wake/events")
async def wake_events_ws(websocket: WebSocket) -> None:
    """Every wake word detection, one JSON message each."""
    opened = await _open(websocket)
    if opened is None:
        return
    channel, wake = opened
    async with wake.subscribe(SUBSCRIBER_BACKLOG) as subscription:

        async def forward() -> None:
            async for event in subscription:
                await channel.send_json(event_message(event))

        forwarding = asyncio.create_task(forward(), name=f"wake-events-{channel.peer}")
        try:
            while True:  # the client only listens; anything it sends is ignored, a close ends the feed
                with contextlib.suppress(MinervaError):
                    await channel.receive()
        except Disconnected:
            pass
        finally:
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarding


# ---- detection over WebSocket ------------------------------------------------------------------


class DetectConnection:
    def __init__(self, channel: Channel, wake: WakeWords) -> None:
        self.channel = channel
        self.wake = wake
        self.stream: WakeStream | None = None
        self._forward: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            while True:
                try:
                    if not await self._handle(await self.channel.receive()):
                        return
                except InvalidDataError as err:
                    await self.channel.close_invalid(err, {"type": "error", "code": err.code, "message": str(err)})
                except MinervaError as err:
                    await self.channel.send_json({"type": "error", "code": err.code, "message": str(err)})
        except Disconnected:
            pass
        finally:
            await self._end()

    async def _handle(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            if self.stream is None:
                raise NotStartedError('audio before the start message: send {"type": "start", ...} first')
            await self.stream.feed(message)  # waits while the detector is behind: TCP backpressure
            return True
        data = parse_message(message)
        kind = data["type"]
        if kind == "start":
            await self._start(data)
        elif kind == "stop":
            if self.stream is None:
                raise NotStartedError("'stop' before the start message")
            detected = await self.stream.finish()
            if self._forward is not None:
                await self._forward  # every detection is sent before done
            await self.channel.send_json({"type": "done", "detected": detected})
            await self.channel.close(CLOSE_NORMAL)
            return False
        else:
            raise UnknownMessageError(f"unknown message type {kind!r} (start, stop)")
        return True

    async def _start(self, data: dict[str, Any]) -> None:
        if self.stream is not None:
            raise BadRequestError("the stream has started already")
        names = data.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise BadRequestError("'names' must be a list of wake word names")
        fmt = AudioFormat(
            rate=int_field(data, "rate", 16000, 8000, 192_000) or 16000,
            width=int_field(data, "width", 2, 1, 4) or 2,
            channels=int_field(data, "channels", 1, 1, 8) or 1,
        )
        stream = await self.wake.open_stream(names or None, fmt, peer=self.channel.peer)
        self.stream = stream
        self._forward = asyncio.create_task(self._send_detections(stream), name=f"wake-detect-{stream.id}")
        await self.channel.send_json({"type": "ready", "models": [label for label, _ in stream.requested]})

    async def _send_detections(self, stream: WakeStream) -> None:
        try:
            async for detection in stream:
                await self.channel.send_json({"type": "detection", **detection_message(detection)})
        except MinervaError as err:
            await self.channel.send_json({"type": "error", "code": err.code, "message": str(err)})

    async def _end(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.close()
        if self._forward is not None and not self._forward.done():
            self._forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forward


@router.websocket("/v1/wake/detect")
async def wake_detect(websocket: WebSocket) -> None:
    """Stream microphone PCM, receive wake word detections."""
    opened = await _open(websocket)
    if opened is None:
        return
    channel, wake = opened
    await DetectConnection(channel, wake).serve()


async def _open(websocket: WebSocket) -> tuple[Channel, WakeWords] | None:
    """Accept the socket; None (after a clear close) when this process runs no wake word engine."""
    ctx = stream_context(websocket)
    await accept(websocket)
    channel = Channel(websocket, ctx.settings.max_frame_bytes)
    if ctx.wake is None:
        last = {"type": "error", "code": "service_unavailable", "message": "wake word detection is not available"}
        await channel.close(CLOSE_UNAVAILABLE, "no wake word", last)
        return None
    return channel, ctx.wake
