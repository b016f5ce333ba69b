"""Helpers for ASR tests: a real ASR server on loopback and the Home Assistant client sequence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conftest import ENGLISH, chunks, local_stt, send_chunks, wyoming_server
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from wyoming_minerva.handlers.asr import AsrHandler
from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings
from wyoming_minerva.stt.service import SpeechToText


@asynccontextmanager
async def asr_server(
    manager: ModelManager | None = None, settings: AsrSettings | None = None
) -> AsyncIterator[tuple[WyomingServer, SpeechToText]]:
    own_manager = manager is None
    manager = manager or ModelManager(workers=2, queue_size=8)
    settings = settings or AsrSettings(models=ENGLISH)
    stt = local_stt(manager, settings)
    async with wyoming_server("asr", lambda sink: AsrHandler(sink, stt, settings)) as server:
        try:
            yield server, stt
        finally:
            if own_manager:
                await manager.close()


async def send_audio(
    client: AsyncTcpClient, pcm: bytes, rate: int, width: int = 2, channels: int = 1, pace: float = 0.0
) -> None:
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    await send_chunks(client, pcm, rate, width, channels, pace)


async def read_until(client: AsyncTcpClient, event_type: str, timeout: float = 30.0) -> list[Event]:
    """Every event up to and including the first of `event_type`."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed before {event_type}; got {[e.type for e in events]}"
            events.append(event)
            if event.type == event_type:
                return events


async def transcribe(
    client: AsyncTcpClient, pcm: bytes, rate: int, width: int = 2, channels: int = 1, language: str | None = "en"
) -> list[Event]:
    """Home Assistant's sequence: transcribe, audio-start, chunks, audio-stop; events up to transcript-stop."""
    await client.write_event(Transcribe(language=language).event())
    await send_audio(client, pcm, rate, width, channels)
    await client.write_event(AudioStop().event())
    return await read_until(client, "transcript-stop")


def transcript_text(events: list[Event]) -> str:
    texts = [e.data["text"] for e in events if e.type == "transcript"]
    assert len(texts) == 1, [e.type for e in events]
    return str(texts[0])


__all__ = ["asr_server", "chunks", "read_until", "send_audio", "send_chunks", "transcribe", "transcript_text"]
