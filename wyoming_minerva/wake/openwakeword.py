"""openWakeWord: shared feature models (mel spectrogram + speech embedding) and the per-stream pipeline.

The pipeline reproduces pyopen-wakeword's streaming exactly (same windows, same numbers), but:
- each stream's features are computed once and shared by all its wake word models;
- every step is a pure function of the last ~2 s of audio, so the work of many streams is batched into
  a few invokes per round, and chunks whose whole receptive field is silent (SilenceGate) are skipped
  and recomputed from the kept audio when sound returns — outputs after a gap are the same numbers an
  ungated stream would compute.

Window arithmetic (16 kHz): window w is samples [1280·w, 1280·w + 1760) → 8 mel frames;
embedding k reads mel frames of windows k-9 … k-1 and the first 4 of window k (76 frames);
a classifier with n inputs reads embeddings w-n+1 … w. Output w is known once sample 1280·w + 1760
has arrived. Before audio-start the stream is digital silence (as in pyopen-wakeword).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .tflite import BatchRunner, Interpreter, SharedModel, TfLite
from .trigger import SilenceGate, Trigger

CHUNK = 1280  # samples per step (80 ms)
LOOKAHEAD = 480
WINDOW = CHUNK + LOOKAHEAD  # samples per mel window
FRAMES = 8  # mel frames per window
MELS = 32
EMB_FRAMES = 76
EMB_SPAN = 9  # whole windows before window k that embedding k reads
EMB_DIM = 96
_INVALID = np.iinfo(np.int64).min


def _mel_transform(raw: np.ndarray) -> np.ndarray:
    """The melspectrogram model's output → the embedding model's input scale (as openWakeWord does)."""
    return raw.reshape(-1, FRAMES, MELS) / 10.0 + 2.0


class OwwFeatures:
    """The two shared feature models and the features of digital silence."""

    def __init__(self, tflite: TfLite, models_dir: Path, on_close: Callable[[], None] | None = None) -> None:
        self.mel = SharedModel(tflite, models_dir / "melspectrogram.tflite", on_close)
        self.emb = SharedModel(tflite, models_dir / "embedding_model.tflite", on_close)
        mel = Interpreter(self.mel.model, (1, WINDOW))
        emb = Interpreter(self.emb.model, (1, EMB_FRAMES, MELS, 1))
        try:
            self.zero_mel = _mel_transform(mel.run(np.zeros((1, WINDOW), np.float32)))[0].astype(np.float32)
            frames = np.tile(self.zero_mel, (EMB_FRAMES // FRAMES + 1, 1))[:EMB_FRAMES]
            self.zero_emb = emb.run(frames.reshape(1, EMB_FRAMES, MELS, 1)).reshape(EMB_DIM).astype(np.float32)
        finally:
            mel.close()
            emb.close()

    @property
    def closed(self) -> bool:
        return self.mel.closed or self.emb.closed

    def close(self) -> None:
        self.mel.close()
        self.emb.close()


class OwwClassifier:
    """One openWakeWord model: [batch, n, 96] embeddings → [batch, 1] probability."""

    def __init__(self, tflite: TfLite, path: Path, on_close: Callable[[], None] | None = None) -> None:
        self.shared = SharedModel(tflite, path, on_close)
        probe = Interpreter(self.shared.model)
        try:
            shape = probe.input.shape
        finally:
            probe.close()
        if len(shape) != 3 or shape[2] != EMB_DIM:
            self.shared.close()
            raise ValueError(f"{path.name} is not an openWakeWord model (input shape {shape})")
        self.window = int(shape[1])

    @property
    def closed(self) -> bool:
        return self.shared.closed

    def close(self) -> None:
        self.shared.close()


@dataclass
class OwwDetector:
    """One requested model inside a stream."""

    label: str
    classifier: OwwClassifier
    trigger: Trigger


@dataclass
class Hit:
    label: str
    sample: int
    probability: float


class _Audio:
    """16-bit samples from absolute index `start` onward; old ones are dropped by moving a head."""

    def __init__(self, start: int, zeros: int, capacity: int) -> None:
        self.start = start
        self.data = np.zeros(max(zeros, capacity), np.int16)
        self.head = 0  # data[head : head + size] holds samples start … end-1
        self.size = zeros

    @property
    def end(self) -> int:
        return self.start + self.size

    def append(self, samples: np.ndarray) -> None:
        if self.head + self.size + len(samples) > len(self.data):
            kept = self.data[self.head : self.head + self.size]
            if self.size + len(samples) > len(self.data) * 3 // 4:
                self.data = np.empty(2 * (self.size + len(samples)), np.int16)
            self.data[: self.size] = kept  # numpy copes with the overlap
            self.head = 0
        tail = self.head + self.size
        self.data[tail : tail + len(samples)] = samples
        self.size += len(samples)

    def view(self, begin: int, end: int) -> np.ndarray:
        offset = self.head - self.start
        return self.data[begin + offset : end + offset]

    def trim(self, before: int) -> None:
        drop = min(self.size, before - self.start)
        if drop > 0:
            self.head += drop
            self.size -= drop
            self.start += drop


class OwwStream:
    """The openWakeWord state of one stream; used only by its worker thread."""

    def __init__(
        self,
        features: OwwFeatures,
        detectors: Sequence[OwwDetector],
        gate: SilenceGate | None,
        max_windows: int = 16,
    ) -> None:
        self.features = features
        self.detectors = list(detectors)
        self.gate = gate
        self.max_windows = max_windows
        self.longest = max(d.classifier.window for d in self.detectors)
        self.span = self.longest + EMB_SPAN  # output w needs the audio of chunks w-span … w
        size = 1 << (self.longest + EMB_SPAN + max_windows + 2).bit_length()
        self.ring = size
        past = np.arange(-size, 0)  # windows before -1 saw only digital silence
        self.mel = np.broadcast_to(features.zero_mel, (size, FRAMES, MELS)).copy()
        self.mel_at = np.full(size, _INVALID, np.int64)
        self.emb = np.broadcast_to(features.zero_emb, (size, EMB_DIM)).copy()
        self.emb_at = np.full(size, _INVALID, np.int64)
        self.mel_at[past[:-1] % size] = past[:-1]
        self.emb_at[past[:-1] % size] = past[:-1]
        self.audio = _Audio(start=-CHUNK, zeros=CHUNK, capacity=(self.span + 2 * max_windows + 4) * CHUNK)
        self.next_window = -1
        self.last_loud = -(1 << 40)
        self.computed = 0  # outputs computed (the rest were skipped as silent)
        self.skipped = 0

    def push(self, samples: np.ndarray) -> None:
        self.audio.append(samples)

    @property
    def available(self) -> int:
        """Windows whose audio is complete and not yet handled."""
        return max(0, (self.audio.end - WINDOW) // CHUNK + 1 - self.next_window)

    def plan(self) -> _Plan:
        """Which outputs this round computes, and which mel/embedding rows they still need."""
        count = min(self.available, self.max_windows)
        outputs: list[int] = []
        for w in range(self.next_window, self.next_window + count):
            begin = w * CHUNK + LOOKAHEAD
            if self.gate is None or self.gate.is_loud(self.audio.view(begin, begin + CHUNK)):
                self.last_loud = w
            if self.last_loud >= w - self.span:
                outputs.append(w)
        self.skipped += count - len(outputs)
        self.computed += len(outputs)
        self.next_window += count
        embs: list[int] = []
        mels: list[int] = []
        ring = self.ring
        if outputs:
            for k in range(outputs[0] - self.longest + 1, outputs[-1] + 1):
                if self.emb_at[k % ring] != k:
                    embs.append(k)
            if embs:
                for x in range(embs[0] - EMB_SPAN, embs[-1] + 1):
                    if self.mel_at[x % ring] != x:
                        mels.append(x)
        return _Plan(self, outputs, embs, mels)

    def trim(self) -> None:
        self.audio.trim((self.next_window - self.span - 1) * CHUNK)

    # ---- rows for the batched models ---------------------------------------------------------

    def mel_input(self, window: int) -> np.ndarray:
        return self.audio.view(window * CHUNK, window * CHUNK + WINDOW)

    def store_mel(self, window: int, frames: np.ndarray) -> None:
        slot = window % self.ring
        self.mel[slot] = frames
        self.mel_at[slot] = window

    def emb_input(self, k: int) -> np.ndarray:
        slots = np.arange(k - EMB_SPAN, k + 1) % self.ring
        return self.mel[slots].reshape(-1, MELS)[:EMB_FRAMES]

    def store_emb(self, k: int, vector: np.ndarray) -> None:
        slot = k % self.ring
        self.emb[slot] = vector
        self.emb_at[slot] = k

    def classifier_input(self, window: int, n: int) -> np.ndarray:
        return self.emb[np.arange(window - n + 1, window + 1) % self.ring]


@dataclass
class _Plan:
    stream: OwwStream
    outputs: list[int]
    embs: list[int]
    mels: list[int]
    hits: list[Hit] = field(default_factory=list)


class OwwRunners:
    """One worker thread's batch runners, rebuilt when the manager reloads a model."""

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._runners: dict[int, tuple[SharedModel, BatchRunner]] = {}

    def get(
        self, shared: SharedModel, row_shape: tuple[int, ...], max_batch: int | None = None, release_gil: bool = False
    ) -> BatchRunner:
        entry = self._runners.get(id(shared))
        if entry is None or entry[0] is not shared:
            entry = (shared, shared.runner(row_shape, max_batch or self.max_batch, release_gil))
            self._runners[id(shared)] = entry
        return entry[1]

    def purge(self) -> None:
        """Drop runners of unloaded models (frees their interpreters)."""
        for key, (shared, runner) in list(self._runners.items()):
            if shared.closed:
                runner.close()
                del self._runners[key]

    def close(self) -> None:
        for _, runner in self._runners.values():
            runner.close()
        self._runners.clear()


