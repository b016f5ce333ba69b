"""The speech-to-text engine seam: request options, results, and the Transcriber Protocol every engine implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..runtime.manager import CancelToken

# ---- speech-to-text ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptionOptions:
    language: str | None = None  # None = detect
    model: str | None = None  # a program's name; None = route by language (stt/programs.py)
    task: str = "transcribe"  # or "translate"
    beam_size: int = 1
    initial_prompt: str | None = None
    hotwords: str | None = None  # vocabulary hints (names, terms)
    temperature: float | None = None  # None = the engine's fallback schedule
    timestamps: bool = False  # segment start/end (subtitles); costs a little decoding time
    word_timestamps: bool = False
    skip_silence: bool = False  # the engine's own VAD filter (useful for long files)
    local_only: bool = False  # never an upstream (live sessions: interims re-decode several times a second)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 0.0


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0


@dataclass(frozen=True)
class TranscriptionInfo:
    language: str
    duration: float


class Transcriber(Protocol):
    name: str

    @property
    def languages(self) -> tuple[str, ...]: ...

    @property
    def is_multilingual(self) -> bool: ...

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        """Blocking; `audio` is float32 mono 16 kHz. Segments are decoded lazily as they are iterated."""
        ...

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Blocking: the most likely language of `audio` and its probability (multilingual engines)."""
        ...


class TranscriberFactory(Protocol):
    """One engine family (faster-whisper, an upstream, a test fake): knows its models, loads them."""

    def languages(self, model: str) -> tuple[str, ...]:
        """The languages of `model` without loading it (for `describe`, answered instantly)."""
        ...

    def check(self, model: str) -> None:
        """Raise ModelNotFoundError now when `model` cannot be found or fetched (a start-up check, no loading)."""
        ...

    def load(self, model: str) -> Transcriber:
        """Blocking: the loaded engine (called once, through the ModelManager)."""
        ...
