"""`WS /v1/audio/speech/stream`: text in (whole, or as an LLM writes it), PCM16 out sentence by sentence.

Client: `{"type": "speak", "text", "voice", "speed", "speaker", "language", "sample_rate"}` speaks a whole text;
`{"type": "text", "text": DELTA, ...options}` appends to the open request (the first one opens it, with its
options), `{"type": "end"}` (or `"flush"`) says its text is complete; `{"type": "cancel"}` stops the request
being spoken (and any queued after it) at once. Requests run one after another on one socket.

Server, per request: `{"type": "start", "request", "sample_rate", "sample_width": 2, "channels": 1, "voice"}`
before its first audio, binary PCM16LE frames for each sentence as soon as it is synthesized, then
`{"type": "done", "request", "audio_ms"}` — or `{"type": "cancelled", "request"}`, or
`{"type": "error", "request", "code", "message"}` (a bad voice or speed is an error before any audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket

from ..errors import BadRequestError, MinervaError
from ..tts.piper import Speech, SpeechOptions, TextTooLongError, TextToSpeech
from ..tts.voices import UnknownSpeakerError, UnknownVoiceError
from .names import choose_voice
from .stream_common import (
    CLOSE_UNAVAILABLE,
    Channel,
    Disconnected,
    InvalidDataError,
    StreamContext,
    UnknownMessageError,
    accept,
    int_field,
    parse_message,
    str_field,
    stream_context,
)

_LOGGER = logging.getLogger(__name__)

router = APIRouter()

MESSAGE_SAMPLES = 8192  # audio per binary message (a long sentence is split)
MAX_QUEUED_REQUESTS = 16


class TooManyRequestsError(BadRequestError):
    code = "buffer_overflow"


@dataclass(eq=False)
class SpeakRequest:
    number: int
    options: dict[str, Any]
    received: float  # time.perf_counter() of the message that opened it
    text: str | None = None  # a whole text, or None: deltas follow
    chars: int = 0
    ended: bool = False
    deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    async def stream(self) -> AsyncIterator[str]:
        while (delta := await self.deltas.get()) is not None:
            yield delta


def _speed(options: dict[str, Any]) -> float | None:
    speed = options.get("speed")
    if speed is None:
        return None
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
        raise BadRequestError(f"'speed' must be a number from 0.25 to 4.0, got {speed!r}")
    return float(speed)


class TtsConnection:
    def __init__(self, channel: Channel, tts: TextToSpeech, ctx: StreamContext) -> None:
        self.channel = channel
        self.tts = tts
        self.ctx = ctx
        self._numbers = 0
        self._queue: asyncio.Queue[SpeakRequest] = asyncio.Queue()
        self._open: SpeakRequest | None = None  # the request taking text deltas
        self._current: SpeakRequest | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._work(), name=f"tts-stream-{channel.peer}")

    async def serve(self) -> None:
        try:
            while True:
                try:
                    await self._handle(await self.channel.receive())
                except InvalidDataError as err:
                    await self.channel.close_invalid(err, {"type": "error", "code": err.code, "message": str(err)})
                except MinervaError as err:
                    await self.channel.send_json({"type": "error", "code": err.code, "message": str(err)})
        except Disconnected:
            pass
        finally:
            tasks = [t for t in (self._worker, self._speaking) if t is not None]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            raise BadRequestError('binary messages are not accepted here: send {"type": "text", ...}')
        data = parse_message(message)
        kind = data["type"]
        if kind == "speak":
            text = data.get("text")
            if not isinstance(text, str):
                raise BadRequestError("'speak' needs a 'text' string")
            self.tts.check_text(text)
            self._end_open()
            self._enqueue(SpeakRequest(self._next(), data, time.perf_counter(), text=text))
        elif kind == "text":
            delta = data.get("text")
            if not isinstance(delta, str):
                raise BadRequestError("'text' needs a 'text' string")
            if self._open is None:
                self._open = SpeakRequest(self._next(), data, time.perf_counter())
                self._enqueue(self._open)
            self._add(self._open, delta)
        elif kind in ("end", "flush"):
            if self._open is None:
                raise BadRequestError(f"'{kind}' without text to end")
            self._end_open()
        elif kind == "cancel":
            await self._cancel()
        else:
            raise UnknownMessageError(f"unknown message type {kind!r} (speak, text, end, cancel)")

    def _next(self) -> int:
        self._numbers += 1
        return self._numbers

    def _enqueue(self, request: SpeakRequest) -> None:
        if self._queue.qsize() >= MAX_QUEUED_REQUESTS:
            raise TooManyRequestsError(f"{MAX_QUEUED_REQUESTS} requests already wait; the new one was dropped")
        self._queue.put_nowait(request)

    def _add(self, request: SpeakRequest, delta: str) -> None:
        request.chars += len(delta)
        limit = self.tts.settings.max_text_chars
        if request.chars > limit:
            raise TextTooLongError(f"the text passed the limit of {limit} characters (--max-text-chars)")
        request.deltas.put_nowait(delta)

    def _end_open(self) -> None:
        if self._open is not None:
            self._open.ended = True
            self._open.deltas.put_nowait(None)
            self._open = None

    async def _cancel(self) -> None:
        """Stop what is being spoken and drop what waits; each gets `cancelled`."""
        self._end_open()
        dropped = []
        while not self._queue.empty():
            dropped.append(self._queue.get_nowait())
        current, speaking = self._current, self._speaking
        if current is not None and speaking is not None and not speaking.done():
            speaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaking
            dropped.insert(0, current)
        for request in dropped:
            await self.channel.send_json({"type": "cancelled", "request": request.number})

    async def _work(self) -> None:
        while True:
            request = await self._queue.get()
            self._current = request
            self._speaking = asyncio.create_task(self._speak(request), name=f"tts-stream-request-{request.number}")
            await asyncio.wait({self._speaking})  # a cancel stops the request, not this loop
            self._current = self._speaking = None

    async def _speak(self, request: SpeakRequest) -> None:
        try:
            speech = await self._open_voice(request.options)
            rate = speech.format.rate
            await self.channel.send_json(
                {
                    "type": "start",
                    "request": request.number,
                    "sample_rate": rate,
                    "sample_width": 2,
                    "channels": 1,
                    "voice": speech.voice.name,
                }
            )
            samples = 0
            source = request.text if request.text is not None else request.stream()
            async for pcm in speech.stream(source):
                if samples == 0:
                    self.ctx.tts_first_audio.observe(time.perf_counter() - request.received)
                samples += len(pcm) // 2
                for offset in range(0, len(pcm), MESSAGE_SAMPLES * 2):
                    await self.channel.send_bytes(pcm[offset : offset + MESSAGE_SAMPLES * 2])
            done = {"type": "done", "request": request.number, "audio_ms": samples * 1000 // rate}
            await self.channel.send_json(done)
        except MinervaError as err:
            code = "voice_not_found" if isinstance(err, UnknownVoiceError | UnknownSpeakerError) else err.code
            failed = {"type": "error", "request": request.number, "code": code, "message": str(err)}
            await self.channel.send_json(failed)
        except Exception:
            _LOGGER.exception("TTS stream %s: request %d failed", self.channel.peer, request.number)
            await self.channel.send_json(
                {"type": "error", "request": request.number, "code": "internal_error", "message": "see the server log"}
            )

    async def _open_voice(self, options: dict[str, Any]) -> Speech:
        choice = choose_voice(str_field(options, "voice", 500), self.ctx.http.http.voice_map)
        speed = _speed(options)
        speaker = options.get("speaker", choice.speaker)
        if speaker is not None and not isinstance(speaker, str | int):
            raise BadRequestError("'speaker' must be a name or an id")
        return await self.tts.open(
            choice.voice,
            language=str_field(options, "language", 16),
            speaker=speaker,
            options=SpeechOptions(
                length_scale=1.0 / speed if speed else None,
                sample_rate=int_field(options, "sample_rate", None, 8000, 48000),
            ),
        )


@router.websocket("/v1/audio/speech/stream")
async def speech_stream(websocket: WebSocket) -> None:
    """Streaming text-to-speech: text (or text deltas) in, PCM16 frames per sentence out."""
    ctx = stream_context(websocket)
    await accept(websocket)
    channel = Channel(websocket, ctx.settings.max_frame_bytes)
    tts = ctx.http.engines.tts
    if tts is None:
        last = {"type": "error", "code": "service_unavailable", "message": "text-to-speech is not available"}
        await channel.close(CLOSE_UNAVAILABLE, "no text-to-speech", last)
        return
    await TtsConnection(channel, tts, ctx).serve()
