"""WakeWords: the wake word engine every front end shares (Wyoming handler now, HTTP/WebSocket later).

- `catalog` / `models()`: what is offered (names unique across engines, see catalog.py).
- `open_stream(names, fmt)`: a `WakeStream` — feed it audio, iterate its detections, `finish()` at
  audio-stop, `close()` when the client goes. Models load through the ModelManager and stay held while
  a stream uses them.
- `subscribe()`: every detection of every stream, for SSE/WebSocket publishing; a slow subscriber
  loses its oldest events, it never slows detection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType

from ..audio import AudioFormat
from ..runtime.manager import ModelManager
from ..settings import WakeSettings
from .catalog import Engine, Sensitivity, WakeCatalog, WakeModelInfo, parse_model_options, sensitivity
from .microwakeword import MicroDetector, MicroModel, MicroStream
from .openwakeword import CHUNK, OwwClassifier, OwwDetector, OwwFeatures, OwwStream
from .speaker_gate import SpeakerGate
from .stream import WakeDetection, WakeEvent, WakeStream
from .tflite import TfLite
from .trigger import SilenceGate, Trigger
from .worker import Report, WakeShard, WorkerStream

_LOGGER = logging.getLogger(__name__)

FEATURES_KEY = "wake/openwakeword/features"
MAX_WINDOWS_PER_ROUND = 12  # ~1 s of one stream's audio per worker round


@dataclass(frozen=True)
class WakeStats:
    streams: int
    threads: int
    busy_seconds: float  # worker CPU time spent in rounds (wall time while busy)
    rounds: int
    outputs_computed: int  # openWakeWord outputs computed / skipped as silent, since start
    outputs_skipped: int


class WakeSubscription:
    """An async iterator of WakeEvents; bounded, drops the oldest when the reader falls behind."""

    def __init__(self, owner: WakeWords, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[WakeEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: WakeEvent) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> WakeSubscription:
        return self

    async def __anext__(self) -> WakeEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        if self._owner.unsubscribe(self):
            with contextlib.suppress(asyncio.QueueEmpty):
                while self._queue.full():
                    self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def __aenter__(self) -> WakeSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class WakeWords:
    """The engine facade; one per process, passed explicitly."""

    def __init__(
        self,
        settings: WakeSettings,
        manager: ModelManager,
        catalog: WakeCatalog | None = None,
        installed_dirs: tuple[Path, ...] = (),
        speakers: SpeakerGate | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        # Where the model catalog installs wake words (`<data dir>/wake`): looked at once they exist.
        self.installed_dirs = installed_dirs
        # Names who said each wake word (enrolled voices) and, with --wake-speakers, lets only those voices wake.
        self.speakers = speakers
        self.catalog = catalog or self._discover()
        self.sensitivities = self._sensitivities(self.catalog)
        self.threads = settings.threads or max(1, min(2, os.cpu_count() or 1))
        self._shards: list[WakeShard] = []
        self._subscribers: set[WakeSubscription] = set()
        self._streams: dict[int, WakeStream] = {}
        self._ids = itertools.count(1)
        self._tflite: TfLite | None = None
        self._tflite_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished_outputs = [0, 0]  # computed, skipped by streams already closed

    # ---- catalog ----------------------------------------------------------------------------

    def _discover(self) -> WakeCatalog:
        """The operator's folders first, then the installed ones that exist, then the built-in models."""
        installed = tuple(folder for folder in self.installed_dirs if folder.is_dir())
        folders = (*self.settings.custom_model_dirs, *installed)
        return WakeCatalog.discover(dataclasses.replace(self.settings, custom_model_dirs=folders))

    def _sensitivities(self, catalog: WakeCatalog) -> dict[str, Sensitivity]:
        options = parse_model_options(self.settings.model_options, catalog)
        return {name: sensitivity(info, self.settings, options.get(name)) for name, info in catalog.models.items()}

    async def rescan(self) -> None:
        """Build the catalog again (the model catalog installed or removed a wake word); streams already open
        keep the models they have."""
        catalog = await asyncio.to_thread(self._discover)
        self.sensitivities = self._sensitivities(catalog)
        self.catalog = catalog

    @property
    def default_model(self) -> WakeModelInfo:
        return self.catalog.models[self.catalog.default]

    def models(self) -> list[WakeModelInfo]:
        return list(self.catalog.models.values())

    def resolve(self, names: Sequence[str] | None) -> list[tuple[str, WakeModelInfo]]:
        """Raises ModelNotFoundError (listing the known names) for an unknown one."""
        return self.catalog.resolve(names)

    # ---- loading ----------------------------------------------------------------------------

    def _lib(self) -> TfLite:
        with self._tflite_lock:
            if self._tflite is None:
                self._tflite = TfLite()
            return self._tflite

    def _load_features(self) -> OwwFeatures:
        import pyopen_wakeword

        return OwwFeatures(self._lib(), Path(pyopen_wakeword.__file__).parent / "models", self._purge)

    def _load_model(self, info: WakeModelInfo) -> OwwClassifier | MicroModel:
        if info.engine is Engine.OPENWAKEWORD:
            return OwwClassifier(self._lib(), info.model_path, self._purge)
        return MicroModel(self._lib(), info)

    def _purge(self) -> None:
        for shard in self._shards:
            shard.purge()

    async def preload(self, names: Sequence[str] | None = None) -> None:
        """Load the feature models and the given (default: the default) wake word models now."""
        requested = self.resolve(names)
        if any(info.engine is Engine.OPENWAKEWORD for _, info in requested):
            await self.manager.get(FEATURES_KEY, self._load_features)
        for _, info in requested:
            await self.manager.get(info.key, partial(self._load_model, info))

    # ---- streams ----------------------------------------------------------------------------

    async def open_stream(self, names: Sequence[str] | None, fmt: AudioFormat, peer: str = "") -> WakeStream:
        requested = self.resolve(names)
        sensitivities = self.sensitivities  # of the same catalog as `requested`, whatever a rescan does meanwhile
        fmt.validate()
        self._loop = asyncio.get_running_loop()
        holds = contextlib.AsyncExitStack()
        try:
            oww: list[OwwDetector] = []
            micro: list[MicroDetector] = []
            features: OwwFeatures | None = None
            for label, info in requested:
                model = await holds.enter_async_context(self.manager.use(info.key, partial(self._load_model, info)))
                trigger = Trigger(sensitivities[info.name])
                if isinstance(model, OwwClassifier):
                    if features is None:
                        features = await holds.enter_async_context(self.manager.use(FEATURES_KEY, self._load_features))
                    oww.append(OwwDetector(label, model, trigger))
                else:
                    micro.append(MicroDetector(label, model, trigger))
            gate = SilenceGate() if self.settings.silence_gate else None
            oww_stream = OwwStream(features, oww, gate, MAX_WINDOWS_PER_ROUND) if features and oww else None
            micro_stream = MicroStream(micro) if micro else None
            keep = self.speakers is not None  # the last seconds of audio, for the speaker of a detection
            worker = WorkerStream(fmt, oww_stream, micro_stream, MAX_WINDOWS_PER_ROUND * CHUNK, keep_phrases=keep)
        except BaseException:
            await holds.aclose()
            raise
        shard = self._shard()
        stream = WakeStream(self, next(self._ids), peer, requested, fmt, worker, shard, holds, self.speakers)
        self._streams[id(worker)] = stream
        shard.add(worker)
        return stream

    def _shard(self) -> WakeShard:
        if len(self._shards) < self.threads:
            self._shards.append(WakeShard(f"minerva-wake-{len(self._shards)}", self._deliver))
        return min(self._shards, key=lambda shard: shard.load)

    def _deliver(self, reports: list[Report]) -> None:
        """Called on a worker thread: hand the round's results to the event loop."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._on_reports, reports)

    def _on_reports(self, reports: list[Report]) -> None:
        for report in reports:
            stream = self._streams.get(id(report.stream))
            if stream is not None:
                stream._on_report(report)

    def _forget(self, stream: WakeStream) -> None:
        if self._streams.pop(id(stream._worker), None) is not None and stream._worker.oww is not None:
            self._finished_outputs[0] += stream._worker.oww.computed
            self._finished_outputs[1] += stream._worker.oww.skipped

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def stats(self) -> WakeStats:
        workers = [s._worker.oww for s in self._streams.values() if s._worker.oww is not None]
        computed, skipped = self._finished_outputs
        return WakeStats(
            streams=len(self._streams),
            threads=len(self._shards),
            busy_seconds=sum(shard.busy_seconds for shard in self._shards),
            rounds=sum(shard.rounds for shard in self._shards),
            outputs_computed=computed + sum(w.computed for w in workers),
            outputs_skipped=skipped + sum(w.skipped for w in workers),
        )

    # ---- broadcast --------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 256) -> WakeSubscription:
        """Every detection from now on (use as `async with wake.subscribe() as events: async for e in events`)."""
        subscription = WakeSubscription(self, maxsize)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: WakeSubscription) -> bool:
        if subscription in self._subscribers:
            self._subscribers.discard(subscription)
            return True
        return False

    def _broadcast(self, event: WakeEvent) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(event)

    # ---- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        for stream in list(self._streams.values()):
            await stream.close()
        for subscription in list(self._subscribers):
            subscription.close()
        shards, self._shards = self._shards, []
        for shard in shards:
            await asyncio.to_thread(shard.stop)

    async def __aenter__(self) -> WakeWords:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = [
    "Engine",
    "WakeDetection",
    "WakeEvent",
    "WakeModelInfo",
    "WakeStats",
    "WakeStream",
    "WakeSubscription",
    "WakeWords",
]
