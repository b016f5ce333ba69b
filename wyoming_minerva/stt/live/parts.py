"""The pieces a live session is made of: one Whisper run (Decode), an utterance's state, a result to come, the
outbox of events; plus the sample arithmetic they share. Used by live.py only."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from ...audio import pcm16_to_float
from ..endpointing import Endpointer
from ..engine import TranscriptionInfo, TranscriptionOptions
from ..hallucinations import clean_transcript
from ..whisper import SpeechToText
from .scheduler import FinalJob
from .types import Failed, Final, Interim, LiveEvent

RATE = 16000
TRAILING_PAD_SAMPLES = RATE * 3 // 10  # a final keeps 300 ms after the last speech frame
LEADING_PAD_SAMPLES = RATE // 10  # silence put before every decode's audio


def ms(samples: int) -> int:
    return samples * 1000 // RATE


class Decode:
    """One Whisper run over an utterance's audio (everything up to `end_sample`), on the shared executor."""

    def __init__(self, stt: SpeechToText, audio: np.ndarray, options: TranscriptionOptions, end_sample: int) -> None:
        self.stt = stt
        self.end_sample = end_sample
        self.audio_seconds = len(audio) / RATE
        self.language = options.language
        self.error: BaseException | None = None
        self.decode_ms = 0.0
        self.finished = False
        self.gated = options.skip_silence  # Silero (inside faster-whisper) drops non-speech: fit for a final
        self.task: asyncio.Task[None] | None = None
        self._audio: np.ndarray | None = audio
        self._options = options
        self._texts: list[str] = []

    @property
    def text(self) -> str:
        return clean_transcript("".join(self._texts), heard_speech=True)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name="live-decode")
        return self.task

    async def run(self) -> None:
        started = time.perf_counter()
        audio, self._audio = self._audio, None
        try:
            assert audio is not None, "a Decode runs once"
            async for item in self.stt.stream(audio, self._options):
                if isinstance(item, TranscriptionInfo):
                    self.language = item.language
                else:
                    self._texts.append(item.text)
        except Exception as err:
            self.error = err
        except asyncio.CancelledError as err:
            self.error = err
            raise
        finally:
            self.decode_ms = (time.perf_counter() - started) * 1000
            self.finished = True

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Utterance:
    """Everything about one utterance; replaced whole when the next begins."""

    def __init__(self, number: int, origin: int, endpointer: Endpointer, vad: bool) -> None:
        self.number = number
        self.origin = origin  # session sample of audio[0] (moves while waiting for speech: the buffer is trimmed)
        self.ep_origin = origin  # session sample where the endpointer started counting
        self.endpointer = endpointer
        self.vad = vad  # silence ends it (else only a commit does)
        self.audio = bytearray()  # 16 kHz mono s16
        self.started = False  # the VAD heard the start of speech
        self.confirmed = False  # and then enough of it (min_speech_ms) to be an utterance, not a click
        self.paused = False
        self.committed = False
        self.overflowed = False
        self.last_speech_wall = 0.0
        self.decode: Decode | None = None  # the latest interim or speculative decode
        self.idle_from = 0  # utterance sample when the last decode finished (interims wait interim_ms after it)
        self.last_decode_samples = 0  # how long (as audio) the last decode took
        self.last_interim = ""

    @property
    def samples(self) -> int:
        return len(self.audio) // 2

    def relative(self, endpointer_sample: int) -> int:
        """An endpointer sample as an index into this utterance's audio."""
        return self.ep_origin + endpointer_sample - self.origin

    @property
    def speech_end(self) -> int:
        return self.relative(self.endpointer.speech_end_sample)


class PendingFinal:
    """A committed utterance's result to come (futures resolve in any order; they are published in order)."""

    def __init__(self, utterance: int, samples: int, end_wall: float) -> None:
        self.utterance = utterance
        self.samples = samples
        self.end_wall = end_wall
        self.result: asyncio.Future[Final | Failed] = asyncio.get_running_loop().create_future()
        self.job: FinalJob | None = None
        self.decode: Decode | None = None

    def resolve(self, event: Final | Failed) -> None:
        if not self.result.done():
            self.result.set_result(event)


class Outbox:
    """Events not yet taken by the client's writer; an unsent interim is replaced by a newer one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[LiveEvent] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, event: LiveEvent) -> bool:
        """False when the client has left too many events unread."""
        if self.closed:
            return True
        if isinstance(event, Interim):
            for index, item in enumerate(self._items):
                if isinstance(item, Interim) and item.utterance == event.utterance:
                    del self._items[index]
                    break
        elif len(self._items) >= self.limit:
            return False
        self._items.append(event)
        self._ready.set()
        return True

    def close(self, flush: bool) -> None:
        if not flush:
            self._items.clear()
        self.closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[LiveEvent]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self.closed:
                return
            self._ready.clear()
            await self._ready.wait()


def samples_of(ms: int) -> int:
    return ms * RATE // 1000


def padded(utt: Utterance, end: int) -> np.ndarray:
    """The utterance's audio up to `end` with digital silence around it: 100 ms before, and after it as much
    as the 300 ms past the last speech that the audio does not have yet (a speculative decode starts 60 ms
    after the speech). Whisper is surer of the first and last words with that silence (as in handlers/asr.py)."""
    missing = max(0, utt.speech_end + TRAILING_PAD_SAMPLES - end) if utt.started else 0
    audio = pcm16_to_float(bytes(utt.audio[: end * 2]))
    return np.concatenate((np.zeros(LEADING_PAD_SAMPLES, np.float32), audio, np.zeros(missing, np.float32)))
