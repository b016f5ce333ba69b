"""Text-to-speech from an upstream (--tts-upstream), shaped like the local voice's own audio.

The local splitter cuts the text; each piece is one upstream request (upstream/speech.py pins the answer to one
backend). Its audio is converted as it streams to the format the answer started with — the local voice's, or the
rate the client asked for — because Home Assistant builds the WAV header from the first `audio-start` and the
HTTP API promises one rate. The pauses between pieces are added here, as the local path adds them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..audio import AudioConverter
from ..upstream import SpeakingUpstream, UpstreamRejected

_LOGGER = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range for `speed`


@dataclass(frozen=True)
class UpstreamVoice:
    """What an upstream is asked for: the voice the client named (None: the upstream's own default)."""

    name: str | None = None
    speaker: str | None = None
    speed: float = 1.0


def speed_of(length_scale: float | None, base: float | None) -> float:
    """A request's Piper length_scale as OpenAI's `speed` (relative to the server's own --length-scale)."""
    if not length_scale:
        return 1.0
    return min(MAX_SPEED, max(MIN_SPEED, (base or 1.0) / length_scale))


async def converted(
    client: SpeakingUpstream, piece: str, voice: UpstreamVoice, rate: int, spoken_before: bool
) -> AsyncIterator[bytes]:
    """One piece from `client` as 16-bit mono PCM at `rate`, resampled as it streams (no clicks at chunk edges).

    After audio of this answer has gone out (`spoken_before`), a piece the upstream rejects (e.g. no sound in
    it) is left out: the answer stays with this backend and goes on with the next piece.
    """
    chunks = client.synthesize(piece, voice.name, speaker=voice.speaker, speed=voice.speed)
    converter: AudioConverter | None = None
    try:
        async for fmt, pcm in chunks:
            if converter is None or converter.source != fmt:
                tail = converter.flush() if converter is not None else b""
                if tail:
                    yield tail
                converter = AudioConverter(fmt, rate)
            out = converter.convert(pcm)
            if out:
                yield out
    except UpstreamRejected as err:
        if not spoken_before:
            raise
        _LOGGER.debug("Upstream %s left out one piece of an answer: %s", err.backend, err.reason)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    if converter is not None:
        tail = converter.flush()
        if tail:
            yield tail
