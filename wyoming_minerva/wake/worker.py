"""The wake word worker threads: each owns a set of streams and processes them in rounds.

Why dedicated threads and not the ModelManager's executor: wake streams never end and need an answer
within a fraction of a second, all day. Queued behind multi-second Whisper or Piper jobs on the shared
executor they would miss that; as one job per chunk per stream they would flood its bounded queue. A
worker instead takes every stream that has audio, runs the shared models once per round for all of them
(batched), and goes back to sleep: one wake-up per ~80 ms however many streams there are. TensorFlow
Lite releases the GIL while it computes, so `threads` workers use as many cores.

Fairness: a round takes at most `max_windows` (~1 s of audio) from each stream, so a client sending
faster than real time is processed as fast as the CPU allows without delaying the real-time ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio import AudioConverter, AudioFormat
from ..errors import InferenceError, MinervaError
from .microwakeword import MicroStream
from .openwakeword import CHUNK, WINDOW, Hit, OwwRunners, OwwStream, process
from .speaker_gate import PHRASE_SECONDS, RecentAudio
from .trigger import SAMPLE_RATE

_LOGGER = logging.getLogger(__name__)

FINISH = object()  # inbox marker: audio-stop


@dataclass
class Report:
    """What one round did for one stream, handed to the event loop."""

    stream: WorkerStream
    hits: list[Hit] = field(default_factory=list)
    phrases: list[np.ndarray | None] = field(default_factory=list)  # per hit, the audio before it (speaker gate)
    consumed: int = 0  # input bytes taken from the inbox
    finished: bool = False
    error: MinervaError | None = None


class WorkerStream:
    """The worker side of one stream. The loop only appends to `inbox` and sets `closed`."""

    def __init__(
        self,
        fmt: AudioFormat,
        oww: OwwStream | None,
        micro: MicroStream | None,
        max_samples: int,
        keep_phrases: bool = False,
    ) -> None:
        self.inbox: deque[tuple[AudioFormat, bytes | memoryview] | object] = deque()
        self.closed = False
        self.oww = oww
        self.micro = micro
        self.max_samples = max_samples  # converted audio taken per round
        self._fmt = fmt
        self._converter = AudioConverter(fmt)
        self._converted = bytearray()  # 16 kHz s16 not yet fed to the engines
        self.samples = 0  # 16 kHz samples fed to the engines since audio-start
        # The last seconds fed, for the speaker gate: what a detection's phrase is copied from. openWakeWord's
        # outputs trail what was fed by less than two rounds (2 × max_samples), so the ring holds that much more.
        phrase = int(PHRASE_SECONDS * SAMPLE_RATE)
        self.recent = RecentAudio(phrase + 2 * max_samples + CHUNK) if keep_phrases else None
        self.finishing = False
        self.done = False

    @property
    def backlog(self) -> int:
        """Converted samples not yet turned into outputs."""
        if self.oww is None:
            return 0
        return self.oww.available * CHUNK

    def take(self) -> tuple[int, list[Hit]]:
        """Convert input from the inbox and feed at most one round's budget of it to the engines.

        The budget also bounds a single huge chunk: it is converted and fed a round's worth at a time (the
        rest goes back to the front of the inbox), so no format, however it inflates, is converted at once.
        """
        consumed = 0
        budget = 2 * self.max_samples  # bytes of 16 kHz s16
        converted = self._converted
        while self.inbox and not self.finishing and len(converted) < budget:
            item = self.inbox.popleft()
            if item is FINISH:
                converted += self._converter.flush()
                self.finishing = True
                # Silence after the end, so the last partial chunk is heard as a live stream's next chunk would.
                total = self.samples + len(converted) // 2
                converted += bytes(2 * ((-(total - WINDOW)) % CHUNK))
                break
            assert isinstance(item, tuple)
            fmt, pcm = item
            if fmt != self._fmt:  # a chunk in another format than audio-start said
                converted += self._converter.flush()
                self._fmt, self._converter = fmt, AudioConverter(fmt)
            step = _input_for(fmt, max(budget - len(converted), budget // 4))
            if len(pcm) > step:
                view = memoryview(pcm)
                rest: bytes | memoryview = view[step:]  # a view: the rest is not copied…
                if len(rest) * 2 < len(view.obj):  # type: ignore[arg-type]
                    rest = bytes(rest)  # …until it is the smaller part: then the original chunk is freed
                self.inbox.appendleft((fmt, rest))
                pcm = view[:step]
            consumed += len(pcm)
            converted += self._converter.convert(bytes(pcm))
        if not converted or self.backlog >= self.max_samples:
            return consumed, []
        size = min(len(converted), budget)
        piece = bytes(converted[:size])
        del converted[:size]
        return consumed, self._push(piece)

    def _push(self, pcm: bytes) -> list[Hit]:
        self.samples += len(pcm) // 2
        samples = np.frombuffer(pcm, dtype="<i2")
        if self.recent is not None:
            self.recent.push(samples)
        if self.oww is not None:
            self.oww.push(samples)
        return self.micro.push(pcm) if self.micro is not None else []

    def phrases(self, hits: list[Hit]) -> list[np.ndarray | None]:
        """The audio up to each hit (PHRASE_SECONDS of it), when this stream keeps it."""
        if self.recent is None:
            return [None] * len(hits)
        return [self.recent.before(hit.sample, int(PHRASE_SECONDS * SAMPLE_RATE)) for hit in hits]

    @property
    def pending(self) -> bool:
        return bool(self._converted) or (bool(self.inbox) and not self.finishing) or self.backlog > 0

    def release(self) -> None:
        if self.micro is not None:
            self.micro.close()
            self.micro = None
        self.oww = None


def _input_for(fmt: AudioFormat, output_bytes: int) -> int:
    """Input bytes whose 16 kHz s16 mono conversion fills about `output_bytes` (whole frames, at least one)."""
    frame = fmt.width * fmt.channels
    frames = max(1, output_bytes // 2 * fmt.rate // 16000)
    return frames * frame


Deliver = Callable[[list[Report]], None]


class WakeShard:
    """One worker thread and the streams assigned to it.

    A round visits only the streams that got audio (or have work left over), and rounds triggered by new
    audio alone are at least `min_round` apart: with many real-time streams each round then batches the
    chunks of many of them, instead of one round per arriving chunk (which costs O(streams²)).
    """

    def __init__(self, name: str, deliver: Deliver, max_batch: int = 32, min_round: float = 0.03) -> None:
        self.name = name
        self._deliver = deliver
        self._runners = OwwRunners(max_batch)
        self.min_round = min_round
        self._streams: dict[int, WorkerStream] = {}
        self._ready: deque[WorkerStream] = deque()  # appended by the event loop: new audio, new or closed stream
        self._carry: dict[int, WorkerStream] = {}  # streams with work left after the last round
        self._wake = threading.Event()
        self._stop = False
        self._purge = False
        self.busy_seconds = 0.0
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        return len(self._streams) + len(self._ready)

    def poke(self, stream: WorkerStream) -> None:
        """The stream is new, has new input, or was closed (called on the event loop)."""
        self._ready.append(stream)
        self._wake.set()

    add = poke

    def purge(self) -> None:
        """A model was unloaded: drop this thread's interpreters for it."""
        self._purge = True
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        last = 0.0
        while not self._stop:
            if not self._carry:
                self._wake.wait()
                pause = self.min_round - (time.perf_counter() - last)
                if pause > 0:
                    time.sleep(pause)  # let more streams' chunks arrive: one batch for all of them
            self._wake.clear()
            last = started = time.perf_counter()
            try:
                self._round()
            except Exception:  # never let the thread die: every stream would go deaf
                _LOGGER.exception("%s: round failed", self.name)
                self._carry.clear()
            self.busy_seconds += time.perf_counter() - started
            self.rounds += 1
        for stream in self._streams.values():
            stream.release()
        self._streams.clear()
        self._runners.close()

    def _round(self) -> None:
        if self._purge:
            self._purge = False
            self._runners.purge()
        visit, self._carry = self._carry, {}
        while self._ready:
            stream = self._ready.popleft()
            visit[id(stream)] = stream
        reports: dict[int, Report] = {}
        batch: list[WorkerStream] = []
        for key, stream in visit.items():
            if stream.closed:
                self._streams.pop(key, None)
                stream.release()
                continue
            self._streams[key] = stream
            if stream.done:
                continue
            report = reports[key] = Report(stream)
            try:
                report.consumed, report.hits = stream.take()
            except Exception as err:
                report.error = _as_error(err)
            if report.error is None and stream.oww is not None and stream.oww.available:
                batch.append(stream)
        if batch:
            self._process(batch, reports)
        for key, report in reports.items():
            stream = report.stream
            report.phrases = stream.phrases(report.hits)
            if report.error is not None:
                stream.done = True
            elif stream.finishing and not stream.pending:
                stream.done = report.finished = True
            elif stream.pending:
                self._carry[key] = stream
        ready = [r for r in reports.values() if r.hits or r.consumed or r.finished or r.error]
        if ready:
            self._deliver(ready)

    def _process(self, batch: list[WorkerStream], reports: dict[int, Report]) -> None:
        streams = [s.oww for s in batch if s.oww is not None]
        try:
            results = process(streams, self._runners)
        except Exception as err:
            _LOGGER.exception("%s: openWakeWord batch of %d streams failed", self.name, len(batch))
            for stream in batch:
                reports[id(stream)].error = _as_error(err)
            return
        for stream, hits in zip(batch, results, strict=True):
            if hits:
                report = reports[id(stream)]
                report.hits = sorted(report.hits + hits, key=lambda hit: hit.sample)


def _as_error(err: BaseException) -> MinervaError:
    return err if isinstance(err, MinervaError) else InferenceError(f"wake word inference failed: {err}")
