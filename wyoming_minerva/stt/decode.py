"""THE decode of an utterance, shared by the Wyoming ASR handler and live sessions: one run of the SpeechToText
service over the audio up to `end_sample`, started in the background, whose segments can be followed while it
decodes (a streamed transcript) or read whole (`text`). A speculative decode started at a short pause is reused as
the final when no speech came after it: that is what makes the answer quick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from ..audio import pcm16_to_float
from .engine import Segment, TranscriptionInfo, TranscriptionOptions
from .hallucinations import clean_transcript
from .service import SpeechToText

RATE = 16000
TRAILING_PAD_SAMPLES = RATE * 3 // 10  # a decode keeps 300 ms after the last speech frame
LEADING_PAD_SAMPLES = RATE // 10  # silence put before every decode's audio


def padded(pcm: bytes | bytearray, end: int, speech_end: int | None) -> np.ndarray:
    """16 kHz s16 audio up to sample `end`, with digital silence around it: 100 ms before, and after it as much of
    the 300 ms past the last speech (`speech_end`) as the audio does not have yet (a speculative decode starts
    60 ms after the speech). Whisper is surer of the first and last words with that silence."""
    missing = max(0, speech_end + TRAILING_PAD_SAMPLES - end) if speech_end is not None else 0
    audio = pcm16_to_float(bytes(pcm[: end * 2]))
    return np.concatenate((np.zeros(LEADING_PAD_SAMPLES, np.float32), audio, np.zeros(missing, np.float32)))


class Decode:
    def __init__(self, stt: SpeechToText, audio: np.ndarray, options: TranscriptionOptions, end_sample: int) -> None:
        self.stt = stt
        self.end_sample = end_sample  # the utterance sample this decode's audio ends at (its speech end)
        self.audio_seconds = len(audio) / RATE
        self.language: str | None = options.language
        self.segments: list[Segment] = []
        self.error: BaseException | None = None
        self.decode_ms = 0.0
        self.finished = False
        self.gated = options.skip_silence  # Silero (inside faster-whisper) dropped non-speech: fit for a final
        self.task: asyncio.Task[None] | None = None
        self._audio: np.ndarray | None = audio
        self._options = options
        self._changed = asyncio.Event()

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name="stt-decode")
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
                    self.segments.append(item)
                self._changed.set()
        except Exception as err:
            self.error = err
        except asyncio.CancelledError as err:
            self.error = err
            raise
        finally:
            self.decode_ms = (time.perf_counter() - started) * 1000
            self.finished = True
            self._changed.set()

    @property
    def text(self) -> str:
        return clean_transcript("".join(s.text for s in self.segments), heard_speech=True)

    async def follow(self) -> AsyncIterator[Segment]:
        """Every segment, those decoded already at once, the rest as they come; raises the decode's error."""
        index = 0
        while True:
            while index < len(self.segments):
                yield self.segments[index]
                index += 1
            if self.finished:
                break
            self._changed.clear()
            if index == len(self.segments) and not self.finished:
                await self._changed.wait()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