def process(streams: Sequence[OwwStream], runners: OwwRunners) -> list[list[Hit]]:
    """One round for many streams: batched mel, embedding and classifier invokes. Hits per stream."""
    plans = [stream.plan() for stream in streams]
    mel_rows = [(p.stream, x) for p in plans for x in p.mels]
    if mel_rows:
        features = mel_rows[0][0].features
        batch = np.stack([stream.mel_input(x) for stream, x in mel_rows]).astype(np.float32)
        # Batch 1: the melspectrogram graph scales its log by the maximum over the whole input tensor
        # (top_db), so a quiet window batched with loud ones would come out different.
        out = _mel_transform(runners.get(features.mel, (WINDOW,), max_batch=1, release_gil=True).run(batch))
        for (stream, x), frames in zip(mel_rows, out, strict=True):
            stream.store_mel(x, frames)
    emb_rows = [(p.stream, k) for p in plans for k in p.embs]
    if emb_rows:
        features = emb_rows[0][0].features
        batch = np.stack([stream.emb_input(k) for stream, k in emb_rows])[..., np.newaxis]
        # Batches of at most 8: bigger ones compute no faster and each size is an interpreter with its own buffers.
        runner = runners.get(features.emb, (EMB_FRAMES, MELS, 1), max_batch=8, release_gil=True)
        out = runner.run(batch).reshape(-1, EMB_DIM)
        for (stream, k), vector in zip(emb_rows, out, strict=True):
            stream.store_emb(k, vector)
    # Classifiers: one batch per model across every stream that asked for it.
    jobs: dict[int, list[tuple[_Plan, OwwDetector]]] = {}
    for plan in plans:
        if plan.outputs:
            for detector in plan.stream.detectors:
                jobs.setdefault(id(detector.classifier), []).append((plan, detector))
    probabilities: dict[tuple[int, int], np.ndarray] = {}
    for entries in jobs.values():
        classifier = entries[0][1].classifier
        n = classifier.window
        batch = np.stack([p.stream.classifier_input(w, n) for p, _ in entries for w in p.outputs])
        out = runners.get(classifier.shared, (n, EMB_DIM)).run(batch).reshape(-1)
        start = 0
        for plan, detector in entries:
            probabilities[(id(plan), id(detector))] = out[start : start + len(plan.outputs)]
            start += len(plan.outputs)
    results: list[list[Hit]] = []
    for plan in plans:
        hits: list[Hit] = []
        for detector in plan.stream.detectors:
            probs = probabilities.get((id(plan), id(detector)))
            if probs is None:
                continue
            for w, probability in zip(plan.outputs, probs, strict=True):
                sample = w * CHUNK + WINDOW
                if detector.trigger.update(float(probability), sample):
                    hits.append(Hit(detector.label, sample, float(probability)))
        hits.sort(key=lambda hit: hit.sample)
        plan.stream.trim()
        results.append(hits)
    return results
