"""Scoring diarization against a known answer (tests and script/bench speakers): conversations stitched from
clips of known speakers, and the share of speech time given to the right speaker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .diarize import VAD_FRAME, vad_flags
from .engine import SAMPLE_RATE


@dataclass(frozen=True)
class LabelledSpan:
    start: float  # seconds
    end: float
    speaker: str


def stitch(turns: Sequence[tuple[str, np.ndarray]], gaps: Sequence[float]) -> tuple[np.ndarray, list[LabelledSpan]]:
    """Clips (float32 16 kHz) one after another with `gaps[i]` seconds of silence before clip i + 1."""
    pieces: list[np.ndarray] = []
    truth: list[LabelledSpan] = []
    cursor = 0
    for index, (speaker, clip) in enumerate(turns):
        if index:
            silence = np.zeros(round(gaps[(index - 1) % len(gaps)] * SAMPLE_RATE), dtype=np.float32)
            pieces.append(silence)
            cursor += len(silence)
        pieces.append(clip.astype(np.float32))
        truth.append(LabelledSpan(cursor / SAMPLE_RATE, (cursor + len(clip)) / SAMPLE_RATE, speaker))
        cursor += len(clip)
    return np.concatenate(pieces), truth


def attribution_share(
    audio: np.ndarray, truth: Sequence[LabelledSpan], found: Sequence[LabelledSpan], aggressiveness: int = 2
) -> float:
    """Share of the speech frames (webrtcvad) inside the true spans whose found speaker is the right one, after
    pairing found labels with true speakers one to one by the time they share (found names are arbitrary)."""
    frame_s = VAD_FRAME / SAMPLE_RATE
    true_at: list[str] = []
    found_at: list[str | None] = []
    for index, speech in enumerate(vad_flags(audio, aggressiveness)):
        if not speech:
            continue
        middle = (index + 0.5) * frame_s
        owner = next((span.speaker for span in truth if span.start <= middle < span.end), None)
        if owner is None:
            continue
        true_at.append(owner)
        found_at.append(next((span.speaker for span in found if span.start <= middle < span.end), None))
    if not true_at:
        return 0.0
    shared: dict[tuple[str, str], int] = {}
    for owner, label in zip(true_at, found_at, strict=True):
        if label is not None:
            shared[(owner, label)] = shared.get((owner, label), 0) + 1
    pairing: dict[str, str] = {}
    used: set[str] = set()
    for (owner, label), _ in sorted(shared.items(), key=lambda item: -item[1]):
        if owner not in pairing and label not in used:
            pairing[owner] = label
            used.add(label)
    right = sum(
        1 for owner, label in zip(true_at, found_at, strict=True) if label is not None and pairing.get(owner) == label
    )
    return right / len(true_at)
