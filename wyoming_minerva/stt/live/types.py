"""Live speech-to-text: the options a session runs with, the events it produces, its errors and statistics.

Protocol-free: the WebSocket routers (OpenAI Realtime, the native stream) turn these into their own messages.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum

from ...audio import AudioFormat
from ...errors import BadRequestError, MinervaError


class SessionLimitError(MinervaError):
    """As many live sessions as --realtime-max-sessions are open: try again later."""

    code = "session_limit"


class BufferOverflowError(MinervaError):
    """A session holds more audio (or unsent events) than its bounded buffers allow."""

    code = "buffer_overflow"


class CommitEmptyError(BadRequestError):
    """A commit with (almost) no audio in the buffer."""

    code = "input_audio_buffer_commit_empty"


class OverflowPolicy(StrEnum):
    REJECT = "reject"  # a final that finds the queue full is refused (queue_full to its session)
    DROP_OLDEST = "drop_oldest"  # the oldest waiting final is refused instead, the new one queued


@dataclass(frozen=True)
class SessionOptions:
    """What a client may choose per session (start message / session.update); None = the server's setting."""

    format: AudioFormat = field(default_factory=AudioFormat)
    language: str | None = None
    prompt: str | None = None
    vad: bool = True  # the server ends utterances on silence; False = only the client commits
    silence_ms: int | None = None
    prefix_ms: int = 300  # audio kept from before the start of speech
    vad_aggressiveness: int | None = None
    interim: bool = True


# ---- events ------------------------------------------------------------------------------------
# `utterance` numbers the utterances of one session from 1; audio_ms counts the session's audio (16 kHz).


@dataclass(frozen=True)
class SpeechStarted:
    utterance: int
    audio_ms: int  # where the utterance's audio begins (with the prefix padding)


@dataclass(frozen=True)
class SpeechStopped:
    utterance: int
    audio_ms: int  # end of the last speech frame


@dataclass(frozen=True)
class Committed:
    utterance: int
    audio_ms: int  # length of the committed audio
    reason: str  # "vad" (silence), "client" (commit/finalize), "limit" (max utterance length), "stop"


@dataclass(frozen=True)
class Interim:
    """The best guess so far for an utterance still being spoken; replaces the previous one."""

    utterance: int
    text: str


@dataclass(frozen=True)
class Final:
    utterance: int
    text: str
    language: str | None
    audio_seconds: float
    latency_ms: float  # end of speech (or the commit) → this result
    decode_ms: float
    reused: bool  # the result of a decode started before the end of speech (no new decode needed)


@dataclass(frozen=True)
class Failed:
    """An utterance that got no transcript: its final was refused (queue_full) or the model failed."""

    utterance: int
    code: str
    message: str


@dataclass(frozen=True)
class Notice:
    """A problem the session survives (e.g. buffer_overflow: audio was dropped)."""

    code: str
    message: str


LiveEvent = SpeechStarted | SpeechStopped | Committed | Interim | Final | Failed | Notice


# ---- statistics --------------------------------------------------------------------------------

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class LatencyHistogram:
    """End of speech → final, in seconds; cumulative on export (Prometheus style)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) ending with +Inf."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class LiveStats:
    sessions: int = 0  # open now
    sessions_total: int = 0
    sessions_rejected: int = 0  # session_limit
    interims: int = 0  # interim decodes run
    interims_skipped: int = 0  # interim refreshes given up for lack of capacity
    finals: int = 0
    finals_reused: int = 0  # finals that reused a decode started before the end of speech
    finals_failed: dict[str, int] = field(default_factory=dict)  # by error code
    queued: int = 0  # finals waiting for a worker now
    overflows: int = 0  # buffer_overflow notices
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def failed(self, code: str) -> None:
        self.finals_failed[code] = self.finals_failed.get(code, 0) + 1
