"""WS /v1/audio/transcriptions/stream with the bundled Whisper model: websockets clients, uvicorn on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from conftest import Speech, fixture_path, normalise
from websockets.typing import Subprotocol
from ws_helpers import (
    Engines,
    Served,
    connect,
    live_stt_served,
    no_live_tasks,
    receive_json,
    receive_until,
    send_paced,
    served,
)

from wyoming_minerva.audio import read_wav
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import RealtimeSettings

pytestmark = pytest.mark.timeout(120)

COMMAND = "Turn on the living room lights and set them to fifty percent brightness please."
PATH = "/v1/audio/transcriptions/stream"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Served]:
    async with live_stt_served() as srv:
        yield srv


async def test_speech_in_real_time_gives_interims_and_the_right_final(server: Served, speech: Speech) -> None:
    pcm = speech.silence(0.3) + speech.say(COMMAND) + speech.silence(1.0)  # ~4.5 s, more than 2 s of speech
    async with connect(server.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "start", "rate": speech.rate, "language": "en"}))
        session = await receive_json(ws)
        assert session["type"] == "session" and session["session_id"].startswith("sess_")
        assert session["rate"] == speech.rate and session["interim"] is True
        await send_paced(ws, pcm, speech.rate, pace=1.0)
        messages = await receive_until(ws, "transcript")
        while not messages[-1].get("is_final"):
            messages += await receive_until(ws, "transcript")
        await ws.send(json.dumps({"type": "stop"}))
        messages += await receive_until(ws, "done")
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "speech_started" and "speech_stopped" in kinds
    interims = [m for m in messages if m["type"] == "transcript" and not m["is_final"]]
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert interims, "no interim result for 4 s of speech streamed in real time"
    assert all(m["utterance"] == 1 for m in interims + finals)
    assert len(finals) == 1
    final = finals[0]
    assert "living room lights" in normalise(final["text"]) and "brightness" in normalise(final["text"])
    assert final["language"] == "en" and final["audio_ms"] > 3500 and final["latency_ms"] >= 0
    assert messages.index(interims[-1]) < messages.index(final)
    assert server.streams.hub is not None and server.streams.hub.stats.latency.count >= 1


async def test_human_recording_in_its_own_format(server: Served) -> None:
    pcm, fmt = read_wav(fixture_path("asr/turn_on_the_living_room_lamp.wav").read_bytes())  # 44.1 kHz stereo
    async with connect(server.url(PATH)) as ws:
        start = {"type": "start", "rate": fmt.rate, "width": fmt.width, "channels": fmt.channels}
        await ws.send(json.dumps(start))
        assert (await receive_json(ws))["type"] == "session"
        frame = fmt.width * fmt.channels
        # JSON frames with base64 audio work like binary ones
        wrap = lambda chunk: json.dumps({"type": "audio", "audio": base64.b64encode(chunk).decode()})  # noqa: E731
        await send_paced(ws, pcm, fmt.rate, frame_bytes=frame, pace=None, wrap=wrap)
        await ws.send(json.dumps({"type": "stop"}))
        messages = await receive_until(ws, "done")
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert [normalise(f["text"]) for f in finals] == ["turn on the living room lamp"]


async def test_finalize_ends_the_utterance_at_once(server: Served, speech: Speech) -> None:
    async with connect(server.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "start", "rate": speech.rate, "interim": False}))
        await receive_json(ws)
        await send_paced(ws, speech.silence(0.3) + speech.say("What time is it?"), speech.rate, pace=None)
        await ws.send(json.dumps({"type": "finalize"}))  # no trailing silence: the client knows it is over
        messages = await receive_until(ws, "transcript", timeout=20)
        await ws.send(json.dumps({"type": "stop"}))
        messages += await receive_until(ws, "done")
    finals = [m for m in messages if m["type"] == "transcript"]
    assert len(finals) == 1 and finals[0]["is_final"]
    assert normalise(finals[0]["text"]) == "what time is it"
    assert "speech_stopped" not in [m["type"] for m in messages]  # ended by finalize, not by silence


async def test_bad_input_gets_clear_errors_and_the_session_goes_on(server: Served, speech: Speech) -> None:
    async with connect(server.url(PATH)) as ws:
        await ws.send(b"\x00\x01" * 100)
        assert (await receive_json(ws))["code"] == "not_started"
        await ws.send("{not json")
        assert (await receive_json(ws))["code"] == "bad_json"
        await ws.send(json.dumps({"type": "start", "rate": 16000, "width": 7}))
        bad = await receive_json(ws)
        assert bad["type"] == "error" and bad["code"] == "bad_request" and "width" in bad["message"]
        await ws.send(json.dumps({"type": "start", "rate": speech.rate}))
        assert (await receive_json(ws))["type"] == "session"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await receive_json(ws))["code"] == "unknown_type"
        await ws.send(json.dumps({"type": "audio", "audio": "***"}))
        assert (await receive_json(ws))["code"] == "bad_request"
        await ws.send(bytes(RealtimeSettings().max_frame_bytes + 2))
        assert (await receive_json(ws))["code"] == "frame_too_large"
        command = speech.silence(0.3) + speech.say("What time is it?") + speech.silence(1)
        await send_paced(ws, command, speech.rate, pace=None)
        messages = await receive_until(ws, "transcript")
        assert normalise(messages[-1]["text"]) == "what time is it"


async def test_a_client_that_vanishes_mid_utterance_leaves_nothing_behind(server: Served, speech: Speech) -> None:
    hub = server.streams.hub
    assert hub is not None
    async with connect(server.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "start", "rate": speech.rate}))
        await receive_json(ws)
        await send_paced(ws, speech.silence(0.3) + speech.say(COMMAND)[: speech.rate * 4], speech.rate, pace=4.0)
        assert hub.sessions == 1
    # gone without stop, while speaking (decodes may be running)
    assert await no_live_tasks() == []
    assert hub.sessions == 0
    async with connect(server.url(PATH)) as ws:  # and the server serves the next client
        await ws.send(json.dumps({"type": "start", "rate": speech.rate}))
        assert (await receive_json(ws))["type"] == "session"


async def test_a_browser_offering_the_key_as_a_subprotocol_is_answered_with_its_other_one() -> None:
    """Chrome fails a handshake whose answer names none of the subprotocols it offered (the console offers
    ["minerva", "openai-insecure-api-key.KEY"]); every WebSocket route answers the one that is not the key."""
    manager = ModelManager(workers=1, queue_size=2)
    key = Subprotocol("openai-insecure-api-key.sesame")
    routes = (PATH, "/v1/audio/speech/stream", "/v1/wake/events", "/v1/wake/detect", "/v1/realtime")
    try:
        async with served(Engines(), manager, api_key="sesame") as srv:  # no engines: accepted, then closed
            for route in routes:
                async with connect(srv.url(route), subprotocols=[Subprotocol("minerva"), key]) as ws:
                    assert ws.subprotocol == "minerva", route
                async with connect(srv.url(route), subprotocols=[key]) as ws:
                    assert ws.subprotocol == key, route
            offered = [Subprotocol("x"), Subprotocol("realtime"), key]
            async with connect(srv.url("/v1/realtime"), subprotocols=offered) as ws:
                assert ws.subprotocol == "realtime"  # the one its clients expect, wherever it is in the list
    finally:
        await manager.close()
