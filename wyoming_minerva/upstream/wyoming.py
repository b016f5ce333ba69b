"""A client for a Wyoming speech server (another minerva, wyoming-faster-whisper, wyoming-piper…).

It speaks Home Assistant's sequences, one connection per request, as those servers expect:
- ASR: `transcribe {language, transcript_terms}`, `audio-start {16000, 2, 1}`, chunks, `audio-stop`; read until
  `transcript` (transcript-start/-chunk/-stop are skipped; the hotwords go as Wyoming 1.10's vocabulary terms);
- TTS: `synthesize {text, voice {name, speaker}}`, then `audio-start`, chunks, `audio-stop`; chunks are yielded
  as they arrive, each with its format;
- `describe` → `info` for the health probe.
Events are read with the server's bounded reader (handlers/server.py): a broken upstream costs no unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, async_write_event
from wyoming.info import Artifact, Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from ..audio import AudioFormat, float_to_pcm16, format_from_event
from ..errors import AudioFormatError, ProtocolError
from ..handlers.server import MAX_HEADER_BYTES, read_event
from ..stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from .config import UpstreamSettings
from .errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from .urls import UpstreamUrl

SAMPLE_RATE = 16000
CHUNK_BYTES = SAMPLE_RATE * 2  # 1 s per audio-chunk: per-event costs dominate; far under any payload limit
# Codes of a Wyoming `error` that are the server's trouble (minerva's codes) and count against its health. Every
# other code (bad_request, model_not_found for a voice a client named, …) is about the request: a client must never
# be able to take an upstream out of rotation.
UNAVAILABLE_CODES = frozenset(
    {"queue_full", "service_unavailable", "model_load_failed", "inference_failed", "internal_error"}
)


class Connection:
    """One request's connection: events out, bounded events in, every wait limited."""

    def __init__(self, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self.label = label
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def send(self, event: Event) -> None:
        try:
            await async_write_event(event, self.writer)
        except (ConnectionError, RuntimeError) as err:
            raise UpstreamUnavailable(self.label, f"the connection broke while sending ({err})") from err

    async def receive(self) -> Event:
        """The next event; `error` events become UpstreamErrors."""
        try:
            async with asyncio.timeout(self.timeout):
                event = await read_event(self.reader)
        except TimeoutError as err:
            raise UpstreamUnavailable(self.label, f"no answer within {self.timeout:g} s") from err
        except ProtocolError as err:
            raise UpstreamUnavailable(self.label, f"sent a malformed event: {err}") from err
        except ConnectionError as err:
            raise UpstreamUnavailable(self.label, f"the connection broke mid-answer ({err})") from err
        if event is None:
            raise UpstreamUnavailable(self.label, "closed the connection mid-answer")
        if event.type == "error":
            raise error_from_event(self.label, event)
        return event


def error_from_event(label: str, event: Event) -> UpstreamError:
    code = str(event.data.get("code") or "")
    text = str(event.data.get("text") or "no message")[:200]
    message = f"answered error {code or '(no code)'}: {text}"
    if code in UNAVAILABLE_CODES or not code:
        return UpstreamUnavailable(label, message)
    return UpstreamRejected(label, message)


class WyomingUpstream:
    """Implements TranscribingUpstream and SpeakingUpstream; `expect` ("asr"/"tts") is what the probe checks."""

    def __init__(self, url: UpstreamUrl, settings: UpstreamSettings, expect: str | None = None) -> None:
        self.url = url
        self.label = url.label
        self.expect = expect
        self.connect_timeout = settings.probe_timeout
        self.timeout = settings.timeout
        self.probe_timeout = settings.probe_timeout

    def __repr__(self) -> str:
        return f"WyomingUpstream({self.label})"

    async def aclose(self) -> None:
        return None  # one connection per request: nothing stays open

    @asynccontextmanager
    async def _connect(self, timeout: float) -> AsyncIterator[Connection]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.url.host, self.url.port, limit=MAX_HEADER_BYTES)
        except TimeoutError as err:
            raise UpstreamUnavailable(self.label, f"cannot connect within {self.connect_timeout:g} s") from err
        except OSError as err:
            raise UpstreamUnavailable(self.label, f"cannot connect ({err.strerror or err})") from err
        try:
            yield Connection(self.label, reader, writer, timeout)
        finally:
            writer.close()
            with contextlib.suppress(OSError, RuntimeError):
                await writer.wait_closed()

    # ---- health ------------------------------------------------------------------------------

    async def describe(self, timeout: float | None = None) -> Info:
        async with self._connect(timeout or self.probe_timeout) as conn:
            await conn.send(Describe().event())
            while True:
                event = await conn.receive()
                if Info.is_type(event.type):
                    try:
                        return Info.from_event(event)
                    except (KeyError, TypeError, ValueError) as err:
                        raise UpstreamUnavailable(self.label, f"sent an info event we cannot read: {err}") from err

    async def probe(self) -> None:
        """`describe` answered in time, with an installed program of the expected kind."""
        try:
            async with asyncio.timeout(self.probe_timeout):
                info = await self.describe(self.probe_timeout)
        except TimeoutError as err:
            raise UpstreamUnavailable(self.label, f"no answer to describe within {self.probe_timeout:g} s") from err
        programs: Sequence[Artifact] = (info.asr if self.expect == "asr" else info.tts) or []
        if self.expect and not any(program.installed for program in programs):
            raise UpstreamUnavailable(self.label, f"offers no installed {self.expect} program")

    # ---- speech-to-text ----------------------------------------------------------------------

    async def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> tuple[TranscriptionInfo, list[Segment]]:
        """One utterance; the text of the first `transcript` (the one Home Assistant would take)."""
        duration = len(audio) / SAMPLE_RATE
        pcm = float_to_pcm16(audio)
        async with self._connect(self.timeout) as conn:
            terms = [term.strip() for term in (options.hotwords or "").split(",") if term.strip()]
            await conn.send(Transcribe(language=options.language, transcript_terms=terms or None).event())
            await conn.send(AudioStart(rate=SAMPLE_RATE, width=2, channels=1).event())
            for offset in range(0, len(pcm), CHUNK_BYTES):
                chunk = AudioChunk(rate=SAMPLE_RATE, width=2, channels=1, audio=pcm[offset : offset + CHUNK_BYTES])
                await conn.send(chunk.event())
            await conn.send(AudioStop().event())
            while True:
                event = await conn.receive()
                if Transcript.is_type(event.type):
                    transcript = Transcript.from_event(event)
                    break
        language = options.language or transcript.language or ""
        text = transcript.text or ""
        segments = [Segment(0.0, duration, text)] if text.strip() else []
        return TranscriptionInfo(language, duration), segments

    # ---- text-to-speech ----------------------------------------------------------------------

    async def synthesize(
        self, text: str, voice: str | None = None, *, speaker: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        """PCM chunks as they arrive (Wyoming has no speed: `speed` is ignored); ends at `audio-stop`."""
        request = Synthesize(text=text, voice=SynthesizeVoice(name=voice, speaker=speaker) if voice else None)
        fmt: AudioFormat | None = None
        sent = 0
        async with self._connect(self.timeout) as conn:
            await conn.send(request.event())
            while True:
                event = await conn.receive()
                if AudioStart.is_type(event.type) and fmt is None:
                    fmt = self._format(event)
                elif AudioChunk.is_type(event.type) and event.payload:
                    chunk_format = fmt or self._format(event)
                    fmt = chunk_format
                    if chunk_format.width != 2:
                        raise UpstreamUnavailable(self.label, f"sent {chunk_format.width * 8}-bit audio, not 16-bit")
                    sent += len(event.payload)
                    yield chunk_format, event.payload
                elif AudioStop.is_type(event.type):
                    break
        if sent == 0:  # not counted against its health: a piece of punctuation may well have no sound
            raise UpstreamRejected(self.label, "answered with no audio")

    def _format(self, event: Event) -> AudioFormat:
        try:
            return format_from_event(event.data)
        except AudioFormatError as err:
            raise UpstreamUnavailable(self.label, f"sent audio in a format we cannot use: {err}") from err
