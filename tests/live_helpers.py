"""Helpers for live transcription tests: a fake Transcriber with a gate, feeding audio at a pace, collecting events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np
from conftest import ENGLISH, local_stt

from wyoming_minerva.runtime.manager import CancelToken, ModelManager
from wyoming_minerva.settings import AsrSettings, RealtimeSettings
from wyoming_minerva.stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from wyoming_minerva.stt.live.hub import LiveEvent, LiveHub, LiveSession

CHUNK_SECONDS = 0.064


class FakeTranscriber:
    """The Transcriber protocol without a model: says how long the audio was; can be held shut by `gate`."""

    name = "fake"
    languages = ("en",)
    is_multilingual = False

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[float] = []  # audio seconds of each call
        self.running = 0
        self.max_running = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        seconds = len(audio) / 16000
        with self._lock:
            self.calls.append(seconds)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.gate.wait(30)
            time.sleep(self.delay)
        finally:
            with self._lock:
                self.running -= 1
        return TranscriptionInfo("en", seconds), iter([Segment(0.0, seconds, f" {seconds:.2f} seconds of audio")])


async def fake_hub(
    fake: FakeTranscriber, workers: int = 2, manager_queue: int = 8, **settings: object
) -> tuple[LiveHub, ModelManager]:
    """A LiveHub on a fresh manager whose speech-to-text model is `fake`; `settings` are RealtimeSettings."""
    manager = ModelManager(workers=workers, queue_size=manager_queue)
    stt = local_stt(manager, AsrSettings(models=ENGLISH))
    await manager.get(stt.key, lambda: fake)  # the fake takes the model's place in the manager
    return LiveHub(stt, RealtimeSettings(**settings)), manager  # type: ignore[arg-type]


def chunks(pcm: bytes, rate: int, seconds: float = CHUNK_SECONDS) -> list[bytes]:
    step = int(rate * seconds) * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def feed(session: LiveSession, pcm: bytes, rate: int, pace: float | None = None) -> None:
    """Feed 16-bit mono PCM; `pace` = times faster than real time (None: all at once, no awaits)."""
    start = time.perf_counter()
    sent = 0.0
    for chunk in chunks(pcm, rate):
        session.feed(chunk)
        sent += len(chunk) / 2 / rate
        if pace is not None:
            await asyncio.sleep(max(0.0, start + sent / pace - time.perf_counter()))


async def collect(session: LiveSession, timeout: float = 30.0) -> list[LiveEvent]:
    """Every event until the session's events end (after finish() and the last final)."""
    events: list[LiveEvent] = []
    async with asyncio.timeout(timeout):
        async for event in session.events():
            events.append(event)
    return events


class EventLog:
    """Collects a session's events in the background; `wait()` until enough of one kind arrived."""

    def __init__(self, session: LiveSession) -> None:
        self.events: list[LiveEvent] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(session))

    async def _run(self, session: LiveSession) -> None:
        async for event in session.events():
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    async def wait(self, kind: type, count: int = 1, timeout: float = 30.0) -> list[LiveEvent]:
        async with asyncio.timeout(timeout):
            while len(found := [e for e in self.events if isinstance(e, kind)]) < count:
                assert not self._task.done(), f"events ended with {len(found)} {kind.__name__}"
                self._changed.clear()
                await self._changed.wait()
        return found

    async def done(self, timeout: float = 30.0) -> list[LiveEvent]:
        async with asyncio.timeout(timeout):
            await self._task
        return self.events
