"""The HTTP API in-process (ASGI) with the real openai SDK, the bundled tiny.en and Piper voice.

Every endpoint, format and error; every limit answers with its status and the OpenAI envelope, and the next
request is served.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
from collections.abc import AsyncIterator

import openai
import pytest
from conftest import ENGLISH, Speech, fixture_path, local_stt, normalise
from http_helpers import CONTAINERS, Api, CountingBody, Engines, api, decode, encode, envelope_of, same_length

from wyoming_minerva.audio import read_wav
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, TtsSettings
from wyoming_minerva.tts.piper import TextToSpeech

pytestmark = pytest.mark.timeout(120)

KITCHEN = "Turn off the kitchen lights."
TWO_SENTENCES = "The lights are on. The front door is locked."


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[tuple[Engines, ModelManager]]:
    manager = ModelManager(workers=2, queue_size=8)
    await manager.start()
    stt = local_stt(manager, AsrSettings(models=ENGLISH))
    tts = TextToSpeech(TtsSettings(), manager, (), local_files_only=True)
    yield Engines(stt, tts), manager
    await manager.close()


@pytest.fixture
async def client(shared: tuple[Engines, ModelManager]) -> AsyncIterator[Api]:
    async with api(*shared) as a:
        yield a


def wav_upload(speech: Speech, text: str = KITCHEN) -> bytes:
    return encode(speech.say(text) + speech.silence(0.3), speech.rate, "wav", "pcm_s16le", speech.rate)


async def still_serves(a: Api, speech: Speech) -> None:
    result = await a.sdk.audio.transcriptions.create(file=("k.wav", wav_upload(speech)), model="whisper-1")
    assert "kitchen" in normalise(result.text)


# ---- transcription ---------------------------------------------------------------------------------------


async def test_fixture_recordings_in_every_container(client: Api) -> None:
    expected = {
        "asr/turn_on_the_living_room_lamp.wav": "turn on the living room lamp",  # 44.1 kHz stereo
        "asr/living_room_light_en.wav": "turn on the living room light",  # 16 kHz mono
    }
    for name, words in expected.items():
        data = fixture_path(name).read_bytes()
        result = await client.sdk.audio.transcriptions.create(file=("rec.wav", data), model="whisper-1")
        assert normalise(result.text) == words, name
        pcm, fmt = read_wav(data)
        for container, codec, rate, filename in CONTAINERS[1:]:
            upload = encode(pcm, fmt.rate, container, codec, rate, fmt.channels)
            result = await client.sdk.audio.transcriptions.create(file=(filename, upload), model="whisper-1")
            assert normalise(result.text) == words, (name, filename)


@pytest.mark.parametrize(("container", "codec", "rate", "filename"), CONTAINERS)
async def test_synthesized_speech_in_every_container(
    client: Api, speech: Speech, container: str, codec: str, rate: int, filename: str
) -> None:
    upload = encode(speech.say(KITCHEN) + speech.silence(0.3), speech.rate, container, codec, rate)
    result = await client.sdk.audio.transcriptions.create(file=(filename, upload), model="gpt-4o-transcribe")
    assert normalise(result.text) == "turn off the kitchen lights"
    assert result.usage is not None and result.usage.seconds == pytest.approx(
        len(speech.say(KITCHEN)) / 2 / speech.rate + 0.3, abs=0.1
    )


async def test_text_srt_vtt_and_verbose_json(client: Api, speech: Speech) -> None:
    upload = ("k.wav", wav_upload(speech, TWO_SENTENCES))
    text = await client.sdk.audio.transcriptions.create(file=upload, model="whisper-1", response_format="text")
    assert isinstance(text, str) and normalise(text) == "the lights are on the front door is locked"
    srt = await client.sdk.audio.transcriptions.create(file=upload, model="whisper-1", response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> 00:00:0" in srt and "locked" in srt
    vtt = await client.sdk.audio.transcriptions.create(file=upload, model="whisper-1", response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "locked" in vtt
    verbose = await client.sdk.audio.transcriptions.create(
        file=upload, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert normalise(verbose.text) == "the lights are on the front door is locked" and verbose.language == "english"
    assert verbose.segments and verbose.segments[0].start == 0.0 and verbose.segments[-1].end <= verbose.duration + 0.1
    words = verbose.words or []
    assert " ".join(normalise(w.word) for w in words) == "the lights are on the front door is locked"
    assert all(a.start <= b.start for a, b in itertools.pairwise(words)) and words[-1].end <= verbose.duration


async def test_language_prompt_and_temperature_are_accepted(client: Api, speech: Speech) -> None:
    result = await client.sdk.audio.transcriptions.create(
        file=("k.wav", wav_upload(speech)),
        model="whisper-1",
        language="en-US",
        prompt="Kitchen, lights.",
        temperature=0.2,
    )
    assert "kitchen" in normalise(result.text)


async def test_streaming_transcription_with_the_sdk(client: Api, speech: Speech) -> None:
    stream = await client.sdk.audio.transcriptions.create(
        file=("k.wav", wav_upload(speech, TWO_SENTENCES)), model="gpt-4o-mini-transcribe", stream=True
    )
    events = [event async for event in stream]
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1) and len(events) >= 2
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == "".join(e.delta for e in events[:-1]).strip()  # type: ignore[union-attr]
    assert normalise(done.text) == "the lights are on the front door is locked"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
async def test_translation_needs_a_multilingual_model(client: Api, speech: Speech) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.sdk.audio.translations.create(file=("k.wav", wav_upload(speech)), model="whisper-1")
    assert caught.value.code == "translation_unsupported" and "multilingual" in caught.value.message
    await still_serves(client, speech)


async def test_transcription_parameter_errors(client: Api, speech: Speech) -> None:
    upload = {"file": ("k.wav", wav_upload(speech), "audio/wav")}
    cases = [
        ({"model": "whisper-1"}, {}, "file"),  # no file
        ({"model": "whisper-1", "response_format": "xml"}, upload, "response_format"),
        ({"model": "whisper-1", "temperature": "2"}, upload, "temperature"),
        ({"model": "whisper-1", "language": "english!"}, upload, "language"),
        ({"model": "whisper-1", "timestamp_granularities[]": "word"}, upload, "timestamp_granularities"),
        ({"model": "whisper-1", "timestamp_granularities[]": "char", "response_format": "verbose_json"}, upload, None),
        ({"model": "whisper-1", "stream": "true", "response_format": "srt"}, upload, "stream"),
    ]
    for data, files, param in cases:
        response = await client.raw.post("/v1/audio/transcriptions", data=data, files=files or None)
        assert response.status_code == 400, (data, response.text)
        error = envelope_of(response)
        assert error["type"] == "invalid_request_error"
        if param:
            assert error["param"] == param, (data, error)
    # A hosted-service name routes by language; a local model name that is not installed is a 404.
    response = await client.raw.post("/v1/audio/transcriptions", data={"model": "gpt-transcribe"}, files=upload)
    assert response.status_code == 200, response.text
    response = await client.raw.post("/v1/audio/transcriptions", data={"model": "small-int8"}, files=upload)
    assert response.status_code == 404 and envelope_of(response)["code"] == "model_not_found"
    await still_serves(client, speech)


async def test_corrupt_empty_and_non_audio_uploads(client: Api, speech: Speech) -> None:
    good = encode(speech.say(KITCHEN), speech.rate, "mp3", "libmp3lame", 44100)
    cases = [
        (b"", 400, "empty_file"),
        (b"<html><body>not audio</body></html>\n" * 40, 415, "unsupported_audio"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200), 415, "unsupported_audio"),
        (good[:40] + bytes(len(good) - 40), 400, None),  # an mp3 header, then nothing decodable
    ]
    for data, status, code in cases:
        response = await client.raw.post(
            "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("x.mp3", data)}
        )
        assert response.status_code in ((400, 415) if code is None else (status,)), response.text
        error = envelope_of(response)
        assert error["param"] == "file" and (code is None or error["code"] == code), error
    await still_serves(client, speech)


# ---- speech ------------------------------------------------------------------------------------------------


async def test_speech_in_every_format_decodes_back(client: Api) -> None:
    media = {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }
    lengths: dict[str, float] = {}
    for fmt, media_type in media.items():
        async with client.sdk.audio.speech.with_streaming_response.create(
            model="tts-1",
            voice="alloy",
            input=TWO_SENTENCES,
            response_format=fmt,  # type: ignore[arg-type]
        ) as response:
            assert response.headers["content-type"].startswith(media_type), fmt
            data = await response.read()
        if fmt == "pcm":
            lengths[fmt] = len(data) / 2 / 24000  # raw s16le mono at 24 kHz
            continue
        decoded = decode(data)
        assert decoded.rate == (48000 if fmt == "opus" else 24000), fmt  # Opus decoders always give 48 kHz
        assert decoded.peak > 0.1, fmt
        lengths[fmt] = decoded.seconds
    assert lengths["wav"] > 2.0
    for fmt, seconds in lengths.items():
        assert same_length(fmt, seconds, lengths["wav"]), (fmt, lengths)


async def test_speech_speaks_the_text(client: Api) -> None:
    wav = (
        await client.sdk.audio.speech.create(model="tts-1-hd", voice="nova", input=KITCHEN, response_format="wav")
    ).content
    result = await client.sdk.audio.transcriptions.create(file=("s.wav", wav), model="whisper-1")
    assert normalise(result.text) == "turn off the kitchen lights"


async def test_speed_changes_the_length(client: Api) -> None:
    async def seconds(speed: float) -> float:
        response = await client.sdk.audio.speech.create(
            model="tts-1", voice="echo", input=TWO_SENTENCES, response_format="pcm", speed=speed
        )
        return len(response.content) / 2 / 24000

    normal, fast, slow = await seconds(1.0), await seconds(2.0), await seconds(0.5)
    assert fast < normal * 0.8 and slow > normal * 1.4  # the pause between sentences does not scale


async def test_speech_sse_stream(client: Api) -> None:
    async with client.sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input=TWO_SENTENCES,
        response_format="pcm",
        stream_format="sse",
        instructions="None",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.iter_lines()]
    events = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * (len(events) - 1) + ["speech.audio.done"]
    assert len(events) >= 3  # a delta per sentence at least
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    plain = await client.sdk.audio.speech.create(
        model="tts-1", voice="coral", input=TWO_SENTENCES, response_format="pcm"
    )
    assert len(pcm) == len(plain.content)


async def test_voice_names_objects_and_local_voices(client: Api) -> None:
    for voice in ("shimmer", {"id": "cedar"}, "en_US-joe-medium", "joe"):
        response = await client.raw.post(
            "/v1/audio/speech", json={"model": "tts-1", "voice": voice, "input": "Hi.", "response_format": "wav"}
        )
        assert response.status_code == 200, (voice, response.text)
    # a local voice name as the model, OpenAI-style clients that only let users pick a model
    response = await client.raw.post("/v1/audio/speech", json={"model": "en_US-joe-medium", "input": "Hi."})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"


async def test_speech_errors_come_before_the_first_byte(client: Api, speech: Speech) -> None:
    cases = [
        ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": 4.5}, 400, "speed"),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": 0.2}, 400, "speed"),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "ogg"}, 400, "response_format"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": ""}, 400, None),
        ({"model": "tts-1", "voice": "alloy", "input": "```\ncode only\n```"}, 400, None),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 10_001}, 400, None),
        ({"model": "tts-1", "voice": "no-such-voice", "input": "Hi."}, 400, "voice"),
        ({"model": " ", "voice": "alloy", "input": "Hi."}, 400, "model"),
    ]
    for body, status, param in cases:
        response = await client.raw.post("/v1/audio/speech", json=body)
        assert response.status_code == status, (body, response.text[:200])
        error = envelope_of(response)
        if param:
            assert error["param"] == param, (body, error)
    response = await client.raw.post(
        "/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in envelope_of(response)["message"]
    with pytest.raises(openai.BadRequestError):
        await client.sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9)
    await still_serves(client, speech)


# ---- catalog -------------------------------------------------------------------------------------------


async def test_models_and_voices(shared: tuple[Engines, ModelManager]) -> None:
    async with api(*shared, voice_map=(("nova", "en_US-joe-medium"),)) as a:
        models = {m.id: m for m in (await a.sdk.models.list()).data}
        assert {"whisper-1", "gpt-4o-transcribe", "tiny.en", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper"} <= set(
            models
        )
        assert "en_US-joe-medium" in models and models["whisper-1"].owned_by == "wyoming-minerva"
        assert (await a.sdk.models.retrieve("whisper-1")).id == "whisper-1"
        with pytest.raises(openai.NotFoundError):
            await a.sdk.models.retrieve("gpt-5")
        audio_models = (await a.raw.get("/v1/audio/models")).json()["models"]
        assert {"id": "tts-1", "name": "tts-1"} in audio_models
        voices = {v["id"]: v for v in (await a.raw.get("/v1/audio/voices")).json()["voices"]}
        assert voices["en_US-joe-medium"]["languages"] == ["en_US"]
        assert voices["nova"]["maps_to"] == "en_US-joe-medium" and voices["alloy"]["maps_to"] == "en_US-joe-medium"
        assert len([v for v in voices.values() if v["maps_to"]]) == 13


# ---- limits and the gate ---------------------------------------------------------------------------------


async def test_upload_over_the_cap_is_refused_before_it_is_read(
    shared: tuple[Engines, ModelManager], speech: Speech
) -> None:
    async with api(*shared, max_upload_mb=1.0) as a:
        # Content-Length says too much: 413 at once, not one chunk pulled.
        body = CountingBody(bytes(256 * 1024), 40)
        headers = {"content-type": body.CONTENT_TYPE, "content-length": str(body.total)}
        response = await a.raw.post("/v1/audio/transcriptions", content=body, headers=headers)
        assert response.status_code == 413 and envelope_of(response)["code"] == "request_too_large"
        assert body.pulled == 0
        # No Content-Length (chunked): counted as it streams, cut just past the cap (1 MiB + 64 KiB slack).
        body = CountingBody(bytes(256 * 1024), 40)
        response = await a.raw.post(
            "/v1/audio/transcriptions", content=body, headers={"content-type": body.CONTENT_TYPE}
        )
        assert response.status_code == 413 and envelope_of(response)["code"] == "request_too_large"
        assert body.pulled <= 6 < body.count
        # An ordinary upload under the cap still works.
        await still_serves(a, speech)


async def test_audio_over_the_duration_cap(shared: tuple[Engines, ModelManager], speech: Speech) -> None:
    async with api(*shared, max_audio_seconds=1.0) as a:
        with pytest.raises(openai.APIStatusError) as caught:
            await a.sdk.audio.transcriptions.create(file=("k.wav", wav_upload(speech)), model="whisper-1")
        assert caught.value.status_code == 413 and caught.value.code == "audio_too_long"
        short = encode(speech.say("Hi."), speech.rate, "wav", "pcm_s16le", 16000)
        await a.sdk.audio.transcriptions.create(file=("hi.wav", short), model="whisper-1")


async def test_api_key(shared: tuple[Engines, ModelManager], speech: Speech) -> None:
    async with api(*shared, api_key="s3cret") as a:
        assert (await a.raw.get("/health")).status_code == 200  # open: liveness probes carry no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cre"}):
            response = await a.raw.get("/v1/models", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert envelope_of(response)["code"] == "invalid_api_key"
        assert (await a.raw.get("/ready")).status_code == 401
        assert (await a.raw.get("/v1/models", headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await a.raw.get("/v1/models", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        # Refused before the body is read.
        body = CountingBody(bytes(64 * 1024), 8)
        response = await a.raw.post(
            "/v1/audio/transcriptions", content=body, headers={"content-type": body.CONTENT_TYPE}
        )
        assert response.status_code == 401 and body.pulled == 0
        await still_serves(a, speech)  # the SDK sends Authorization: Bearer s3cret
        wrong = openai.AsyncOpenAI(api_key="wrong", base_url=a.sdk.base_url, http_client=a.sdk._client, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        schemes = a.app.openapi()["components"]["securitySchemes"]
        assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    async with api(*shared) as a:  # no key configured: whatever a client sends is fine
        assert (await a.raw.get("/v1/models", headers={"Authorization": "Bearer anything"})).status_code == 200
        assert "securitySchemes" not in a.app.openapi().get("components", {})


async def test_cors(shared: tuple[Engines, ModelManager]) -> None:
    preflight = {
        "Origin": "https://webui.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with api(*shared, cors_origins=("https://webui.example",), api_key="k") as a:
        response = await a.raw.options("/v1/audio/speech", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://webui.example"
        assert response.headers["access-control-allow-credentials"] == "true"
        response = await a.raw.options("/v1/audio/speech", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers
        refused = await a.raw.get("/v1/models", headers={"Origin": "https://webui.example"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://webui.example"
    async with api(*shared, cors_origins=("*",)) as a:
        response = await a.raw.options("/v1/audio/speech", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers  # never * with credentials
    async with api(*shared) as a:  # no origins configured: no CORS headers at all
        response = await a.raw.get("/v1/models", headers={"Origin": "https://webui.example"})
        assert "access-control-allow-origin" not in response.headers


class Blocker:
    """Holds inference slots with jobs that wait for release(): a full queue on demand."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.event = threading.Event()
        self.jobs: list[asyncio.Task[bool]] = []

    def hold(self, count: int) -> None:
        self.jobs += [asyncio.create_task(self.manager.run(self.event.wait, 30)) for _ in range(count)]

    async def release(self) -> None:
        self.event.set()
        await asyncio.gather(*self.jobs)


