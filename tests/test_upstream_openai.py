"""The OpenAI-compatible upstream client against a scriptable fake server and a real minerva HTTP API."""

from __future__ import annotations

import io
import json
import time
import wave
from collections.abc import AsyncIterator

import numpy as np
import pytest
from conftest import Speech, normalise
from tts_helpers import joe  # noqa: F401  (the session's bundled voice, a fixture)
from upstream_helpers import FAST, FakeOpenAI, RealMinerva, closed_port, fake_openai, float_audio, real_minerva

from wyoming_minerva.audio import AudioFormat, convert_pcm
from wyoming_minerva.stt.engine import TranscriptionOptions
from wyoming_minerva.tts.piper import PiperSynthesizer
from wyoming_minerva.upstream import (
    UpstreamRejected,
    UpstreamSettings,
    UpstreamUnavailable,
    parse_upstream_url,
)
from wyoming_minerva.upstream.openai import OpenAIUpstream

pytestmark = pytest.mark.timeout(120)

SECOND = np.zeros(16000, dtype=np.float32)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[OpenAIUpstream]:
    upstream = OpenAIUpstream(fake.url, FAST)
    yield upstream
    await upstream.aclose()


def uploaded_wav(body: bytes) -> tuple[int, int, int, int]:
    """(rate, width, channels, frames) of the WAV inside a multipart body."""
    start = body.index(b"RIFF")
    with wave.open(io.BytesIO(body[start:]), "rb") as wav:
        return wav.getframerate(), wav.getsampwidth(), wav.getnchannels(), wav.getnframes()


async def test_transcribe_posts_a_16k_wav_and_reads_verbose_json(fake: FakeOpenAI, client: OpenAIUpstream) -> None:
    options = TranscriptionOptions(language="en", initial_prompt="Kitchen", hotwords="Minerva", word_timestamps=True)
    info, segments = await client.transcribe(SECOND, options)
    assert (info.language, info.duration) == ("en", 2.5)
    assert [s.text for s in segments] == [" Turn on", " the kitchen lights."]
    assert [w.text for w in segments[0].words] == ["Turn", "on"]
    assert [w.text for w in segments[1].words] == ["the", "kitchen", "lights."]
    assert segments[0].no_speech_prob == pytest.approx(0.01)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/audio/transcriptions")
    assert request.headers["authorization"] == "Bearer sk-test-secret"
    assert request.field("model") == "whisper-1"
    assert request.field("response_format") == "verbose_json"
    assert request.field("language") == "en"
    assert request.field("prompt") == "Kitchen Minerva"
    assert request.fields("timestamp_granularities[]") == ["segment", "word"]
    assert uploaded_wav(request.body) == (16000, 2, 1, 16000)


async def test_a_language_name_is_kept_when_none_was_asked_for(client: OpenAIUpstream) -> None:
    info, _ = await client.transcribe(SECOND, TranscriptionOptions())
    assert info.language == "english"


async def test_translation_goes_to_the_translations_endpoint(fake: FakeOpenAI, client: OpenAIUpstream) -> None:
    await client.transcribe(SECOND, TranscriptionOptions(language="de", task="translate"))
    assert fake.paths() == ["/v1/audio/translations"]
    assert fake.requests[0].field("language") is None


async def test_an_upstream_without_verbose_json_is_asked_for_json_from_then_on(
    fake: FakeOpenAI, client: OpenAIUpstream
) -> None:
    fake.mode = "json_only"
    info, segments = await client.transcribe(SECOND, TranscriptionOptions(language="en"))
    assert [(s.start, s.end, s.text) for s in segments] == [(0.0, 1.0, " Turn on the kitchen lights.")]
    assert info.duration == 1.0
    await client.transcribe(SECOND, TranscriptionOptions(language="en"))
    assert [r.field("response_format") for r in fake.requests] == ["verbose_json", "json", "json"]


@pytest.mark.parametrize(
    ("mode", "error", "reason"),
    [
        ("500", UpstreamUnavailable, "HTTP 500: fake failure 500"),
        ("401", UpstreamUnavailable, "HTTP 401"),
        ("400", UpstreamRejected, "HTTP 400: fake failure 400"),
        ("close_mid", UpstreamUnavailable, "broke mid-answer"),
        ("hang", UpstreamUnavailable, r"no answer within 1\.5 s"),
    ],
)
async def test_failures_become_one_error_class(
    fake: FakeOpenAI, client: OpenAIUpstream, mode: str, error: type[Exception], reason: str
) -> None:
    fake.mode = mode
    started = time.monotonic()
    with pytest.raises(error, match=reason) as caught:
        await client.transcribe(SECOND, TranscriptionOptions(language="en"))
    assert time.monotonic() - started < 10
    assert "sk-test-secret" not in str(caught.value)
    assert isinstance(caught.value, UpstreamRejected) == (mode == "400")


