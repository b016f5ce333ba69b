"""Upstreams wired into the server, end to end on loopback: a real minerva process is the upstream of an in-process
App (Home Assistant's exact ASR and streaming TTS flows, the HTTP API, /ready, /metrics), SIGSTOP/SIGCONT of the
upstream, fake upstreams that close mid-answer, and a pure proxy (--no-local-fallback) with nothing up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from asr_helpers import read_until, send_audio, transcript_text
from conftest import ENGLISH, Speech, normalise, wyoming_client
from tts_helpers import read_answer, send_stream
from upstream_helpers import closed_port, fake_openai
from ws_helpers import connect, receive_json, receive_until, send_paced
from wyoming.asr import Transcribe
from wyoming.audio import AudioStop
from wyoming.tts import Synthesize

from wyoming_minerva.app import App
from wyoming_minerva.audio import wav_bytes
from wyoming_minerva.settings import AsrSettings, DiscoverySettings, HttpSettings, ListenUri, Service, Settings
from wyoming_minerva.upstream import UpstreamPool, UpstreamSettings, UpstreamUnavailable, parse_upstream_url
from wyoming_minerva.upstream.health import Outcome, State
from wyoming_minerva.upstream.wyoming import WyomingUpstream

pytestmark = pytest.mark.timeout(300)

# Generous for a loaded 2-core machine: a decode may take seconds, a probe must not hang the test.
REAL = UpstreamSettings(timeout=60, probe_interval=0.5, probe_timeout=3.0, failures=2, backoff_max=2.0)
FAST = UpstreamSettings(timeout=5, probe_interval=0.3, probe_timeout=1.0, failures=2, backoff_max=1.0)
TWO_SENTENCES = "The front door is locked. The kitchen lights are now on."


def nearly(heard: str, expected: str) -> bool:
    """The same words but at most one: Piper samples its noise anew each time, so tiny.en may hear one short word of
    the bundled voice differently ("now in" for "now on", "plus" for "close")."""
    said, wanted = normalise(heard).split(), normalise(expected).split()
    return len(said) == len(wanted) and sum(a != b for a, b in zip(said, wanted, strict=True)) <= 1


@dataclass
class UpstreamProcess:
    proc: asyncio.subprocess.Process
    asr_port: int
    tts_port: int
    http_port: int

    @property
    def stt_url(self) -> str:
        return f"tcp://127.0.0.1:{self.asr_port}"

    @property
    def tts_url(self) -> str:
        return f"tcp://127.0.0.1:{self.tts_port}"

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            return (await client.get(f"http://127.0.0.1:{self.http_port}/metrics")).text


@pytest.fixture(scope="module")
async def upstream(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UpstreamProcess]:
    """`python -m wyoming_minerva` as another minerva's upstream (as docs/upstream.md runs one: no endpointing);
    always continued and stopped by its PID."""
    log = tmp_path_factory.mktemp("upstream") / "minerva.log"
    ports = [closed_port() for _ in range(3)]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "wyoming_minerva", "--no-zeroconf", "--no-endpointing", "--local-files-only"),
            *("--stt-model", "tiny.en", "--asr-uri", f"tcp://127.0.0.1:{ports[0]}"),
            *("--tts-uri", f"tcp://127.0.0.1:{ports[1]}", "--http", f"127.0.0.1:{ports[2]}"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )
    served = UpstreamProcess(proc, *ports)
    try:
        for url, expect in ((served.stt_url, "asr"), (served.tts_url, "tts")):
            probe = WyomingUpstream(parse_upstream_url(url), REAL, expect=expect)
            async with asyncio.timeout(90):
                while True:
                    assert proc.returncode is None, log.read_text()
                    with contextlib.suppress(UpstreamUnavailable):
                        await probe.probe()
                        break
                    await asyncio.sleep(0.3)
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def settings_with(upstreams: UpstreamSettings) -> Settings:
    loopback = ListenUri("tcp", "127.0.0.1", 0)
    return Settings(
        asr_uri=loopback,
        tts_uri=loopback,
        http=HttpSettings(host="127.0.0.1", port=0),
        discovery=DiscoverySettings(enabled=False),
        local_files_only=True,
        workers=2,
        queue_size=8,
        shutdown_grace_seconds=2,
        asr=AsrSettings(models=ENGLISH),
        upstream=upstreams,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[App]:
    app = App(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return time.monotonic() - started
            await asyncio.sleep(0.05)


def pool(app: App, service: str) -> UpstreamPool[Any]:
    found = app.stt_pool if service == "stt" else app.tts_pool
    assert found is not None
    return found


@pytest.fixture(scope="module")
async def front(upstream: UpstreamProcess) -> AsyncIterator[App]:
    """The minerva Home Assistant talks to, with the process above as its upstream for both services."""
    upstreams = replace(REAL, stt=(parse_upstream_url(upstream.stt_url),), tts=(parse_upstream_url(upstream.tts_url),))
    async with running(settings_with(upstreams)) as app:
        await until(lambda: all(b.state is State.UP for s in ("stt", "tts") for b in pool(app, s).backends), 20)
        yield app


def local_loaded(app: App) -> set[str]:
    return set(app.manager.stats().loaded)


async def post_transcription(app: App, wav: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as client:
        return await client.post(
            f"http://127.0.0.1:{app.http_port}/v1/audio/transcriptions",
            files={"file": ("command.wav", wav, "audio/wav")},
            data={"model": "whisper-1", "language": "en"},
        )


def command_wav(speech: Speech, text: str) -> bytes:
    return wav_bytes(speech.silence(0.2) + speech.say(text) + speech.silence(0.3), speech.rate)


# ---- a real minerva as the upstream -------------------------------------------------------------------------


async def test_home_assistant_asr_is_endpointed_here_and_decoded_upstream(
    front: App, upstream: UpstreamProcess, speech: Speech
) -> None:
    command = speech.say("Turn off the bedroom fan.")
    async with wyoming_client(front.port(Service.ASR)) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, command + speech.silence(3.0), speech.rate)
        # No audio-stop yet: the end of speech is found here, the transcript still comes before audio-stop.
        events = await read_until(client, "transcript-stop", timeout=60)
        await client.write_event(AudioStop().event())
    assert nearly(transcript_text(events), "turn off the bedroom fan")
    stt = pool(front, "stt")
    assert stt.backends[0].stats.requests[Outcome.OK] >= 1 and stt.local.requests[Outcome.OK] == 0
    assert front.engines.stt is not None and front.engines.stt.key not in local_loaded(front)  # never loaded here
    assert re.search(r'minerva_model_loaded\{model="stt:tiny.en"\} 1\.0', await upstream.metrics())


async def test_home_assistant_streaming_tts_comes_from_the_upstream_in_one_format(
    front: App, upstream: UpstreamProcess
) -> None:
    async with wyoming_client(front.port(Service.TTS)) as client:
        await send_stream(client, TWO_SENTENCES)
        answer = await read_answer(client, "synthesize-stopped")
    assert "error" not in answer.types, answer.events
    assert answer.types.count("audio-start") == 1 and answer.formats() == {(22050, 2, 1)}  # the local voice's
    assert answer.seconds() > 2.0
    tts = pool(front, "tts")
    assert tts.backends[0].stats.requests[Outcome.OK] == 1 and tts.local.requests[Outcome.OK] == 0
    assert not any(key.startswith("piper:") for key in local_loaded(front))  # the local voice never loaded
    assert re.search(r'minerva_model_loaded\{model="piper:[^"]+"\} 1\.0', await upstream.metrics())
    # The words survive the trip: the audio, transcribed (upstream again), says the text.
    result = await post_transcription(front, wav_bytes(answer.audio, 22050))
    assert result.status_code == 200, result.text
    assert nearly(result.json()["text"], TWO_SENTENCES)


async def test_http_speech_is_converted_to_24k_and_ready_and_metrics_list_the_backends(front: App) -> None:
    base = f"http://127.0.0.1:{front.http_port}"
    async with httpx.AsyncClient(timeout=120) as client:
        body = {"model": "tts-1", "input": "The garage door is open.", "response_format": "pcm"}
        pcm = (await client.post(f"{base}/v1/audio/speech", json=body)).content
        assert 1.0 < len(pcm) / 2 / 24000 < 4.0  # 24 kHz, converted from the upstream voice's 22.05 kHz
        ready = (await client.get(f"{base}/ready")).json()
        metrics = (await client.get(f"{base}/metrics")).text
    assert ready["status"] == "ready"
    states = {(b["service"], b["backend"]): b["state"] for b in ready["backends"]}
    assert states == {
        ("stt", pool(front, "stt").backends[0].label): "up",
        ("stt", "local"): "up",
        ("tts", pool(front, "tts").backends[0].label): "up",
        ("tts", "local"): "up",
    }
    assert ready["checks"]["speech_to_text_upstreams"]["ok"] and ready["checks"]["text_to_speech_upstreams"]["ok"]
    label = pool(front, "tts").backends[0].label
    assert re.search(rf'minerva_backend_requests_total\{{backend="{label}",outcome="ok",service="tts"\}} 2\.0', metrics)
    assert f'minerva_backend_up{{backend="{label}",service="tts"}} 1.0' in metrics
    assert "minerva_backend_latency_seconds_bucket" in metrics


async def test_a_stopped_upstream_is_left_for_the_local_engine_and_taken_back_when_it_continues(
    front: App, upstream: UpstreamProcess, speech: Speech
) -> None:
    stt = pool(front, "stt")
    backend = stt.backends[0]
    served_upstream = backend.stats.requests[Outcome.OK]
    upstream.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = await post_transcription(front, command_wav(speech, "Open the garage door."))
        elapsed = time.monotonic() - started
        assert result.status_code == 200, result.text
        assert nearly(result.json()["text"], "open the garage door")
        assert stt.local.requests[Outcome.OK] == 1 and backend.state is State.DOWN
        # about two probe timeouts to notice, then one local decode (the model loads now: a few seconds more)
        assert elapsed < 2 * (REAL.probe_interval + REAL.probe_timeout) + 30, elapsed
        async with httpx.AsyncClient(timeout=30) as client:
            ready = await client.get(f"http://127.0.0.1:{front.http_port}/ready")
        assert ready.status_code == 200, ready.text  # the local fallback still answers
        assert {b["backend"]: b["state"] for b in ready.json()["backends"] if b["service"] == "stt"}[
            backend.label
        ] == "down"
    finally:
        upstream.proc.send_signal(signal.SIGCONT)
    await until(lambda: backend.state is State.UP, REAL.backoff_max + REAL.probe_timeout + 20)
    result = await post_transcription(front, command_wav(speech, "Close the garage door."))
    assert nearly(result.json()["text"], "close the garage door")
    assert backend.stats.requests[Outcome.OK] == served_upstream + 1 and stt.local.requests[Outcome.OK] == 1
    print(f"stopped upstream: answered locally after {elapsed:.2f} s")


# ---- fake upstreams ----------------------------------------------------------------------------------------


async def test_fake_upstreams_audio_is_converted_and_a_failure_mid_answer_is_retried_locally_once(
    speech: Speech,
) -> None:
    async with (
        fake_openai() as fake_stt,
        fake_openai() as fake_tts,
        running(settings_with(replace(FAST, stt=(fake_stt.url,), tts=(fake_tts.url,)))) as app,
    ):
        # Healthy: 24 kHz PCM from an OpenAI-compatible upstream becomes the local voice's 22.05 kHz.
        async with wyoming_client(app.port(Service.TTS)) as client:
            await client.write_event(Synthesize(text="Hello there.").event())
            answer = await read_answer(client, "audio-stop")
        assert answer.formats() == {(22050, 2, 1)} and "error" not in answer.types
        assert abs(answer.seconds() - sum(map(len, fake_tts.speech)) // 2 / 24000) < 0.02
        # Live sessions decode here (the fake would have said "turn on the kitchen lights").
        assert nearly(await live_final(app, speech, "What time is it?"), "what time is it")
        assert not [r for r in fake_stt.requests if r.method == "POST"]
        # Failing before any audio (closed before the body; closed mid-JSON): the same request, locally, once.
        fake_stt.mode, fake_tts.mode = "close_mid", "close_before_body"
        stt_posts, tts_posts = len(fake_stt.requests), len(fake_tts.requests)
        result = await post_transcription(app, command_wav(speech, "Turn on the porch light."))
        assert result.status_code == 200, result.text
        assert nearly(result.json()["text"], "turn on the porch light")
        async with wyoming_client(app.port(Service.TTS)) as client:
            await client.write_event(Synthesize(text=TWO_SENTENCES).event())
            answer = await read_answer(client, "audio-stop")
        assert "error" not in answer.types and answer.types.count("audio-start") == 1
        assert answer.formats() == {(22050, 2, 1)} and answer.seconds() > 2.0
    posts = [r for r in fake_stt.requests[stt_posts:] if r.method == "POST"]
    speech_posts = [r for r in fake_tts.requests[tts_posts:] if r.method == "POST"]
    assert len(posts) == 1 and len(speech_posts) == 1  # tried once, then the local engine answered
    assert pool(app, "stt").local.requests[Outcome.OK] == 1 and pool(app, "tts").local.requests[Outcome.OK] == 1


async def test_a_pure_proxy_with_nothing_up_answers_503_with_retry_after_and_service_unavailable(
    speech: Speech,
) -> None:
    nobody = (parse_upstream_url(f"tcp://127.0.0.1:{closed_port()}"),)
    async with running(settings_with(replace(FAST, stt=nobody, tts=nobody, local_fallback=False))) as app:
        await until(lambda: not pool(app, "stt").in_rotation() and not pool(app, "tts").in_rotation(), 10)
        result = await post_transcription(app, command_wav(speech, "Turn on the porch light."))
        assert result.status_code == 503, result.text
        assert int(result.headers["retry-after"]) >= 1
        assert result.json()["error"]["code"] == "service_unavailable"
        async with httpx.AsyncClient(timeout=30) as client:
            base = f"http://127.0.0.1:{app.http_port}"
            spoken = await client.post(f"{base}/v1/audio/speech", json={"model": "tts-1", "input": "Hello."})
            ready = await client.get(f"{base}/ready")
        assert spoken.status_code == 503 and spoken.json()["error"]["code"] == "service_unavailable"
        assert ready.status_code == 503 and not ready.json()["checks"]["speech_to_text_upstreams"]["ok"]
        async with wyoming_client(app.port(Service.ASR)) as client:
            events = await transcribe_until_error(client, speech)
        assert events[-1].data["code"] == "service_unavailable", events[-1].data
        async with wyoming_client(app.port(Service.TTS)) as client:
            await client.write_event(Synthesize(text="Hello.").event())
            answer = await read_answer(client, "audio-stop")
        assert answer.types == ["error"] and answer.events[0].data["code"] == "service_unavailable"
        assert not local_loaded(app)  # a pure proxy never loads a local model


async def live_final(app: App, speech: Speech, text: str) -> str:
    """One utterance through WS /v1/audio/transcriptions/stream, ended by `finalize`: the final's text."""
    async with connect(f"ws://127.0.0.1:{app.http_port}/v1/audio/transcriptions/stream") as ws:
        await ws.send(json.dumps({"type": "start", "rate": speech.rate, "language": "en"}))
        await receive_json(ws)
        await send_paced(ws, speech.silence(0.3) + speech.say(text), speech.rate, pace=None)
        await ws.send(json.dumps({"type": "finalize"}))
        messages = await receive_until(ws, "transcript", timeout=60)
        while not messages[-1].get("is_final"):
            messages += await receive_until(ws, "transcript", timeout=60)
        await ws.send(json.dumps({"type": "stop"}))
        await receive_until(ws, "done")
    return str(messages[-1]["text"])


async def transcribe_until_error(client: Any, speech: Speech) -> list[Any]:
    await client.write_event(Transcribe(language="en").event())
    await send_audio(client, speech.say("Turn on the porch light.") + speech.silence(1.0), speech.rate)
    await client.write_event(AudioStop().event())
    return await read_until(client, "error", timeout=30)