async def test_full_queue_is_429_with_retry_after(speech: Speech) -> None:
    manager = ModelManager(workers=1, queue_size=1)  # capacity 2: easy to fill
    await manager.start()
    stt = local_stt(manager, AsrSettings(models=ENGLISH))
    tts = TextToSpeech(TtsSettings(), manager, (), local_files_only=True)
    blocker = Blocker(manager)
    try:
        async with api(Engines(stt, tts), manager, max_concurrency=8) as a:
            await asyncio.sleep(0)
            blocker.hold(manager.capacity)
            await asyncio.sleep(0.05)
            assert (await a.raw.get("/ready")).status_code == 503
            response = await a.raw.post(
                "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("k.wav", wav_upload(speech))}
            )
            assert response.status_code == 429 and response.headers["retry-after"] == "1"
            assert envelope_of(response)["code"] == "queue_full"
            response = await a.raw.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "alloy"})
            assert response.status_code == 429 and envelope_of(response)["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError):
                await a.sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi again.")
            metrics = (await a.raw.get("/metrics")).text
            assert 'minerva_http_errors_total{code="queue_full"} 3.0' in metrics
            assert "minerva_inference_queue_depth 2.0" in metrics
            await blocker.release()
            assert (await a.raw.get("/ready")).status_code == 200
            await still_serves(a, speech)
    finally:
        await blocker.release()
        await manager.close()


async def test_concurrency_gate_refuses_before_reading(shared: tuple[Engines, ModelManager], speech: Speech) -> None:
    engines, manager = shared
    blocker = Blocker(manager)
    async with api(engines, manager, max_concurrency=1) as a:
        blocker.hold(manager.workers)  # every worker busy: the first request waits in the queue
        first = asyncio.create_task(
            a.sdk.audio.transcriptions.create(file=("k.wav", wav_upload(speech)), model="whisper-1")
        )
        async with asyncio.timeout(10):
            while a.app.state.minerva.gate.active == 0:  # noqa: ASYNC110 - polling the app's own counter
                await asyncio.sleep(0.01)
        body = CountingBody(bytes(64 * 1024), 4)
        response = await a.raw.post(
            "/v1/audio/transcriptions", content=body, headers={"content-type": body.CONTENT_TYPE}
        )
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert envelope_of(response)["code"] == "server_busy" and body.pulled == 0
        assert (await a.raw.get("/v1/models")).status_code == 200  # cheap routes are not gated
        await blocker.release()
        assert "kitchen" in normalise((await first).text)
        assert a.app.state.minerva.gate.active == 0


async def test_a_missing_engine_is_503(shared: tuple[Engines, ModelManager], speech: Speech) -> None:
    engines, manager = shared
    async with api(Engines(stt=None, tts=engines.tts), manager) as a:
        response = await a.raw.post(
            "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("k.wav", wav_upload(speech))}
        )
        assert response.status_code == 503 and envelope_of(response)["code"] == "service_unavailable"
        assert (await a.raw.post("/v1/audio/speech", json={"input": "Still here."})).status_code == 200
        assert "whisper-1" not in {m.id for m in (await a.sdk.models.list()).data}


# ---- operations ------------------------------------------------------------------------------------------


async def test_health_ready_metrics(client: Api, speech: Speech) -> None:
    assert (await client.raw.get("/health")).json() == {"status": "ok"}
    ready = (await client.raw.get("/ready")).json()
    assert ready["status"] == "ready" and set(ready["checks"]) == {"queue", "http", "speech_to_text", "text_to_speech"}
    await still_serves(client, speech)
    await client.raw.get("/v1/no-such-thing")
    response = await client.raw.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'minerva_http_requests_total{method="POST",route="/v1/audio/transcriptions",status="200"} 1.0' in text
    assert 'minerva_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'minerva_http_errors_total{code="not_found"} 1.0' in text
    assert 'minerva_model_loaded{model="stt:tiny.en"} 1.0' in text
    assert "minerva_inference_queue_capacity 10.0" in text
    assert "minerva_http_request_duration_seconds_bucket" in text


async def test_unknown_routes_and_methods_use_the_envelope(client: Api) -> None:
    response = await client.raw.get("/v1/audio/transcriptions")
    assert response.status_code == 405 and envelope_of(response)["code"] == "method_not_allowed"
    response = await client.raw.get("/v2/anything")
    assert response.status_code == 404 and envelope_of(response)["code"] == "not_found"


async def test_openapi_is_accurate(client: Api) -> None:
    schema = (await client.raw.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/audio/speech",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/audio/models",
        "/v1/audio/voices",
        "/health",
        "/ready",
        "/metrics",
    }
    assert expected <= set(paths)
    text = json.dumps(schema)
    assert '"422"' not in text and "HTTPValidationError" not in text  # validation errors are 400 envelopes
    transcribe = paths["/v1/audio/transcriptions"]["post"]
    assert {"200", "400", "401", "413", "415", "429"} <= set(transcribe["responses"])
    form_ref = transcribe["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][form_ref]["properties"]
    assert {
        "file",
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "stream",
    } <= set(fields)
    speech = schema["components"]["schemas"]["SpeechRequest"]["properties"]
    assert speech["speed"]["minimum"] == 0.25 and speech["speed"]["maximum"] == 4.0
    assert set(speech["response_format"]["enum"]) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    assert "audio/mpeg" in paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert (await client.raw.get("/docs")).status_code == 200
