"""Who said the wake word: the last seconds of a stream's audio, and the enrolled voice they match.

- `RecentAudio`: a bounded ring of a stream's latest 16 kHz samples, kept by the worker thread, from which the
  audio before a detection is copied when it happens (the worker may be up to a round ahead of its outputs).
- `SpeakerGate`: names the speaker of a detection (`detection.speaker`, with enrolled voices) and, with
  `--wake-speakers`, lets a detection through only when the phrase matches one of those voices, so a television
  saying the wake word stays quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_LOGGER = logging.getLogger(__name__)

PHRASE_SECONDS = 2.0  # audio up to a detection that its voice print is taken from (a wake phrase is ~1 s)
# A ~1 s phrase is a weak sample: the bundled Piper voice's "Okay Nabu" scores 0.58–0.59 against its enrolment
# (sentences: 0.79–0.88), the fixture wake words of other voices 0.07–0.35 against it. Hence lower than the 0.62
# that names a diarized speaker.
WAKE_THRESHOLD = 0.5


class VoiceIdentifier(Protocol):
    """speakers.service.SpeakerService, as the gate uses it."""

    @property
    def enrolled(self) -> bool: ...

    async def identify(
        self, audio: np.ndarray, threshold: float | None = None, urgent: bool = False
    ) -> tuple[str, float] | None: ...


class RecentAudio:
    """The latest `capacity` samples of a stream, addressed by their index since audio-start."""

    def __init__(self, capacity: int) -> None:
        self._ring = np.zeros(capacity, dtype=np.int16)
        self.end = 0  # samples pushed since audio-start

    def push(self, samples: np.ndarray) -> None:
        capacity = len(self._ring)
        if len(samples) >= capacity:
            samples = samples[-capacity:]
            self.end += len(samples) - capacity  # the part that does not fit is skipped over
        first = self.end % capacity
        head = min(len(samples), capacity - first)
        self._ring[first : first + head] = samples[:head]
        self._ring[: len(samples) - head] = samples[head:]
        self.end += len(samples)

    def before(self, end: int, samples: int) -> np.ndarray:
        """A copy of the (at most) `samples` samples up to index `end` that are still kept."""
        end = min(end, self.end)
        start = max(0, end - samples, self.end - len(self._ring))
        if start >= end:
            return np.zeros(0, dtype=np.int16)
        return np.take(self._ring, np.arange(start, end) % len(self._ring))


@dataclass(frozen=True)
class Verdict:
    speaker: str | None  # the enrolled voice the phrase matched, if any
    score: float | None
    allowed: bool  # deliver the detection


@dataclass(frozen=True)
class SpeakerGate:
    identifier: VoiceIdentifier
    allowed: frozenset[str] = frozenset()  # case-folded --wake-speakers names; empty = every detection passes
    threshold: float = WAKE_THRESHOLD  # cosine that names the voice of a wake phrase

    @classmethod
    def of(cls, identifier: VoiceIdentifier, allowed: Iterable[str] = ()) -> SpeakerGate:
        return cls(identifier, frozenset(name.casefold() for name in allowed))

    @property
    def active(self) -> bool:
        """Whether detections are worth a look: voices to name them by, or only some voices let through."""
        return bool(self.allowed) or self.identifier.enrolled

    async def check(self, audio: np.ndarray | None) -> Verdict:
        """The speaker of a wake phrase (16 kHz s16 samples up to the detection) and whether it may pass."""
        found = None
        if audio is not None and len(audio) and self.identifier.enrolled:
            # urgent: a detection waits for it, so not behind the inference executor's decodes (wake words get
            # their own threads for that reason, worker.py)
            found = await self.identifier.identify(audio.astype(np.float32) / 32768.0, self.threshold, urgent=True)
        speaker, score = (found[0], round(found[1], 3)) if found is not None else (None, None)
        allowed = not self.allowed or (speaker is not None and speaker.casefold() in self.allowed)
        return Verdict(speaker, score, allowed)
