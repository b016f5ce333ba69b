"""The Wyoming upstream client: Home Assistant's ASR and TTS sequences against a real minerva, and the failures
of a fake Wyoming server (error events, a hang, a close mid-answer, a refused port)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from conftest import Speech, normalise, wyoming_server
from tts_helpers import joe  # noqa: F401  (the session's bundled voice, a fixture)
from upstream_helpers import FAST, RealMinerva, closed_port, float_audio, real_minerva, silent_tcp
from wyoming.audio import AudioChunk, AudioStart
from wyoming.error import Error
from wyoming.event import Event

from wyoming_minerva.audio import AudioFormat, convert_pcm
from wyoming_minerva.handlers.server import EventSink
from wyoming_minerva.stt.engine import TranscriptionOptions
from wyoming_minerva.tts.piper import PiperSynthesizer
from wyoming_minerva.upstream import (
    UpstreamRejected,
    UpstreamSettings,
    UpstreamUnavailable,
    parse_upstream_url,
)
from wyoming_minerva.upstream.wyoming import WyomingUpstream

pytestmark = pytest.mark.timeout(120)

SLOW_OK = UpstreamSettings(timeout=60, probe_timeout=5)


@pytest.fixture(scope="module")
async def upstream_minerva(joe: PiperSynthesizer) -> AsyncIterator[RealMinerva]:  # noqa: F811
    async with real_minerva(joe) as served:
        yield served


def command(speech: Speech, text: str) -> np.ndarray:
    pcm = speech.silence(0.2) + speech.say(text) + speech.silence(0.3)
    return float_audio(convert_pcm(pcm, AudioFormat(speech.rate, 2, 1)))


async def test_describe_and_probe_a_real_minerva(upstream_minerva: RealMinerva) -> None:
    asr = WyomingUpstream(upstream_minerva.url("asr"), SLOW_OK, expect="asr")
    info = await asr.describe()
    assert info.asr and info.asr[0].installed
    await asr.probe()
    wrong = WyomingUpstream(upstream_minerva.url("asr"), SLOW_OK, expect="tts")
    with pytest.raises(UpstreamUnavailable, match="no installed tts program"):
        await wrong.probe()


async def test_transcribe_through_a_real_minerva(upstream_minerva: RealMinerva, speech: Speech) -> None:
    asr = WyomingUpstream(upstream_minerva.url("asr"), SLOW_OK, expect="asr")
    info, segments = await asr.transcribe(command(speech, "Turn on the kitchen lights."), TranscriptionOptions("en"))
    assert "kitchen lights" in normalise("".join(s.text for s in segments))
    assert info.language == "en"
    _, nothing = await asr.transcribe(np.zeros(8000, np.float32), TranscriptionOptions("en"))
    assert nothing == []


async def test_synthesize_streams_pieces_with_their_format(upstream_minerva: RealMinerva, speech: Speech) -> None:
    tts = WyomingUpstream(upstream_minerva.url("tts"), SLOW_OK, expect="tts")
    await tts.probe()
    text = "Please close the garage door. Then turn off every light in the house."
    started = time.monotonic()
    arrivals: list[float] = []
    pieces: list[tuple[AudioFormat, bytes]] = []
    async for piece in tts.synthesize(text, "en_US-joe-medium"):
        arrivals.append(time.monotonic() - started)
        pieces.append(piece)
    assert {fmt for fmt, _ in pieces} == {AudioFormat(22050, 2, 1)}
    assert len(pieces) > 10
    assert arrivals[0] < 0.8 * arrivals[-1]  # the first sentence came while the longer second one was synthesized
    pcm = b"".join(p for _, p in pieces)
    heard = float_audio(convert_pcm(pcm, pieces[0][0]))
    asr = WyomingUpstream(upstream_minerva.url("asr"), SLOW_OK, expect="asr")
    _, segments = await asr.transcribe(heard, TranscriptionOptions("en"))
    assert "garage door" in normalise("".join(s.text for s in segments))


async def test_an_unknown_voice_is_a_rejection_not_an_outage(upstream_minerva: RealMinerva) -> None:
    tts = WyomingUpstream(upstream_minerva.url("tts"), SLOW_OK, expect="tts")
    with pytest.raises(UpstreamRejected, match="model_not_found"):
        async for _ in tts.synthesize("Hello.", "xx_XX-nobody-low"):
            pytest.fail("no audio was expected")


# ---- failures -------------------------------------------------------------------------------------


class Scripted:
    """A fake Wyoming handler: answers every request event with `answer(sink)`."""

    def __init__(
        self, sink: EventSink, answer: Callable[[EventSink], Awaitable[bool]], seen: list[Event] | None = None
    ) -> None:
        self.sink = sink
        self.answer = answer
        self.seen = seen if seen is not None else []

    @property
    def busy(self) -> bool:
        return False

    async def handle_event(self, event: Event) -> bool:
        self.seen.append(event)
        if event.type in ("audio-stop", "synthesize"):
            return await self.answer(self.sink)
        return True

    async def disconnect(self) -> None:
        return None


def error(code: str) -> Callable[[EventSink], Awaitable[bool]]:
    async def answer(sink: EventSink) -> bool:
        await sink.send(Error(text=f"fake {code}", code=code).event())
        return True

    return answer


async def one_chunk_then_close(sink: EventSink) -> bool:
    await sink.send(AudioStart(rate=16000, width=2, channels=1).event())
    await sink.send(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(640)).event())
    return False  # closes the connection


@pytest.mark.parametrize(
    ("code", "error_class"),
    [("queue_full", UpstreamUnavailable), ("internal_error", UpstreamUnavailable), ("bad_request", UpstreamRejected)],
)
async def test_error_events_become_upstream_errors(code: str, error_class: type[Exception]) -> None:
    seen: list[Event] = []
    async with wyoming_server("asr", lambda sink: Scripted(sink, error(code), seen)) as server:
        upstream = WyomingUpstream(parse_upstream_url(f"tcp://127.0.0.1:{server.port}"), FAST)
        options = TranscriptionOptions(language="de", hotwords="Minerva, Küche")
        with pytest.raises(error_class, match=f"answered error {code}: fake {code}"):
            await upstream.transcribe(np.zeros(24000, np.float32), options)
        assert [e.type for e in seen] == ["transcribe", "audio-start", "audio-chunk", "audio-chunk", "audio-stop"]
        assert seen[0].data == {"language": "de", "transcript_terms": ["Minerva", "Küche"]}
        assert sum(len(e.payload or b"") for e in seen) == 48000
        with pytest.raises(error_class):
            async for _ in upstream.synthesize("Hello."):
                pass


async def test_a_close_mid_answer_comes_after_the_audio_already_sent() -> None:
    async with wyoming_server("tts", lambda sink: Scripted(sink, one_chunk_then_close)) as server:
        upstream = WyomingUpstream(parse_upstream_url(f"tcp://127.0.0.1:{server.port}"), FAST)
        got = []
        with pytest.raises(UpstreamUnavailable, match="closed the connection mid-answer"):
            async for piece in upstream.synthesize("Hello."):
                got.append(piece)
        assert got == [(AudioFormat(16000, 2, 1), bytes(640))]
        with pytest.raises(UpstreamUnavailable, match="closed the connection mid-answer"):
            await upstream.transcribe(np.zeros(1600, np.float32), TranscriptionOptions())


async def test_a_hung_upstream_times_out() -> None:
    async with silent_tcp() as port:
        upstream = WyomingUpstream(parse_upstream_url(f"tcp://127.0.0.1:{port}"), FAST, expect="asr")
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable, match="no answer"):
            await upstream.probe()
        with pytest.raises(UpstreamUnavailable, match=r"no answer within 1\.5 s"):
            await upstream.transcribe(np.zeros(1600, np.float32), TranscriptionOptions())
        assert time.monotonic() - started < 10


async def test_a_refused_connection_is_unavailable() -> None:
    upstream = WyomingUpstream(parse_upstream_url(f"tcp://127.0.0.1:{closed_port()}"), FAST, expect="tts")
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await upstream.probe()
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        async for _ in upstream.synthesize("Hello."):
            pass
