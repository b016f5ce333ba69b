"""Wyoming text-to-speech: plain `synthesize`, and Home Assistant's streaming sequence.

Streaming: synthesize-start, synthesize-chunk* (token deltas), synthesize (the whole text again, ignored),
synthesize-stop. Audio for each piece goes out as soon as it is synthesized: one audio-start (one format for
the whole answer), the chunks, one audio-stop, then synthesize-stopped, always last, also after an error.

The read loop never waits for synthesis: each request runs in a task (requests on one connection answer in
order), so `describe` is answered at once and a disconnect cancels the work of that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Attribution, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from ..audio import AudioFormat
from ..errors import BadRequestError, MinervaError
from ..tts.piper import TextTooLongError, TextToSpeech
from .info import PIPER_ATTRIBUTION, VERSION, DescribingHandler
from .server import EventSink, error_event

_LOGGER = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 1024
MAX_PENDING_REQUESTS = 4  # per connection: requests waiting for an earlier answer to finish
VOICES_ATTRIBUTION = Attribution(name="rhasspy", url="https://github.com/rhasspy/piper")
_END = object()  # the client's synthesize-stop
_OVERFLOW = object()  # the streamed text passed --max-text-chars


def build_info(tts: TextToSpeech) -> Info:
    voices = [
        TtsVoice(
            name=voice.name,
            description=voice.description,
            attribution=VOICES_ATTRIBUTION,
            installed=True,
            version=None,
            languages=list(voice.languages),
            speakers=[TtsVoiceSpeaker(name=name) for name in voice.speakers] or None,
        )
        for voice in tts.voices()
    ]
    program = TtsProgram(
        name="piper",
        description="Piper neural text-to-speech (wyoming-minerva)",
        attribution=PIPER_ATTRIBUTION,
        installed=True,
        version=VERSION,
        voices=voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


@dataclass(frozen=True)
class VoiceRequest:
    name: str | None = None
    language: str | None = None
    speaker: str | None = None

    @staticmethod
    def from_data(data: dict[str, Any]) -> VoiceRequest:
        """From an event already checked by handlers/events.py (voice is an object of strings)."""
        voice = data.get("voice") or {}
        return VoiceRequest(**{key: voice.get(key) or None for key in ("name", "language", "speaker")})


@dataclass
class StreamInput:
    """The text of one streaming request (replaced whole by the next synthesize-start)."""

    voice: VoiceRequest
    text_format: str | None
    max_chars: int
    refused: BadRequestError | None = None  # synthesize-start itself was invalid: answer the error, keep no text
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    chars: int = 0
    closed: bool = False  # no more text is kept
    ended: bool = False  # the answer has read the client's synthesize-stop

    def put(self, text: str) -> None:
        if self.closed or self.refused is not None:
            return
        self.chars += len(text)
        if self.chars > self.max_chars:
            self.queue.put_nowait(_OVERFLOW)  # keep nothing more: memory stays bounded
            self.closed = True
        else:
            self.queue.put_nowait(text)

    def close(self) -> None:
        self.queue.put_nowait(_END)
        self.closed = True

    async def deltas(self) -> AsyncIterator[str]:
        while (item := await self.queue.get()) is not _END:
            if item is _OVERFLOW:
                self.closed = True
                raise TextTooLongError(
                    f"the streamed text passed the limit of {self.max_chars} characters (--max-text-chars)"
                )
            assert isinstance(item, str)
            yield item
        self.ended = True

    async def drain(self) -> None:
        """Wait for the client's synthesize-stop, dropping the text (after an error)."""
        while not self.ended:
            self.ended = await self.queue.get() is _END


class AudioOut:
    """Writes one answer's audio: a single audio-start with the answer's format, chunks, a single audio-stop."""

    def __init__(self, sink: EventSink, samples_per_chunk: int = SAMPLES_PER_CHUNK) -> None:
        self.sink = sink
        self.samples_per_chunk = samples_per_chunk
        self.format: AudioFormat | None = None
        self.samples = 0
        self.pieces = 0
        self.started = time.monotonic()
        self.first_audio: float | None = None

    async def write(self, fmt: AudioFormat, pcm: bytes) -> None:
        self.pieces += 1
        if self.format is None:
            self.format = fmt
            self.first_audio = time.monotonic()
            await self.sink.send(AudioStart(rate=fmt.rate, width=fmt.width, channels=fmt.channels, timestamp=0).event())
        step = self.samples_per_chunk * fmt.width * fmt.channels
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step]
            chunk = AudioChunk(rate=fmt.rate, width=fmt.width, channels=fmt.channels, audio=piece, timestamp=self._ms())
            await self.sink.send(chunk.event())
            self.samples += len(piece) // (fmt.width * fmt.channels)

    async def stop(self) -> None:
        if self.format is not None:
            await self.sink.send(AudioStop(timestamp=self._ms()).event())

    def _ms(self) -> int:
        return 0 if self.format is None else self.samples * 1000 // self.format.rate

    def log(self, peer: str, kind: str, voice: str) -> None:
        if self.format is None:
            return
        first = ((self.first_audio or self.started) - self.started) * 1000
        _LOGGER.info(
            "TTS %s: %s, voice %s, %d pieces, %.2f s audio, first audio %.0f ms after the request, total %.0f ms",
            peer,
            kind,
            voice,
            self.pieces,
            self.samples / self.format.rate,
            first,
            (time.monotonic() - self.started) * 1000,
        )


