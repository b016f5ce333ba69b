"""Upstream settings (one frozen object from the flags) and the Protocols both kinds of upstream client implement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..audio import AudioFormat
from ..stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from .errors import UpstreamConfigError
from .urls import UpstreamUrl


@dataclass(frozen=True)
class UpstreamSettings:
    stt: tuple[UpstreamUrl, ...] = ()  # --stt-upstream, in the order they are tried
    tts: tuple[UpstreamUrl, ...] = ()  # --tts-upstream
    local_fallback: bool = True  # --no-local-fallback makes a pure proxy
    timeout: float = 15.0  # --upstream-timeout: longest wait for an answer, or for the next audio chunk
    probe_interval: float = 5.0  # --upstream-probe-interval: between probes of a healthy upstream
    probe_timeout: float = 2.0  # --upstream-probe-timeout: a probe's limit, also every connect's
    failures: int = 3  # --upstream-failures: consecutive failed requests that take an upstream out of rotation
    backoff_max: float = 30.0  # probes of a down upstream back off exponentially up to this

    def validate(self) -> None:
        if min(self.timeout, self.probe_interval, self.probe_timeout, self.backoff_max) <= 0:
            raise UpstreamConfigError("upstream timeouts and the probe interval must be positive")
        if self.failures < 1:
            raise UpstreamConfigError("--upstream-failures must be at least 1")
        if not self.local_fallback and not (self.stt or self.tts):
            raise UpstreamConfigError("--no-local-fallback needs at least one --stt-upstream or --tts-upstream")


class Upstream(Protocol):
    label: str  # the redacted URL: logs, metrics, /ready

    async def probe(self) -> None:
        """Returns when the upstream can serve; UpstreamUnavailable (with the reason) otherwise."""
        ...

    async def aclose(self) -> None: ...


class TranscribingUpstream(Upstream, Protocol):
    async def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions
    ) -> tuple[TranscriptionInfo, list[Segment]]:
        """`audio` is float32 mono 16 kHz. UpstreamError subclasses for every failure."""
        ...


class SpeakingUpstream(Upstream, Protocol):
    def synthesize(
        self, text: str, voice: str | None = None, *, speaker: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[tuple[AudioFormat, bytes]]:
        """16-bit PCM pieces as they arrive, each with its format (one format per answer).

        UpstreamError before the first piece or between pieces; never an empty answer.
        """
        ...
