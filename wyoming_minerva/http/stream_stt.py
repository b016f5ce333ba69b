"""`WS /v1/audio/transcriptions/stream`: live speech-to-text for scripts and embedded clients.

Client: one `{"type": "start", "rate", "width", "channels", "language", "prompt", "vad", "interim",
"silence_ms", "vad_aggressiveness"}` (all optional), then raw PCM (little-endian) as binary messages or as
`{"type": "audio", "audio": BASE64}`; `{"type": "finalize"}` ends the current utterance now; `{"type": "stop"}`
ends the stream: the last finals come, then `{"type": "done"}` and the socket closes.

Server: `{"type": "session", "session_id", ...}`, `speech_started` / `speech_stopped` {utterance, audio_ms},
`transcript` {is_final: false, utterance, text} while someone speaks (each replaces the previous), one
`transcript` {is_final: true, utterance, text, language, audio_ms, latency_ms} per utterance, and
`error` {code, message[, utterance]}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from ..audio import AudioFormat
from ..errors import MinervaError
from ..settings import RealtimeSettings
from ..stt.live.hub import (
    Failed,
    Final,
    Interim,
    LiveEvent,
    LiveHub,
    LiveSession,
    Notice,
    SessionLimitError,
    SessionOptions,
    SpeechStarted,
    SpeechStopped,
)
from .stream_common import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAVAILABLE,
    Channel,
    Disconnected,
    InvalidDataError,
    NotStartedError,
    UnknownMessageError,
    accept,
    bool_field,
    decode_base64,
    int_field,
    parse_message,
    str_field,
    stream_context,
)

_LOGGER = logging.getLogger(__name__)

router = APIRouter()


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}


def start_options(data: dict[str, Any]) -> SessionOptions:
    """The start message as session options (BadRequestError / AudioFormatError naming the field)."""
    fmt = AudioFormat(
        rate=int_field(data, "rate", 16000, 8000, 192_000) or 16000,
        width=int_field(data, "width", 2, 1, 4) or 2,
        channels=int_field(data, "channels", 1, 1, 8) or 1,
    )
    fmt.validate()
    return SessionOptions(
        format=fmt,
        language=str_field(data, "language", 16),
        prompt=str_field(data, "prompt"),
        vad=bool_field(data, "vad", True),
        interim=bool_field(data, "interim", True),
        silence_ms=int_field(data, "silence_ms", None, 90, 10_000),
        vad_aggressiveness=int_field(data, "vad_aggressiveness", None, 0, 3),
    )


class StreamConnection:
    def __init__(self, channel: Channel, hub: LiveHub, settings: RealtimeSettings) -> None:
        self.channel = channel
        self.hub = hub
        self.settings = settings
        self.session: LiveSession | None = None
        self._writer: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            while self.session is None or not self._writer_done():
                try:
                    message = await self.channel.receive()
                    if not await self._handle(message):
                        break
                except InvalidDataError as err:
                    await self.channel.close_invalid(err, error(err.code, str(err)))
                except MinervaError as err:
                    await self.channel.send_json(error(err.code, str(err)))
        except Disconnected:
            pass
        finally:
            if self.session is not None:
                await self.session.close()
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer

    def _writer_done(self) -> bool:
        return self._writer is not None and self._writer.done()

    async def _handle(self, message: str | bytes) -> bool:
        """False when the connection is over (session_limit)."""
        if isinstance(message, bytes):
            if self.session is None:
                raise NotStartedError('audio before the start message: send {"type": "start", ...} first')
            self.session.feed(message)
            return True
        data = parse_message(message)
        kind = data["type"]
        if kind == "start":
            return await self._start(data)
        if self.session is None:
            raise NotStartedError(f"{kind!r} before the start message")
        if kind == "audio":
            self.session.feed(decode_base64(data.get("audio")))
        elif kind == "finalize":
            self.session.commit()  # nothing spoken: nothing to finalize (no error)
        elif kind == "stop":
            self.session.finish()  # the writer sends the last finals, then done, then closes
        else:
            raise UnknownMessageError(f"unknown message type {kind!r} (start, audio, finalize, stop)")
        return True

    async def _start(self, data: dict[str, Any]) -> bool:
        if self.session is not None:
            raise UnknownMessageError("the session has started already")
        options = start_options(data)
        try:
            self.session = self.hub.open(options, peer=self.channel.peer)
        except SessionLimitError as err:
            await self.channel.close(CLOSE_TRY_AGAIN, err.code, error(err.code, str(err)))
            return False
        fmt = options.format
        await self.channel.send_json(
            {
                "type": "session",
                "session_id": self.session.id,
                "model": self.hub.stt.model_name,
                "rate": fmt.rate,
                "width": fmt.width,
                "channels": fmt.channels,
                "vad": options.vad,
                "interim": options.interim and self.settings.interim_ms > 0,
                "silence_ms": options.silence_ms or self.hub.silence_ms,
                "max_frame_bytes": self.settings.max_frame_bytes,
                "max_utterance_seconds": self.settings.max_utterance_seconds,
            }
        )
        self._writer = asyncio.create_task(self._write(self.session), name=f"stt-stream-writer-{self.session.id}")
        return True

    async def _write(self, session: LiveSession) -> None:
        async for event in session.events():
            message = translate(event)
            if message is not None:
                await self.channel.send_json(message)
        if session.error is not None:
            err = session.error
            await self.channel.close(CLOSE_POLICY, err.code, error(err.code, str(err)))
        elif not session.closed:
            await self.channel.send_json({"type": "done"})
            await self.channel.close(CLOSE_NORMAL)


def translate(event: LiveEvent) -> dict[str, Any] | None:
    if isinstance(event, SpeechStarted):
        return {"type": "speech_started", "utterance": event.utterance, "audio_ms": event.audio_ms}
    if isinstance(event, SpeechStopped):
        return {"type": "speech_stopped", "utterance": event.utterance, "audio_ms": event.audio_ms}
    if isinstance(event, Interim):
        return {"type": "transcript", "is_final": False, "utterance": event.utterance, "text": event.text}
    if isinstance(event, Final):
        return {
            "type": "transcript",
            "is_final": True,
            "utterance": event.utterance,
            "text": event.text,
            "language": event.language,
            "audio_ms": round(event.audio_seconds * 1000),
            "latency_ms": round(event.latency_ms),
        }
    if isinstance(event, Failed):
        return error(event.code, event.message, utterance=event.utterance)
    if isinstance(event, Notice):
        return error(event.code, event.message)
    return None  # Committed: implied by the final


@router.websocket("/v1/audio/transcriptions/stream")
async def transcription_stream(websocket: WebSocket) -> None:
    """Live speech-to-text: a start message, PCM frames, interim and final transcripts."""
    ctx = stream_context(websocket)
    await accept(websocket)
    channel = Channel(websocket, ctx.settings.max_frame_bytes)
    if ctx.hub is None:
        last = error("service_unavailable", "speech-to-text is not available on this server")
        await channel.close(CLOSE_UNAVAILABLE, "no speech-to-text", last)
        return
    await StreamConnection(channel, ctx.hub, ctx.settings).serve()
