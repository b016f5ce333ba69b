"""Who spoke an utterance: its enrolled voice, found beside its decode, for `transcript.context.speaker`.

The voice print runs on the inference executor like the decode, started together with it (the speculative decode
at a pause included), so by the time the transcript is ready the speaker usually is too. The transcript never waits
more than SPEAKER_WAIT_SECONDS for it: a late answer is dropped, never a late transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..audio import pcm16_to_float
from ..speakers.service import SpeakerService

_LOGGER = logging.getLogger(__name__)

SPEAKER_WAIT_SECONDS = 0.3  # the longest a finished transcript waits for its speaker
SPEAKER_AUDIO_BYTES = 8 * 16000 * 2  # the voice print is taken from the first 8 s: a long dictation costs no more


class SpeakerGuess:
    """identify() on one stretch of an utterance (16 kHz s16 PCM, at most SPEAKER_AUDIO_BYTES of it), as a task
    started with its decode."""

    def __init__(self, speakers: SpeakerService, pcm: bytes, end_sample: int) -> None:
        self.end_sample = end_sample  # the decode's speech end: a guess belongs to the decode of the same audio
        self.waited_ms = 0.0  # how long the transcript waited for it
        self._task = asyncio.create_task(self._identify(speakers, pcm), name="speaker-guess")

    @staticmethod
    async def _identify(speakers: SpeakerService, pcm: bytes) -> tuple[str, float] | None:
        try:
            return await speakers.identify(pcm16_to_float(pcm))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a speaker is an extra: it never costs the transcript
            _LOGGER.warning("Speaker identification failed: %s", err)
            return None

    async def context(self, wait: float = SPEAKER_WAIT_SECONDS) -> dict[str, object] | None:
        """`{"speaker", "speaker_score"}` when an enrolled voice matched; None otherwise or when not ready in time."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(wait):
                found = await asyncio.shield(self._task)
        except TimeoutError:
            _LOGGER.info("Speaker identification not ready %.0f ms after the transcript: sent without", wait * 1000)
            found = None
        self.waited_ms = (time.perf_counter() - started) * 1000
        if found is None:
            return None
        name, score = found
        return {"speaker": name, "speaker_score": round(score, 3)}

    def cancel(self) -> None:
        self._task.cancel()
