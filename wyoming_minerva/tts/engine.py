"""The text-to-speech engine seam: request options, voice facts, the Synthesizer Protocol engines implement."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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
