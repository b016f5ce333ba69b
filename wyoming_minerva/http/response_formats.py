"""A finished transcription in OpenAI's response formats: json, text, srt, vtt, verbose_json (pure functions)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..stt.engine import Segment
from ..stt.hallucinations import clean_transcript, is_hallucination
from ..stt.languages import language_name

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["word", "segment"]


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...]
    task: str = "transcribe"
    temperature: float = 0.0


def kept_segments(segments: Sequence[Segment], heard_speech: bool) -> list[Segment]:
    """Segments without Whisper's stock hallucinations (stt/hallucinations.py), the same rule as the Wyoming side."""
    return [s for s in segments if s.text.strip() and not is_hallucination(s.text, heard_speech)]


def build(
    segments: Sequence[Segment],
    language: str,
    duration: float,
    heard_speech: bool,
    task: str = "transcribe",
    temperature: float | None = None,
) -> Transcript:
    kept = tuple(kept_segments(segments, heard_speech))
    text = clean_transcript("".join(s.text for s in kept), heard_speech)
    return Transcript(text, language, duration, kept if text else (), task, temperature or 0.0)


def usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(duration, 3)}


def as_json(t: Transcript) -> dict[str, Any]:
    return {"text": t.text, "usage": usage(t.duration)}


def _compression_ratio(text: str) -> float:
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 3) if raw else 0.0


def as_verbose_json(t: Transcript, granularities: Sequence[Granularity] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": t.task,
        "language": language_name(t.language),  # OpenAI writes the name: "english", "german"
        "duration": round(t.duration, 3),
        "text": t.text,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": index,
                "seek": int(seg.start * 100),  # Whisper's seek is in 10 ms frames
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "text": seg.text,
                "tokens": [],
                "temperature": t.temperature,
                "avg_logprob": round(seg.avg_logprob, 4),
                "compression_ratio": _compression_ratio(seg.text),
                "no_speech_prob": round(seg.no_speech_prob, 4),
            }
            for index, seg in enumerate(t.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for seg in t.segments
            for w in seg.words
        ]
    body["usage"] = usage(t.duration)
    return body


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def as_srt(t: Transcript) -> str:
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(t.segments, start=1)
    ]
    return "\n".join(cues)


def as_vtt(t: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)
