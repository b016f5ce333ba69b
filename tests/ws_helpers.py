"""Helpers for the WebSocket/SSE tests: the real app under uvicorn on 127.0.0.1 (port 0), websockets clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from conftest import ENGLISH, local_stt
from websockets.asyncio.client import ClientConnection, connect

from wyoming_minerva.http.app import create_app
from wyoming_minerva.http.server import HttpServer
from wyoming_minerva.http.stream_common import StreamContext
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, HttpSettings, RealtimeSettings, Settings
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.tts.piper import TextToSpeech
from wyoming_minerva.wake.service import WakeWords

CHUNK_SECONDS = 0.064
TASK_PREFIXES = (
    "live-",
    "stt-decode",
    "realtime-",
    "stt-stream-",
    "tts-stream-",
    "wake-detect-",
    "wake-events-",
)  # ours, by name


@dataclass
class Engines:
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    wake: WakeWords | None = None
    extras: dict[str, object] = field(default_factory=dict)


@dataclass
class Served:
    port: int
    streams: StreamContext

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def served(
    engines: Engines,
    manager: ModelManager,
    realtime: RealtimeSettings | None = None,
    api_key: str | None = None,
) -> AsyncIterator[Served]:
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, api_key=api_key), realtime=realtime or RealtimeSettings()
    )
    app = create_app(settings, engines, manager)
    server = HttpServer(app, "127.0.0.1", 0, grace_seconds=1)
    await server.start()
    try:
        yield Served(server.port, app.state.minerva_streams)
    finally:
        await server.stop()


def resample(pcm: bytes, rate: int, to: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    out = soxr.resample(samples, rate, to)
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


async def send_paced(
    ws: ClientConnection, pcm: bytes, rate: int, frame_bytes: int = 2, pace: float | None = 1.0, wrap: Any = None
) -> None:
    """Send PCM in 64 ms messages, `pace` times real time (None: as fast as possible); `wrap` makes a message."""
    step = int(rate * CHUNK_SECONDS) * frame_bytes
    start = time.perf_counter()
    sent = 0.0
    for offset in range(0, len(pcm), step):
        chunk = pcm[offset : offset + step]
        await ws.send(wrap(chunk) if wrap else chunk)
        sent += len(chunk) / frame_bytes / rate
        if pace:
            await asyncio.sleep(max(0.0, start + sent / pace - time.perf_counter()))


async def receive_json(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    """The next text message (binary messages are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                data = json.loads(message)
                assert isinstance(data, dict)
                return data


async def receive_until(ws: ClientConnection, kind: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every JSON message up to and including the first of type `kind`."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            out.append(await receive_json(ws, timeout))
            if out[-1].get("type") == kind:
                return out


async def no_live_tasks(timeout: float = 5.0) -> list[str]:
    """Names of live-session tasks still running after `timeout` (should be none)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIXES)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


__all__ = ["Engines", "Served", "connect", "no_live_tasks", "receive_json", "receive_until", "resample", "send_paced"]


@asynccontextmanager
async def live_stt_served(api_key: str | None = None) -> AsyncIterator[Served]:
    """The app with only the bundled Whisper model (preloaded) and at most 4 live sessions."""
    manager = ModelManager(workers=2, queue_size=8)
    stt = local_stt(manager, AsrSettings(cpu_threads=2, models=ENGLISH))
    await stt.preload()
    try:
        async with served(Engines(stt=stt), manager, RealtimeSettings(max_sessions=4), api_key=api_key) as srv:
            yield srv
    finally:
        await manager.close()
