"""WakeStream: one audio stream of the wake word engine (audio-start … audio-stop or disconnect) and its detections.

Made by `WakeWords.open_stream` (service.py); feed it audio, iterate its detections, `finish()` at audio-stop,
`close()` when the client goes. Its worker side (worker.py) runs on a wake worker thread; results come back to the
event loop as Reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..audio import AudioFormat
from ..errors import MinervaError
from .catalog import Engine, WakeModelInfo
from .speaker_gate import SpeakerGate
from .trigger import SAMPLE_RATE
from .worker import FINISH, Report, WakeShard, WorkerStream

if TYPE_CHECKING:
    from .service import WakeWords

_LOGGER = logging.getLogger(__name__)

MAX_BACKLOG_SECONDS = 2.0  # a client further ahead than this waits (TCP backpressure)
MAX_BACKLOG_BYTES = 1024 * 1024  # and never more input than this per stream, whatever format it declares


@dataclass(frozen=True)
class WakeDetection:
    name: str  # as the client asked for it
    model: str  # the catalog name
    engine: Engine
    timestamp_ms: int  # audio time since audio-start
    probability: float
    speaker: str | None = None  # the enrolled voice that said it (speaker gate), if any
    speaker_score: float | None = None


@dataclass(frozen=True)
class WakeEvent:
    """A detection as broadcast to subscribers."""

    detection: WakeDetection
    stream_id: int
    peer: str
    wall_time: float


_END = object()


class WakeStream:
    """One audio stream (audio-start … audio-stop or disconnect) and its detections."""

    def __init__(
        self,
        owner: WakeWords,
        stream_id: int,
        peer: str,
        requested: list[tuple[str, WakeModelInfo]],
        fmt: AudioFormat,
        worker: WorkerStream,
        shard: WakeShard,
        holds: contextlib.AsyncExitStack,
        gate: SpeakerGate | None = None,
    ) -> None:
        self.id = stream_id
        self.peer = peer
        self.requested = requested
        self._owner = owner
        self._worker = worker
        self._shard = shard
        self._holds = holds
        self._engines = dict(requested)
        self._queue: asyncio.Queue[WakeDetection | MinervaError | object] = asyncio.Queue()
        self._queued_bytes = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._finished = asyncio.Event()
        self._fmt = fmt  # of audio-start: chunks without their own format are in it
        self._max_backlog = min(int(MAX_BACKLOG_SECONDS * fmt.bytes_per_second()), MAX_BACKLOG_BYTES)
        self.detections = 0
        self.error: MinervaError | None = None
        self.closed = False
        # With a speaker gate, detections wait here (in order, with what follows them) while their phrase is
        # identified; one task works through them.
        self._gate = gate
        self._outbox: deque[tuple[WakeDetection | MinervaError | object, np.ndarray | None]] = deque()
        self._vetting: asyncio.Task[None] | None = None

    @property
    def format(self) -> AudioFormat:
        """The format of audio-start (chunks without their own fields are in it)."""
        return self._fmt

    @property
    def detected(self) -> bool:
        return self.detections > 0

    async def feed(self, pcm: bytes, fmt: AudioFormat | None = None) -> None:
        """Queue audio for the worker; waits while this stream is far ahead of its processing."""
        if self.closed or self._finished.is_set() or self.error is not None:
            return  # a failed stream already reported its error on the detection iterator
        self._worker.inbox.append((fmt or self._fmt, pcm))
        self._queued_bytes += len(pcm)
        self._shard.poke(self._worker)
        if self._queued_bytes > self._max_backlog:
            self._drained.clear()
            await self._drained.wait()

    async def finish(self) -> bool:
        """Audio-stop: process what is queued (with a little silence after it); True when anything was detected."""
        if not self.closed and not self._finished.is_set():
            self._worker.inbox.append(FINISH)
            self._shard.poke(self._worker)
            await self._finished.wait()
        return self.detected

    def __aiter__(self) -> AsyncIterator[WakeDetection]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WakeDetection]:
        """Detections as they happen; ends after finish() or close(); raises the stream's error."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, MinervaError):
                raise item
            assert isinstance(item, WakeDetection)
            yield item

    async def close(self) -> None:
        """Stop and free the stream; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._worker.closed = True
        self._shard.poke(self._worker)
        self._drained.set()
        self._finished.set()
        self._queue.put_nowait(_END)
        self._owner._forget(self)
        if self._vetting is not None:
            self._vetting.cancel()
        await self._holds.aclose()

    # ---- from the worker (on the loop) --------------------------------------------------------

    def _on_report(self, report: Report) -> None:
        if self.closed:
            return
        self._queued_bytes -= report.consumed
        if self._queued_bytes <= self._max_backlog // 2:
            self._drained.set()
        phrases = report.phrases or [None] * len(report.hits)
        for hit, phrase in zip(report.hits, phrases, strict=True):
            info = self._engines[hit.label]
            detection = WakeDetection(
                name=hit.label,
                model=info.name,
                engine=info.engine,
                timestamp_ms=hit.sample * 1000 // SAMPLE_RATE,
                probability=hit.probability,
            )
            self._emit(detection, phrase)
        if report.error is not None:
            self.error = report.error
            self._drained.set()
            self._finished.set()
            self._emit(report.error)
        if report.finished:
            self._emit(_END)

    def _emit(self, item: WakeDetection | MinervaError | object, phrase: np.ndarray | None = None) -> None:
        """Deliver in order; a detection passes the speaker gate first when the gate has anything to do."""
        if not self._outbox and not (self._gate is not None and isinstance(item, WakeDetection) and self._gate.active):
            self._deliver(item)
            return
        self._outbox.append((item, phrase))
        if self._vetting is None:
            self._vetting = asyncio.create_task(self._vet_outbox(), name=f"wake-speaker-{self.id}")

    async def _vet_outbox(self) -> None:
        try:
            while self._outbox and not self.closed:
                item, phrase = self._outbox[0]
                if isinstance(item, WakeDetection) and self._gate is not None:
                    item = await self._vet(self._gate, item, phrase)
                self._outbox.popleft()
                if item is not None and not self.closed:
                    self._deliver(item)
        finally:
            self._vetting = None

    async def _vet(
        self, gate: SpeakerGate, detection: WakeDetection, phrase: np.ndarray | None
    ) -> WakeDetection | None:
        started = time.perf_counter()
        try:
            verdict = await gate.check(phrase)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # identification failed: a gate that lets only some voices through stays shut
            _LOGGER.warning("Wake word %s of stream %d: speaker check failed: %s", detection.name, self.id, err)
            return None if gate.allowed else detection
        took = (time.perf_counter() - started) * 1000
        if not verdict.allowed:
            _LOGGER.info(
                "Wake word %s at %d ms of stream %d (%s) not delivered: not said by a --wake-speakers voice "
                "(checked in %.0f ms)",
                detection.name,
                detection.timestamp_ms,
                self.id,
                self.peer,
                took,
            )
            return None
        _LOGGER.debug("Wake word %s of stream %d: speaker %s (%.0f ms)", detection.name, self.id, verdict.speaker, took)
        return dataclasses.replace(detection, speaker=verdict.speaker, speaker_score=verdict.score)

    def _deliver(self, item: WakeDetection | MinervaError | object) -> None:
        if isinstance(item, WakeDetection):
            self.detections += 1
            _LOGGER.info(
                "Wake word %s detected at %d ms of stream %d (%s), probability %.2f",
                item.name,
                item.timestamp_ms,
                self.id,
                self.peer,
                item.probability,
            )
            self._owner._broadcast(WakeEvent(item, self.id, self.peer, time.time()))
        elif item is _END:
            self._finished.set()
        self._queue.put_nowait(item)
