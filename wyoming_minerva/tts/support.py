"""The parts of text-to-speech that need no model: request options, text errors, silence, the audio cache."""

from __future__ import annotations

import re
import sys
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
    trimmer = SilenceTrimmer(rate)
    return trimmer.feed(pcm) + trimmer.finish()


class SilenceTrimmer:
    """`trim_silence` for a piece that comes in parts: speech is given out as soon as it is known to be speech.

    A 10 ms frame is silence when it is 35 dB under the loudest frame so far. Before the first loud frame only
    the lead-in margin is kept; after it, what follows the last loud frame is held until more speech comes
    (then it is given out) or the piece ends (then only the trailing margin is).
    """

    def __init__(self, rate: int) -> None:
        self._frame = max(1, rate // 100)
        self._before = int(_KEEP_BEFORE * rate)
        self._after = int(_KEEP_AFTER * rate)
        self._pending = np.zeros(0, dtype="<i2")  # samples neither given out nor dropped yet
        self._offset = 0  # index in the piece of _pending[0]
        self._measured = 0  # end of the frames measured so far
        self._loudest = 0.0
        self._speech: tuple[int, int] | None = None  # start of the first loud frame, end of the last
        self._odd = b""

    def feed(self, pcm: bytes) -> bytes:
        data = self._odd + pcm
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        self._pending = np.concatenate([self._pending, np.frombuffer(data[:usable], dtype="<i2")])
        self._measure()
        return self._give(final=False)

    def finish(self) -> bytes:
        if self._measured == 0:  # less than one frame in all: nothing to judge by
            whole = self._pending.tobytes() + self._odd
            self._pending, self._odd = self._pending[:0], b""
            return whole
        return self._give(final=True)

    def _measure(self) -> None:
        end = self._offset + len(self._pending)
        complete = end - end % self._frame
        if complete <= self._measured:
            return
        frames = self._pending[self._measured - self._offset : complete - self._offset].astype(np.float32)
        rms = np.sqrt((frames.reshape(-1, self._frame) ** 2).mean(axis=1))
        self._loudest = max(self._loudest, float(rms.max()))
        loud = np.nonzero(rms > self._loudest * _SILENCE_RATIO)[0]
        if len(loud):
            first = self._measured + int(loud[0]) * self._frame
            last_end = self._measured + (int(loud[-1]) + 1) * self._frame
            self._speech = (self._speech[0] if self._speech else first, last_end)
        self._measured = complete

    def _give(self, final: bool) -> bytes:
        if self._speech is None:
            keep_from = max(self._offset, self._measured - self._before)  # only the lead-in can still be needed
            self._drop_until(keep_from)
            return b""
        start, end = max(0, self._speech[0] - self._before), self._speech[1]
        if final:
            end = min(self._offset + len(self._pending), end + self._after)
        start = max(start, self._offset)
        end = max(start, end)
        out = self._pending[start - self._offset : end - self._offset]
        self._drop_until(end)
        return out.tobytes()

    def _drop_until(self, index: int) -> None:
        self._pending = self._pending[index - self._offset :]
        self._offset = index


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

    The bound counts what an entry really holds: the bytes object (header included), the strings of its key
    and the bookkeeping of the entry itself. Used from the event loop only, so it needs no lock.
    """

    ENTRY_OVERHEAD = 400  # its slots in the OrderedDict (tables keep room after evictions), the key tuple, its int

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.size_bytes = 0
        self._items: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, pcm: bytes) -> None:
        size = footprint(key, pcm) + self.ENTRY_OVERHEAD
        if size > self.max_bytes // 4 or key in self._items:
            return  # one long piece must not flush every short phrase out
        self._items[key] = (pcm, size)
        self.size_bytes += size
        while self.size_bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.size_bytes -= old


def footprint(key: Hashable, value: bytes) -> int:
    """Bytes held by a cached value and the strings of its key (shared parts such as options count too)."""
    parts = key if isinstance(key, tuple) else (key,)
    strings = sum(sys.getsizeof(part) for part in parts if isinstance(part, str | bytes))
    return sys.getsizeof(value) + strings


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
