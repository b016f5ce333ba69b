"""Protocols the handlers and the HTTP API program against; engines implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .manager import CancelToken

# ---- speech-to-text ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptionOptions:
    language: str | None = None  # None = detect
    task: str = "transcribe"  # or "translate"
    beam_size: int = 1
    initial_prompt: str | None = None
    hotwords: str | None = None  # vocabulary hints (names, terms)
    temperature: float | None = None  # None = the engine's fallback schedule
    timestamps: bool = False  # segment start/end (subtitles); costs a little decoding time
    word_timestamps: bool = False
    skip_silence: bool = False  # the engine's own VAD filter (useful for long files)


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


# ---- voice activity ----------------------------------------------------------------------------


class Vad(Protocol):
    frame_bytes: int  # one frame of 16 kHz mono s16

    def is_speech(self, frame: bytes) -> bool: ...


# ---- text-to-speech ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthesisOptions:
    speaker_id: int | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    volume: float = 1.0


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    languages: tuple[str, ...]
    sample_rate: int
    speakers: dict[str, int] = field(default_factory=dict)  # name -> id
    num_speakers: int = 1
    aliases: tuple[str, ...] = ()
    description: str = ""


class Synthesizer(Protocol):
    info: VoiceInfo

    def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """Blocking; returns 16-bit mono PCM at info.sample_rate for one sentence."""
        ...


@runtime_checkable
class StreamingSynthesizer(Synthesizer, Protocol):
    def stream(self, text: str, options: SynthesisOptions) -> Iterator[bytes]:
        """Blocking; the PCM of `synthesize` in parts, each as soon as it is made."""
        ...
