"""One spoken answer across upstreams: pinned to one backend, pieces replayed to the next until the first audio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from upstream_helpers import FAST

from wyoming_minerva.audio import AudioFormat
from wyoming_minerva.tts.support import EmptyTextError
from wyoming_minerva.upstream import ServiceUnavailableError, UpstreamPool, UpstreamUnavailable
from wyoming_minerva.upstream.speech import Audio, speak_with_failover

pytestmark = pytest.mark.timeout(30)

PIECES = ["First sentence.", "Second one.", "And a third."]


@dataclass
class Voice:
    """A fake speaking upstream: fails (before any audio) on the pieces whose index is in `fail_on`."""

    label: str
    fail_on: set[int] = field(default_factory=set)
    rate: int = 22050
    spoken: list[str] = field(default_factory=list)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def speak(self, piece: str) -> AsyncIterator[Audio]:
        index = len(self.spoken)
        self.spoken.append(piece)
        if index in self.fail_on:
            raise UpstreamUnavailable(self.label, "connection reset")
        yield AudioFormat(self.rate, 2, 1), f"{self.label}:{piece}".encode()


async def source(pieces: list[str], gap: float = 0.0) -> AsyncIterator[str]:
    for piece in pieces:
        if gap:
            await asyncio.sleep(gap)
        yield piece


async def local(pieces: AsyncIterator[str]) -> AsyncIterator[Audio]:
    async for piece in pieces:
        yield AudioFormat(16000, 2, 1), f"local:{piece}".encode()


async def answer(pool: UpstreamPool[Voice], pieces: list[str], with_local: bool = True) -> list[bytes]:
    stream = speak_with_failover(pool, source(pieces), Voice.speak, local if with_local else None)
    return [pcm async for _, pcm in stream]


async def test_the_whole_answer_goes_to_the_first_backend() -> None:
    a, b = Voice("a"), Voice("b")
    assert await answer(UpstreamPool("tts", [a, b], FAST), PIECES) == [f"a:{p}".encode() for p in PIECES]
    assert (a.spoken, b.spoken) == (PIECES, [])


async def test_a_failure_before_the_first_audio_replays_the_pieces_to_the_next() -> None:
    a, b = Voice("a", fail_on={0}), Voice("b", rate=24000)
    assert await answer(UpstreamPool("tts", [a, b], FAST), PIECES) == [f"b:{p}".encode() for p in PIECES]
    assert (a.spoken, b.spoken) == (PIECES[:1], PIECES)


async def test_after_the_first_audio_a_failure_ends_the_answer() -> None:
    a, b = Voice("a", fail_on={1}), Voice("b")
    got: list[bytes] = []
    with pytest.raises(UpstreamUnavailable, match="connection reset"):
        async for _, pcm in speak_with_failover(UpstreamPool("tts", [a, b], FAST), source(PIECES), Voice.speak, local):
            got.append(pcm)
    assert got == [b"a:First sentence."]  # no second voice, no local audio after it
    assert b.spoken == []


async def test_the_local_engine_gets_every_piece_when_no_upstream_can_speak() -> None:
    a, b = Voice("a", fail_on={0}), Voice("b", fail_on={0})
    assert await answer(UpstreamPool("tts", [a, b], FAST), PIECES) == [f"local:{p}".encode() for p in PIECES]
    pool = UpstreamPool("tts", [Voice("c", fail_on={0})], replace(FAST, local_fallback=False))
    with pytest.raises(ServiceUnavailableError):
        await answer(pool, PIECES, with_local=False)


async def test_nothing_to_speak_never_reaches_a_backend() -> None:
    a = Voice("a")
    pool = UpstreamPool("tts", [a], FAST)
    with pytest.raises(EmptyTextError):
        await answer(pool, [])
    assert a.spoken == []
    assert sum(pool.backends[0].stats.requests.values()) == 0 and pool.backends[0].in_rotation


async def test_audio_flows_while_the_text_is_still_being_written() -> None:
    a = Voice("a")
    started = time.monotonic()
    arrivals: list[float] = []
    stream = speak_with_failover(UpstreamPool("tts", [a], FAST), source(PIECES, gap=0.3), Voice.speak)
    async for _ in stream:
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    assert arrivals[0] < 0.3 * 2 < arrivals[-1]  # the first sentence was spoken before the last one was written
