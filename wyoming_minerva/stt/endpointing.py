"""Voice activity: webrtcvad frames and an Endpointer that finds where an utterance ends.

webrtcvad costs microseconds per 30 ms frame, less than a hop to the executor would, so callers
may run it inline on the event loop; Whisper itself never runs there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import webrtcvad

SAMPLE_RATE = 16000
FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2


class WebRtcVad:
    """The Vad protocol on webrtcvad (16 kHz mono s16, 30 ms frames)."""

    frame_bytes = FRAME_BYTES

    def __init__(self, aggressiveness: int = 2) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, SAMPLE_RATE))


class EndpointEvent(Enum):
    SPEECH_STARTED = "speech_started"
    PAUSED = "paused"  # a short silence after speech: time to decode speculatively
    RESUMED = "resumed"  # speech again after a pause: the speculative decode is stale
    ENDED = "ended"  # long enough silence after enough speech: the utterance is over


NO_END_MS = 10**9  # silence never ends an utterance: the client ends it (audio-stop, a commit)

# Wyoming 1.10 `transcribe.vad_sensitivity` → the silence that ends an utterance. Home Assistant's own VAD waits
# 1.25 / 0.7 / 0.25 s; ours answers sooner by default (speculative decoding hides the decode), so "default" is the
# server's --endpoint-silence-ms and the other two bracket it.
RELAXED_SILENCE_MS = 1000
AGGRESSIVE_SILENCE_MS = 250


def silence_for_sensitivity(sensitivity: object, default_ms: int) -> int:
    """`relaxed` waits longer (people who pause mid-sentence), `aggressive` answers sooner; anything else: default."""
    if sensitivity == "relaxed":
        return max(default_ms, RELAXED_SILENCE_MS)
    if sensitivity == "aggressive":
        return min(default_ms, AGGRESSIVE_SILENCE_MS)
    return default_ms


@dataclass(frozen=True)
class EndpointConfig:
    start_ms: int = 90  # speech in a row before we believe it
    min_speech_ms: int = 240  # less speech than this never ends an utterance (clicks, coughs)
    pause_ms: int = 60  # silence that triggers the speculative decode (cheap to redo if speech resumes)
    end_ms: int = 600  # silence that ends the utterance


@dataclass(frozen=True)
class Mark:
    event: EndpointEvent
    sample: int  # where it happened, in 16 kHz samples since the stream began


class Endpointer:
    """Feeds 16 kHz mono s16 audio through a VAD and reports speech start, pauses and the end."""

    def __init__(self, vad: WebRtcVad | None = None, config: EndpointConfig | None = None) -> None:
        self.vad = vad or WebRtcVad()
        self.config = config or EndpointConfig()
        self._pending = b""
        self.samples = 0
        self.speech_started = False
        self.speech_ms = 0
        self.speech_end_sample = 0  # end of the last speech frame
        self.ended = False
        self._run_speech_ms = 0
        self._silence_ms = 0
        self._paused = False

    @property
    def had_speech(self) -> bool:
        return self.speech_started

    def feed(self, pcm: bytes) -> list[Mark]:
        marks: list[Mark] = []
        data = self._pending + pcm
        usable = len(data) - len(data) % FRAME_BYTES
        self._pending = data[usable:]
        for offset in range(0, usable, FRAME_BYTES):
            self.samples += FRAME_SAMPLES
            if self.ended:
                continue
            mark = self._frame(self.vad.is_speech(data[offset : offset + FRAME_BYTES]))
            if mark is not None:
                marks.append(mark)
        return marks

    def _frame(self, speech: bool) -> Mark | None:
        cfg = self.config
        if speech:
            self._run_speech_ms += FRAME_MS
            self._silence_ms = 0
            if not self.speech_started:
                if self._run_speech_ms >= cfg.start_ms:
                    self.speech_started = True
                    self.speech_ms = self._run_speech_ms
                    self.speech_end_sample = self.samples
                    return Mark(EndpointEvent.SPEECH_STARTED, self.samples - self._run_speech_ms * 16)
                return None
            self.speech_ms += FRAME_MS
            self.speech_end_sample = self.samples
            if self._paused:
                self._paused = False
                return Mark(EndpointEvent.RESUMED, self.samples)
            return None
        self._run_speech_ms = 0
        if not self.speech_started:
            return None
        self._silence_ms += FRAME_MS
        if self.speech_ms < cfg.min_speech_ms:
            return None
        if self._silence_ms >= cfg.end_ms:
            self.ended = True
            return Mark(EndpointEvent.ENDED, self.speech_end_sample)
        if not self._paused and self._silence_ms >= cfg.pause_ms:
            self._paused = True
            return Mark(EndpointEvent.PAUSED, self.speech_end_sample)
        return None
