"""The HTTP API served by uvicorn inside App, on loopback: shared models with Wyoming, streaming, disconnects,
limits on a real socket, graceful stop."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
import openai
import pytest
from asr_helpers import transcribe, transcript_text
from conftest import Speech, normalise, wyoming_client
from http_helpers import encode
from tts_helpers import read_answer
from wyoming.tts import Synthesize

from wyoming_minerva.app import App, StartupError
from wyoming_minerva.runtime.manager import CancelToken
from wyoming_minerva.settings import DiscoverySettings, HttpSettings, ListenUri, Service, Settings
from wyoming_minerva.stt.engine import Segment, TranscriptionInfo, TranscriptionOptions

pytestmark = pytest.mark.timeout(180)

SENTENCES = [
    "The kitchen lights are now on.",
    "The thermostat is set to twenty one degrees.",
    "Your next meeting starts at nine.",
    "The front door is locked.",
    "It will rain tomorrow afternoon.",
    "The washing machine has finished.",
]


def settings(wyoming: bool = False, grace: float = 5.0, **http: object) -> Settings:
    loopback = ListenUri("tcp", "127.0.0.1", 0)
    return Settings(
        asr_uri=loopback if wyoming else None,
        tts_uri=loopback if wyoming else None,
        http=HttpSettings(**{"host": "127.0.0.1", "port": 0, **http}),  # type: ignore[arg-type]
        discovery=DiscoverySettings(enabled=False),
        local_files_only=True,
        workers=2,
        queue_size=8,
        shutdown_grace_seconds=grace,
    )


@asynccontextmanager
async def running(config: Settings) -> AsyncIterator[App]:
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def sdk(app: App) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{app.http_port}/v1", max_retries=0)


async def test_wyoming_and_http_share_one_copy_of_each_model(speech: Speech) -> None:
    pcm = speech.say("Turn off the kitchen lights.") + speech.silence(0.3)
    async with running(settings(wyoming=True)) as app:
        async with wyoming_client(app.port(Service.ASR)) as client:
            assert (
                normalise(transcript_text(await transcribe(client, pcm, speech.rate))) == "turn off the kitchen lights"
            )
        async with wyoming_client(app.port(Service.TTS)) as client:
            await client.write_event(Synthesize(text="The door is locked.").event())
            assert (await read_answer(client, "audio-stop")).seconds() > 0.5
        client_sdk = sdk(app)
        upload = encode(pcm, speech.rate, "ogg", "libopus", 48000)
        result = await client_sdk.audio.transcriptions.create(file=("k.ogg", upload), model="whisper-1")
        assert normalise(result.text) == "turn off the kitchen lights"
        stream = await client_sdk.audio.transcriptions.create(file=("k.ogg", upload), model="whisper-1", stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "transcript.text.done" and normalise(events[-1].text) == "turn off the kitchen lights"
        wav = await client_sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="wav")
        assert len(wav.content) > 12000  # a quarter second at least
        await client_sdk.close()
        loads = app.manager.stats().load_counts
        assert app.engines.stt is not None and loads[app.engines.stt.key] == 1
        assert [key for key in loads if key.startswith("piper:")] and all(count == 1 for count in loads.values()), loads


async def test_http_alone_serves_both_engines(speech: Speech) -> None:
    async with running(settings()) as app:
        assert not app.servers and app.engines.stt is not None and app.engines.tts is not None
        client_sdk = sdk(app)
        wav = await client_sdk.audio.speech.create(
            model="tts-1", voice="nova", input="Turn off the kitchen lights.", response_format="wav"
        )
        result = await client_sdk.audio.transcriptions.create(file=("s.wav", wav.content), model="whisper-1")
        assert normalise(result.text) == "turn off the kitchen lights"
        await client_sdk.close()


async def test_speech_is_sent_sentence_by_sentence() -> None:
    async with running(settings()) as app, httpx.AsyncClient(timeout=60) as client:
        await client.post(f"http://127.0.0.1:{app.http_port}/v1/audio/speech", json={"input": "Warm up."})
        started = time.perf_counter()
        arrivals: list[float] = []
        body = {"input": " ".join(SENTENCES), "voice": "alloy", "response_format": "pcm"}
        async with client.stream("POST", f"http://127.0.0.1:{app.http_port}/v1/audio/speech", json=body) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                if chunk:
                    arrivals.append(time.perf_counter() - started)
    total = arrivals[-1]
    assert len(arrivals) >= 3
    assert arrivals[0] < 0.6 * total, arrivals  # the first sentence plays while the rest is made


async def test_a_client_that_leaves_cancels_its_speech() -> None:
    text = " ".join(f"This is sentence number {n} of a long answer nobody will hear." for n in range(1, 31))
    async with running(settings()) as app:
        tts = app.engines.tts
        assert tts is not None
        url = f"http://127.0.0.1:{app.http_port}/v1/audio/speech"
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", url, json={"input": text, "response_format": "wav"}) as response,
        ):
            async for chunk in response.aiter_raw():
                if chunk:
                    break  # hang up after the first piece
        made = tts.stats.pieces_synthesized
        await asyncio.sleep(2.0)  # long enough for several more pieces if they were still being made
        assert tts.stats.pieces_synthesized - made <= 2 and tts.stats.pieces_synthesized < 10
        assert app.manager.queue_depth == 0


class SlowTranscriber:
    """A Transcriber (stt.engine) that makes 100 segments, 50 ms each, and counts what it made."""

    name = "slow"
    languages = ("en",)
    is_multilingual = False

    def __init__(self) -> None:
        self.produced = 0

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        def segments() -> Iterator[Segment]:
            for index in range(100):
                time.sleep(0.05)
                self.produced += 1
                yield Segment(index * 0.1, index * 0.1 + 0.1, f" word{index}")
                if cancel is not None and cancel.cancelled:
                    return

        return TranscriptionInfo("en", len(audio) / 16000), segments()


async def test_a_client_that_leaves_cancels_its_transcription(speech: Speech) -> None:
    upload = encode(speech.say("Turn off the kitchen lights."), speech.rate, "wav", "pcm_s16le", 16000)
    async with running(settings()) as app:
        stt = app.engines.stt
        assert stt is not None
        slow = await app.manager.get(stt.key, SlowTranscriber)  # the model every request of this app gets
        base = f"http://127.0.0.1:{app.http_port}"
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ReadTimeout):  # gives up after 0.5 s of the 5 s the model needs
                await client.post(f"{base}/v1/audio/transcriptions", files={"file": ("k.wav", upload)}, timeout=0.5)
            async with asyncio.timeout(10):
                while app.manager.queue_depth:  # noqa: ASYNC110 - the manager's own counter
                    await asyncio.sleep(0.02)
            metrics = (await client.get(f"{base}/metrics")).text
        assert slow.produced < 40, slow.produced  # stopped soon after the client left, not after all 100
        assert 'route="/v1/audio/transcriptions",status="499"} 1.0' in metrics
        assert 'minerva_http_errors_total{code="client_closed"} 1.0' in metrics


async def test_limits_on_a_real_socket() -> None:
    async with running(settings(max_upload_mb=1.0)) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        writer.write(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000\r\n\r\n" + bytes(1000)
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status = await reader.readline()
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        assert status.startswith(b"HTTP/1.1 413"), status
        assert "content-type: application/json" in head
        writer.close()
        async with httpx.AsyncClient(timeout=10) as client:  # and the server goes on serving
            assert (await client.get(f"http://127.0.0.1:{app.http_port}/health")).status_code == 200


async def test_stop_lets_a_speech_in_flight_finish() -> None:
    app = App(settings(grace=10))
    await app.start()
    port = app.http_port
    stopping: asyncio.Task[None] | None = None
    received = b""
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"input": " ".join(SENTENCES), "response_format": "pcm"}
            async with client.stream("POST", f"http://127.0.0.1:{port}/v1/audio/speech", json=body) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
                    if stopping is None:
                        stopping = asyncio.create_task(app.stop())
                        await asyncio.sleep(0.3)
                        async with httpx.AsyncClient() as other:
                            with pytest.raises(httpx.ConnectError):  # no new connections meanwhile
                                await other.get(f"http://127.0.0.1:{port}/health")
    finally:
        if stopping is None:
            await app.stop()
        else:
            await stopping
    assert len(received) / 2 / 24000 > 6.0  # all six sentences, not just the first


async def test_busy_port_is_a_clear_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App(settings(port=port))
        with pytest.raises(StartupError, match=f"cannot listen for http on 127.0.0.1:{port}"):
            await app.start()