async def test_a_refused_connection_is_unavailable() -> None:
    upstream = OpenAIUpstream(parse_upstream_url(f"http://127.0.0.1:{closed_port()}/v1"), FAST)
    try:
        with pytest.raises(UpstreamUnavailable, match="cannot connect"):
            await upstream.transcribe(SECOND, TranscriptionOptions())
        with pytest.raises(UpstreamUnavailable, match="cannot connect"):
            await upstream.probe()
    finally:
        await upstream.aclose()


async def test_synthesize_streams_24k_pcm_pieces(fake: FakeOpenAI, client: OpenAIUpstream) -> None:
    pieces = [piece async for piece in client.synthesize("Hello there.", speed=1.25)]
    assert {fmt for fmt, _ in pieces} == {AudioFormat(24000, 2, 1)}
    assert all(len(pcm) % 2 == 0 for _, pcm in pieces)
    assert sum(len(pcm) for _, pcm in pieces) == 14400  # the odd last byte is not half a sample
    [request] = fake.requests
    assert request.path == "/v1/audio/speech"
    assert json.loads(request.body) == {
        "model": "tts-1",
        "input": "Hello there.",
        "voice": "alloy",
        "response_format": "pcm",
        "speed": 1.25,
    }


async def test_synthesize_yields_audio_as_it_arrives(fake: FakeOpenAI, client: OpenAIUpstream) -> None:
    fake.speech_gap = 0.4
    started = time.monotonic()
    arrivals = [time.monotonic() - started async for _ in client.synthesize("Hello.")]
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] > 0.5  # not buffered until the end


async def test_synthesize_failing_after_the_first_piece_raises_after_it(
    fake: FakeOpenAI, client: OpenAIUpstream
) -> None:
    fake.mode = "close_mid"
    got: list[bytes] = []
    with pytest.raises(UpstreamUnavailable, match="mid-answer"):
        async for _, pcm in client.synthesize("Hello."):
            got.append(pcm)
    assert got == [bytes(4800)]


@pytest.mark.parametrize("mode", ["500", "close_before_body", "hang"])
async def test_synthesize_failing_before_audio_raises_before_any(
    fake: FakeOpenAI, client: OpenAIUpstream, mode: str
) -> None:
    fake.mode = mode
    with pytest.raises(UpstreamUnavailable):
        async for _ in client.synthesize("Hello."):
            pytest.fail("no audio was expected")


async def test_probe_uses_health_then_models(fake: FakeOpenAI, client: OpenAIUpstream) -> None:
    await client.probe()
    fake.health = 404
    other = OpenAIUpstream(fake.url, FAST)
    try:
        await other.probe()
        await other.probe()
    finally:
        await other.aclose()
    assert fake.paths() == ["/health", "/health", "/v1/models", "/v1/models"]
    fake.hang_probes = True
    with pytest.raises(UpstreamUnavailable, match="no answer within 1 s"):
        await client.probe()


# ---- a real minerva as the upstream -------------------------------------------------------------


@pytest.fixture(scope="module")
async def upstream_minerva(joe: PiperSynthesizer) -> AsyncIterator[RealMinerva]:  # noqa: F811
    async with real_minerva(joe) as served:
        yield served


async def test_a_real_minerva_transcribes_and_speaks(upstream_minerva: RealMinerva, speech: Speech) -> None:
    upstream = OpenAIUpstream(upstream_minerva.url("http"), UpstreamSettings(timeout=60))
    try:
        await upstream.probe()
        pcm = speech.say("Turn on the kitchen lights.") + speech.silence(0.3)
        audio = float_audio(convert_pcm(pcm, AudioFormat(speech.rate, 2, 1)))
        info, segments = await upstream.transcribe(audio, TranscriptionOptions(language="en"))
        assert "kitchen lights" in normalise("".join(s.text for s in segments))
        assert info.language == "en"
        assert segments[0].end > segments[0].start

        spoken = [piece async for piece in upstream.synthesize("Please close the garage door.", "alloy")]
        fmt = spoken[0][0]
        assert fmt == AudioFormat(24000, 2, 1)
        speech_pcm = b"".join(pcm for _, pcm in spoken)
        assert 1.0 < len(speech_pcm) / 48000 < 5.0
        heard = float_audio(convert_pcm(speech_pcm, fmt))
        _, back = await upstream.transcribe(heard, TranscriptionOptions(language="en"))
        assert "garage door" in normalise("".join(s.text for s in back))
    finally:
        await upstream.aclose()
