"""The pieces a live session is made of: an utterance's state, a result to come, the outbox of events, and the
sample arithmetic they share (the decode itself is stt/decode.py, shared with the Wyoming handler)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from ..decode import RATE, Decode, padded
from ..endpointing import Endpointer
from .scheduler import FinalJob
from .types import Failed, Final, Interim, LiveEvent


def ms(samples: int) -> int:
    return samples * 1000 // RATE


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


def padded_utterance(utt: Utterance, end: int) -> np.ndarray:
    """The utterance's audio up to `end`, padded as every decode is (stt/decode.py)."""
    return padded(utt.audio, end, utt.speech_end if utt.started else None)
