"""The parts of text-to-speech that need no model: request options, text errors, silence, the audio cache."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadRequestError
from ..settings import TtsSettings

TEXT_FORMATS = ("text", "markdown", "ssml")  # plain text is read as markdown: both mean the same here
SENTENCE_PAUSE = 0.25  # seconds between sentences (plus --sentence-silence)
CLAUSE_PAUSE = 0.08  # seconds after a clause that was cut off a long sentence
_SILENCE_RATIO = 10 ** (-35 / 20)  # a 10 ms frame 35 dB under the loudest one is silence
_KEEP_BEFORE = 0.01
_KEEP_AFTER = 0.04
_SENTENCE_END = re.compile(r"[.!?…。！？｡।॥؟۔][\"'”’»」』）)\]]*$")


class EmptyTextError(BadRequestError):
    """No text, or text with nothing to say (only markup, code or symbols)."""

    code = "empty_text"


class TextTooLongError(BadRequestError):
    """More text than --max-text-chars for one request."""

    code = "text_too_long"


class UnsupportedTextFormatError(BadRequestError):
    code = "unsupported_text_format"


def trim_silence(pcm: bytes, rate: int) -> bytes:
    """Cut the silence Piper leaves around a piece down to a short margin.

    Leading silence is latency and trailing silence is dead air at the end of an answer; the pauses between
    pieces are added back explicitly (Speech._speak), so they are the same whatever the voice pads.
    """
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    frame = max(1, rate // 100)  # 10 ms
    frames = len(samples) // frame
    if frames == 0:
        return pcm
    rms = np.sqrt((samples[: frames * frame].astype(np.float32).reshape(frames, frame) ** 2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() * _SILENCE_RATIO)[0]
    if rms.max() == 0 or len(loud) == 0:
        return b""
    start = max(0, int(loud[0]) * frame - int(_KEEP_BEFORE * rate))
    end = min(len(samples), (int(loud[-1]) + 1) * frame + int(_KEEP_AFTER * rate))
    return bytes(samples[start:end].tobytes())


def ends_sentence(piece: str) -> bool:
    """True for a whole sentence, False for a clause cut off a long one (it ends with a comma)."""
    return _SENTENCE_END.search(piece) is not None


@dataclass(frozen=True)
class SpeechOptions:
    """Per-request overrides; None = the server's flag, which itself defaults to the voice's own value."""

    length_scale: float | None = None  # > 1 slower; an OpenAI `speed` s is length_scale 1/s
    noise_scale: float | None = None
    noise_w: float | None = None
    volume: float | None = None
    sentence_silence: float | None = None  # extra seconds after each sentence
    sample_rate: int | None = None  # output rate; None = the voice's

    def over(self, settings: TtsSettings) -> SpeechOptions:
        """These options with the server's settings filling the gaps, checked."""
        merged = SpeechOptions(
            length_scale=_pick(self.length_scale, settings.length_scale),
            noise_scale=_pick(self.noise_scale, settings.noise_scale),
            noise_w=_pick(self.noise_w, settings.noise_w),
            volume=_pick(self.volume, settings.volume),
            sentence_silence=_pick(self.sentence_silence, settings.sentence_silence),
            sample_rate=_pick(self.sample_rate, settings.sample_rate),
        )
        _check_range("length_scale", merged.length_scale, 0.1, 10.0)
        _check_range("noise_scale", merged.noise_scale, 0.0, 2.0)
        _check_range("noise_w", merged.noise_w, 0.0, 2.0)
        _check_range("volume", merged.volume, 0.0, 10.0)
        _check_range("sentence_silence", merged.sentence_silence, 0.0, 10.0)
        _check_range("sample_rate", merged.sample_rate, 8000, 192_000)
        return merged


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise BadRequestError(f"{name} {value} is out of range ({low} to {high})")


class AudioCache:
    """Synthesized pieces by (voice, options, rate, text), least recently used out first, bounded in bytes.

    Used from the event loop only, so it needs no lock.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.size_bytes = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> bytes | None:
        pcm = self._items.get(key)
        if pcm is not None:
            self._items.move_to_end(key)
        return pcm

    def put(self, key: Hashable, pcm: bytes) -> None:
        if len(pcm) > self.max_bytes // 4 or key in self._items:
            return  # one long piece must not flush every short phrase out
        self._items[key] = pcm
        self.size_bytes += len(pcm)
        while self.size_bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size_bytes -= len(old)


@dataclass
class TtsStats:
    requests: int = 0
    pieces_synthesized: int = 0
    cache_hits: int = 0
    synthesis_seconds: float = 0.0


def text_format_of(text_format: str | None) -> str:
    value = (text_format or "text").lower()
    if value not in TEXT_FORMATS:
        raise UnsupportedTextFormatError(
            f"text_format {text_format!r} is not supported (use {', '.join(TEXT_FORMATS)})"
        )
    return value
