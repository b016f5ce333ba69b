"""Bad input and failures on the ASR service: an error event for the culprit, service for everyone else."""

from __future__ import annotations

import asyncio
import json
import time

from asr_helpers import asr_server, read_until, send_audio, transcribe, transcript_text
from conftest import ENGLISH, Speech, normalise, wyoming_client
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Describe

from wyoming_minerva.handlers.server import MAX_DATA_BYTES, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings


async def _raw_exchange(port: int, data: bytes) -> list[dict[str, object]]:
    """Send raw bytes; return the headers of what came back until the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    headers: list[dict[str, object]] = []
    async with asyncio.timeout(10):
        while line := await reader.readline():
            header = json.loads(line)
            extra = await reader.readexactly(header.get("data_length") or 0)
            header["data"] = {**(header.get("data") or {}), **(json.loads(extra) if extra else {})}
            headers.append(header)
    writer.close()
    return headers


async def _still_serving(port: int, speech: Speech) -> None:
    async with wyoming_client(port) as client:
        events = await transcribe(client, speech.say("Turn on the lights."), speech.rate)
    assert normalise(transcript_text(events)) == "turn on the lights"


async def test_framing_errors_get_an_error_and_close_only_that_connection(speech: Speech) -> None:
    cases = {
        "bad json": b"{not json}\n",
        "not an object": b"[1, 2]\n",
        "header too long": b'{"type": "describe", "x": "' + b"a" * (MAX_HEADER_BYTES + 10) + b'"}\n',
        "data too long": json.dumps({"type": "transcribe", "data_length": MAX_DATA_BYTES + 1}).encode() + b"\n",
        "payload too long": json.dumps({"type": "audio-chunk", "payload_length": MAX_PAYLOAD_BYTES + 1}).encode()
        + b"\n",
        "negative length": json.dumps({"type": "audio-chunk", "payload_length": -4}).encode() + b"\n",
    }
    async with asr_server() as (server, _), wyoming_client(server.port) as bystander:
        for name, data in cases.items():
            headers = await _raw_exchange(server.port, data)
            assert [h["type"] for h in headers] == ["error"], name
            assert headers[0]["data"]["code"] == "protocol_error", name  # type: ignore[index]
        # A connection that was open all along is unaffected, and new ones are served.
        await bystander.write_event(Describe().event())
        await read_until(bystander, "info", timeout=5)
        await _still_serving(server.port, speech)


async def test_null_data_fields_are_treated_as_absent(speech: Speech) -> None:
    async with asr_server() as (server, _):
        header = json.dumps({"type": "transcribe", "data": {"language": None, "name": None}}).encode() + b"\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(header + json.dumps({"type": "audio-stop", "data": None}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(10):
            types = []
            while "transcript-stop" not in types:
                header_line = json.loads(await reader.readline())
                await reader.readexactly(header_line.get("data_length") or 0)
                types.append(header_line["type"])
        writer.close()
        assert "transcript" in types


async def test_unsupported_sample_width_is_an_error_and_the_connection_stays(speech: Speech) -> None:
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(AudioStart(rate=16000, width=5, channels=1).event())
        error = (await read_until(client, "error", timeout=5))[-1]
        assert error.data["code"] == "unsupported_audio" and "width" in error.data["text"]
        events = await transcribe(client, speech.say("Turn on the lights."), speech.rate)
        assert normalise(transcript_text(events)) == "turn on the lights"


async def test_unknown_events_are_ignored(speech: Speech) -> None:
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Event(type="something-new", data={"x": 1}))
        events = await transcribe(client, speech.say("Turn on the lights."), speech.rate)
        assert normalise(transcript_text(events)) == "turn on the lights"


async def test_audio_over_the_maximum_duration_is_refused_once(speech: Speech) -> None:
    settings = AsrSettings(models=ENGLISH, max_audio_seconds=2.0, endpointing=False)
    async with asr_server(settings=settings) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Transcribe().event())
        await send_audio(client, speech.silence(5.0), speech.rate)
        await client.write_event(AudioStop().event())
        await client.write_event(Describe().event())
        events = await read_until(client, "info", timeout=10)
        errors = [e for e in events if e.type == "error"]
        assert len(errors) == 1 and errors[0].data["code"] == "audio_too_long"
        assert not [e for e in events if e.type == "transcript"]


async def test_full_queue_answers_queue_full_at_once(speech: Speech) -> None:
    manager = ModelManager(workers=1, queue_size=0)
    release = asyncio.Event()
    try:
        async with asr_server(manager=manager) as (server, stt):
            await stt.preload()
            loop = asyncio.get_running_loop()
            blocker = asyncio.ensure_future(
                manager.run(lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result())
            )
            await asyncio.sleep(0.1)
            async with wyoming_client(server.port) as client:
                started = time.perf_counter()
                await client.write_event(Transcribe().event())
                await send_audio(client, speech.say("Turn on the lights."), speech.rate)
                await client.write_event(AudioStop().event())
                error = (await read_until(client, "error", timeout=5))[-1]
                assert error.data["code"] == "queue_full"
                assert time.perf_counter() - started < 5
                release.set()
                await blocker
                events = await transcribe(client, speech.say("Turn on the lights."), speech.rate)
                assert normalise(transcript_text(events)) == "turn on the lights"
    finally:
        release.set()
        await manager.close()


async def test_client_vanishing_mid_utterance_leaves_the_server_serving(speech: Speech) -> None:
    async with asr_server() as (server, stt):
        for _ in range(3):
            async with wyoming_client(server.port) as client:
                await client.write_event(Transcribe().event())
                await send_audio(client, speech.say("Turn on the lights and then"), speech.rate)
            # and one that leaves right after audio-stop, while its decode runs
            async with wyoming_client(server.port) as client:
                await client.write_event(Transcribe().event())
                await send_audio(client, speech.say("Turn on the lights."), speech.rate)
                await client.write_event(AudioStop().event())
        await _still_serving(server.port, speech)
        await asyncio.sleep(0.5)
        assert stt.manager.queue_depth == 0, "work for vanished clients is still queued"
