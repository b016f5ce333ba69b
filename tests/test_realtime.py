"""WS /v1/realtime?intent=transcription: the OpenAI Realtime transcription protocol, with the real openai SDK
(and a plain websockets client for what the SDK cannot send), the bundled Whisper model, uvicorn on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import openai
import pytest
from conftest import Speech, fixture_path, normalise
from ws_helpers import Served, connect, live_stt_served, no_live_tasks, receive_json, resample

from wyoming_minerva.audio import AudioFormat, convert_pcm, read_wav
from wyoming_minerva.http.stream_g711 import g711_to_pcm16

pytestmark = pytest.mark.timeout(120)

COMMAND = "Turn on the living room lights and set them to fifty percent brightness please."
SECOND = "What time is it?"
KEY = "sk-test"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Served]:
    async with live_stt_served(api_key=KEY) as srv:
        yield srv


def sdk(server: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=f"{server.http}/v1", max_retries=0)


async def append_paced(connection: Any, pcm: bytes, rate: int, pace: float) -> None:
    step = int(rate * 0.04) * 2  # 40 ms appends, as browsers send them
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0.0
    for offset in range(0, len(pcm), step):
        chunk = pcm[offset : offset + step]
        await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        sent += len(chunk) / 2 / rate
        await asyncio.sleep(max(0.0, start + sent / pace - loop.time()))


async def events_until(connection: Any, kind: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        while sum(e.type == kind for e in events) < count:
            events.append(await connection.recv())
    return events


async def test_openai_sdk_session_and_event_order(server: Served, speech: Speech) -> None:
    utterances = [COMMAND, SECOND]
    # 1 s between the commands: well over the 500 ms that ends a turn, whatever Piper's random pause lengths.
    pcm = b"".join(speech.silence(1.0) + speech.say(text) for text in utterances) + speech.silence(1.0)
    pcm24 = resample(pcm, speech.rate, 24000)  # OpenAI's pcm16 is 24 kHz
    async with sdk(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        assert created.session.audio.input.format.rate == 24000
        await connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300},
                    }
                },
            }
        )
        updated = await connection.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.turn_detection.silence_duration_ms == 500
        assert updated.session.audio.input.transcription.model == "gpt-4o-transcribe"
        sending = asyncio.create_task(append_paced(connection, pcm24, 24000, pace=2.0))
        events = await events_until(connection, "conversation.item.input_audio_transcription.completed", 2)
        await sending
    types = [e.type for e in events]
    items = []
    for event in events:
        if event.type == "input_audio_buffer.committed":
            items.append(event.item_id)
    assert len(items) == 2 and items[0] != items[1]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert committed[0].previous_item_id is None and committed[1].previous_item_id == items[0]
    for item in items:
        mine = [e.type for e in events if getattr(e, "item_id", None) == item]
        core = [t for t in mine if not t.endswith(".delta")]
        assert core == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
        ], mine
        deltas = [i for i, t in enumerate(mine) if t.endswith(".delta")]
        assert deltas and max(deltas) < mine.index("conversation.item.input_audio_transcription.completed")
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert "living room lights" in normalise(completed[0].transcript)
    assert normalise(completed[1].transcript) == "what time is it"
    assert completed[0].usage.type == "duration" and completed[0].usage.seconds > 3
    # the deltas of an item add up to its transcript (they agree here; .completed is the truth when not)
    text = "".join(e.delta for e in events if e.type.endswith(".delta") and e.item_id == items[1])
    assert normalise(text) == "what time is it"
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    assert started[0].audio_start_ms < stopped[0].audio_end_ms < started[1].audio_start_ms < stopped[1].audio_end_ms
    assert types[-1] == "conversation.item.input_audio_transcription.completed"


async def test_manual_commit_at_16_khz(server: Served) -> None:
    pcm, fmt = read_wav(fixture_path("asr/living_room_light_en.wav").read_bytes())
    pcm16k = convert_pcm(pcm, fmt, 16000)
    async with sdk(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.recv()  # session.created
        await connection.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}},
                },
            }
        )
        updated = await connection.recv()
        assert updated.type == "session.updated" and updated.session.audio.input.turn_detection is None
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm16k + bytes(16000)).decode())
        await asyncio.sleep(1.0)  # a second of silence after it: no VAD here, so nothing may happen
        await connection.input_audio_buffer.commit()
        events = await events_until(connection, "conversation.item.input_audio_transcription.completed")
    types = [e.type for e in events if not e.type.endswith(".delta")]
    assert types == ["input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"]
    assert normalise(events[-1].transcript) == "turn on the living room light"


async def test_beta_transcription_session_update_is_understood(server: Served, speech: Speech) -> None:
    async with connect(
        server.url("/v1/realtime?intent=transcription"), additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        assert (await receive_json(ws))["type"] == "session.created"
        await ws.send(
            json.dumps(
                {
                    "type": "transcription_session.update",
                    "session": {
                        "input_audio_format": "pcm16",
                        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": None,
                    },
                }
            )
        )
        updated = await receive_json(ws)
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        pcm = convert_pcm(speech.say(SECOND), AudioFormat(speech.rate), 24000)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := await receive_json(ws))["type"] != "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
        assert normalise(event["transcript"]) == "what time is it"


async def test_bad_events_get_error_events_and_the_session_survives(server: Served, speech: Speech) -> None:
    url = server.url("/v1/realtime?intent=transcription")
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert (await receive_json(ws))["type"] == "session.created"

        async def error_for(message: str | bytes) -> dict[str, Any]:
            await ws.send(message)
            event = await receive_json(ws)
            assert event["type"] == "error", event
            assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
            return dict(event["error"])

        assert (await error_for("{oops"))["code"] == "bad_json"
        unknown = await error_for(json.dumps({"type": "response.create", "event_id": "evt_1"}))
        assert unknown["code"] == "unknown_type" and unknown["event_id"] == "evt_1"
        assert (await error_for(b"\x00" * 640))["code"] == "bad_request"
        bad_audio = await error_for(json.dumps({"type": "input_audio_buffer.append", "audio": "not base64!"}))
        assert bad_audio["code"] == "bad_request" and bad_audio["type"] == "invalid_request_error"
        rate = await error_for(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "transcription", "audio": {"input": {"format": {"rate": 44100}}}},
                }
            )
        )
        assert rate["code"] == "invalid_value" and rate["param"] == "session.audio.input.format.rate"
        kind = await error_for(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        assert kind["param"] == "session.type"
        empty = await error_for(json.dumps({"type": "input_audio_buffer.commit"}))
        assert empty["code"] == "input_audio_buffer_commit_empty"
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert (await receive_json(ws))["type"] == "input_audio_buffer.cleared"
        # still transcribing after all that
        pcm = convert_pcm(speech.silence(0.3) + speech.say(SECOND) + speech.silence(1), AudioFormat(speech.rate), 24000)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        while (event := await receive_json(ws))["type"] != "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
        assert normalise(event["transcript"]) == "what time is it"


async def test_api_key_and_intent(server: Served) -> None:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as refused:  # no key: closed with 1008 before anything else
        async with connect(server.url("/v1/realtime?intent=transcription")) as ws:
            await ws.recv()
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
    headers = {"Authorization": f"Bearer {KEY}"}
    async with connect(server.url("/v1/realtime?intent=conversation"), additional_headers=headers) as ws:
        event = await receive_json(ws)
        assert event["type"] == "error" and event["error"]["param"] == "intent"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_browser_clients_send_the_key_as_a_subprotocol(server: Served) -> None:
    from websockets.exceptions import ConnectionClosed

    url = server.url("/v1/realtime?intent=transcription")
    async with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
        assert (await receive_json(ws))["type"] in ("session.created", "transcription_session.created")
    with pytest.raises(ConnectionClosed) as closed:  # a browser sees the 1008 close (a refused handshake: 1006)
        async with connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]) as ws:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_client_that_vanishes_mid_utterance(server: Served, speech: Speech) -> None:
    hub = server.streams.hub
    assert hub is not None
    headers = {"Authorization": f"Bearer {KEY}"}
    async with connect(server.url("/v1/realtime?intent=transcription"), additional_headers=headers) as ws:
        await receive_json(ws)
        pcm = convert_pcm(speech.silence(0.3) + speech.say(COMMAND), AudioFormat(speech.rate), 24000)
        for offset in range(0, len(pcm) * 3 // 4, 9600):
            chunk = base64.b64encode(pcm[offset : offset + 9600]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await asyncio.sleep(0.05)
        assert hub.sessions == 1
    assert await no_live_tasks() == []
    assert hub.sessions == 0


def encode_g711(pcm16: bytes, codec: str) -> bytes:
    """16-bit PCM → the G.711 codes whose decoded values are nearest (the server's decoder is the reference)."""
    table = np.frombuffer(g711_to_pcm16(bytes(range(256)), codec), dtype="<i2").astype(np.int32)
    order = np.argsort(table)
    ordered = table[order]
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.int32)
    index = np.clip(np.searchsorted(ordered, samples), 1, 255)
    nearer_left = (samples - ordered[index - 1]) < (ordered[index] - samples)
    return order[np.where(nearer_left, index - 1, index)].astype(np.uint8).tobytes()


@pytest.mark.parametrize("codec", ["audio/pcmu", "audio/pcma"])
async def test_g711_telephony_audio(server: Served, codec: str) -> None:
    pcm, fmt = read_wav(fixture_path("asr/living_room_light_en.wav").read_bytes())
    telephone = encode_g711(convert_pcm(pcm, fmt, 8000), codec)
    async with sdk(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.recv()
        await connection.send(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"format": {"type": codec}}}},
            }
        )
        updated = await connection.recv()
        assert updated.session.audio.input.format.type == codec
        for offset in range(0, len(telephone), 1600):  # 200 ms appends
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(telephone[offset : offset + 1600]).decode()
            )
        await connection.input_audio_buffer.append(
            audio=base64.b64encode(bytes([0xFF if codec == "audio/pcmu" else 0xD5]) * 8000).decode()
        )
        events = await events_until(connection, "conversation.item.input_audio_transcription.completed")
    assert normalise(events[-1].transcript) == "turn on the living room light"