class TtsHandler(DescribingHandler):
    def __init__(self, sink: EventSink, tts: TextToSpeech, samples_per_chunk: int = SAMPLES_PER_CHUNK) -> None:
        super().__init__(sink, lambda: build_info(tts))
        self.tts = tts
        self.samples_per_chunk = samples_per_chunk
        self._stream: StreamInput | None = None  # between synthesize-start and synthesize-stop
        self._tasks: list[asyncio.Task[None]] = []  # answers in progress or waiting, oldest first

    async def handle_service_event(self, event: Event) -> bool:
        if SynthesizeStart.is_type(event.type):
            voice = VoiceRequest.from_data(event.data)
            await self._open_stream(StreamInput(voice, event.data.get("text_format"), self.tts.settings.max_text_chars))
        elif SynthesizeChunk.is_type(event.type):
            if self._stream is None:
                raise BadRequestError("synthesize-chunk outside a synthesize-start … synthesize-stop stream")
            self._stream.put(event.data.get("text", ""))
        elif Synthesize.is_type(event.type):
            if self._stream is not None:
                return True  # the whole text again, sent for old servers: the chunks already have it
            text, voice = event.data.get("text", ""), VoiceRequest.from_data(event.data)
            text_format = event.data.get("text_format")
            self._spawn(lambda: self._answer_plain(text, voice, text_format))
        elif SynthesizeStop.is_type(event.type):
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        else:
            _LOGGER.debug("Ignoring %s from %s", event.type, self.sink.peer)
        return True

    async def handle_invalid_event(self, event: Event, err: BadRequestError) -> bool:
        if not SynthesizeStart.is_type(event.type):
            raise err
        # The stream is refused, but its chunks and synthesize-stop still come: the answer is the error, then
        # synthesize-stopped (always last), and the chunks in between are dropped, not each an error of their own.
        await self._open_stream(StreamInput(VoiceRequest(), None, 0, refused=err))
        return True

    async def _open_stream(self, stream: StreamInput) -> None:
        if self._stream is not None:
            self._stream.close()  # a new stream ends one the client left open
        self._stream = stream
        try:
            self._spawn(lambda: self._answer_stream(stream))
        except MinervaError as err:  # too many answers waiting: refuse this stream, still end it properly
            stream.closed = True
            await self._report(err)
            await self.sink.send(SynthesizeStopped().event())

    @property
    def busy(self) -> bool:
        return self._stream is not None or any(not task.done() for task in self._tasks)

    async def disconnect(self) -> None:
        """The client is gone: stop synthesizing for it."""
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ---- answers ---------------------------------------------------------------------------

    def _spawn(self, answer: Callable[[], Awaitable[None]]) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        if len(self._tasks) > MAX_PENDING_REQUESTS:
            raise BadRequestError("too many synthesis requests waiting on this connection")
        previous = self._tasks[-1] if self._tasks else None
        self._tasks.append(asyncio.create_task(self._in_order(previous, answer)))

    @staticmethod
    async def _in_order(previous: asyncio.Task[None] | None, answer: Callable[[], Awaitable[None]]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        await answer()

    async def _answer_plain(self, text: str, voice: VoiceRequest, text_format: str | None) -> None:
        out = AudioOut(self.sink, self.samples_per_chunk)
        try:
            speech = await self.tts.open(voice.name, language=voice.language, speaker=voice.speaker)
            async for pcm in speech.stream(text, text_format):
                await out.write(speech.format, pcm)
            out.log(self.sink.peer, "plain", speech.voice.name)
        except Exception as err:
            await self._report(err)
        await out.stop()

    async def _answer_stream(self, stream: StreamInput) -> None:
        out = AudioOut(self.sink, self.samples_per_chunk)
        voice = stream.voice
        try:
            if stream.refused is not None:
                raise stream.refused
            speech = await self.tts.open(voice.name, language=voice.language, speaker=voice.speaker)
            async for pcm in speech.stream(stream.deltas(), stream.text_format):
                await out.write(speech.format, pcm)
            out.log(self.sink.peer, "stream", speech.voice.name)
        except Exception as err:
            await self._report(err)
            await stream.drain()
        await out.stop()
        await self.sink.send(SynthesizeStopped().event())

    async def _report(self, err: Exception) -> None:
        if isinstance(err, MinervaError):
            _LOGGER.warning("tts %s: %s (%s)", self.sink.peer, err, err.code)
        else:
            _LOGGER.exception("tts %s: synthesis failed", self.sink.peer)
        await self.sink.send(error_event(err))
