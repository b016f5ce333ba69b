"""Wake word events over SSE and WebSocket, and detection over WebSocket: the bundled wake models, the Wyoming
service and the HTTP app sharing one WakeWords engine, real clients on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import fixture_path, wyoming_client, wyoming_server
from ws_helpers import Engines, Served, connect, no_live_tasks, receive_json, send_paced, served
from wyoming.audio import AudioChunk, AudioStart
from wyoming.wake import Detect

from wyoming_minerva.audio import read_wav
from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.handlers.wake import WakeHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import WakeSettings
from wyoming_minerva.wake.service import WakeWords

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def services() -> AsyncIterator[tuple[Served, WyomingServer, WakeWords]]:
    manager = ModelManager(workers=2, queue_size=8)
    wake = WakeWords(WakeSettings(), manager)
    try:
        async with (
            wyoming_server("wake", lambda sink: WakeHandler(sink, wake)) as wyoming,
            served(Engines(wake=wake), manager) as http,
        ):
            yield http, wyoming, wake
    finally:
        await wake.close()
        await manager.close()


def okay_nabu() -> bytes:
    pcm, fmt = read_wav(fixture_path("wake/okay_nabu.wav").read_bytes())
    assert fmt.rate == 16000 and fmt.channels == 1
    return pcm + bytes(16000)  # a second of silence after it


async def sse_detections(url: str, count: int, ready: asyncio.Event) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith(": connected"):
                ready.set()
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
                if len(found) == count:
                    return found
    return found


async def test_a_wyoming_detection_appears_on_the_sse_stream_and_the_ws_feed(
    services: tuple[Served, WyomingServer, WakeWords],
) -> None:
    http, wyoming, _ = services
    pcm = okay_nabu()  # first: a skip for a missing recording must not leave the SSE task behind
    ready = asyncio.Event()
    sse = asyncio.create_task(sse_detections(f"{http.http}/v1/wake/events", 1, ready))
    async with connect(http.url("/v1/wake/events")) as feed:
        await asyncio.wait_for(ready.wait(), 10)
        async with wyoming_client(wyoming.port) as client:
            await client.write_event(Detect(names=["okay_nabu"]).event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            step = 2048
            for offset in range(0, len(pcm), step):
                chunk = AudioChunk(rate=16000, width=2, channels=1, audio=pcm[offset : offset + step])
                await client.write_event(chunk.event())
            event = await asyncio.wait_for(client.read_event(), 20)
            assert event is not None and event.type == "detection"
        from_feed = await receive_json(feed, timeout=10)
    [from_sse] = await asyncio.wait_for(sse, 20)
    for detection in (from_sse, from_feed):
        assert detection["type"] == "wake.detection"
        assert detection["name"] == "okay_nabu" and detection["model"] == "okay_nabu"
        assert 500 < detection["timestamp"] < 3000 and 0 < detection["probability"] <= 1
        assert detection["client"].startswith("127.0.0.1:") and detection["time"] > 1.7e9
    assert from_sse == from_feed


async def test_detection_over_websocket(services: tuple[Served, WyomingServer, WakeWords]) -> None:
    http, _, wake = services
    pcm = okay_nabu()  # first: a skip for a missing recording must not leave the SSE task behind
    ready = asyncio.Event()
    sse = asyncio.create_task(sse_detections(f"{http.http}/v1/wake/events", 1, ready))
    await asyncio.wait_for(ready.wait(), 10)
    async with connect(http.url("/v1/wake/detect")) as ws:
        await ws.send(b"\x00" * 640)
        assert (await receive_json(ws))["code"] == "not_started"
        await ws.send(json.dumps({"type": "start", "names": ["no_such_word"]}))
        assert (await receive_json(ws))["code"] == "model_not_found"
        await ws.send(json.dumps({"type": "start", "rate": 16000, "names": ["okay_nabu"]}))
        assert await receive_json(ws) == {"type": "ready", "models": ["okay_nabu"]}
        await send_paced(ws, pcm, 16000, pace=None)
        detection = await receive_json(ws, timeout=20)
        assert detection["type"] == "detection" and detection["name"] == "okay_nabu"
        await ws.send(json.dumps({"type": "stop"}))
        assert await receive_json(ws) == {"type": "done", "detected": True}
    [broadcast] = await asyncio.wait_for(sse, 20)
    assert broadcast["client"].startswith("ws:127.0.0.1:") and broadcast["timestamp"] == detection["timestamp"]
    assert await no_live_tasks() == []
    assert wake.active_streams == 0


async def test_without_a_wake_engine_the_routes_say_so(services: tuple[Served, WyomingServer, WakeWords]) -> None:
    manager = ModelManager(workers=1, queue_size=1)
    try:
        async with served(Engines(), manager) as bare:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(f"{bare.http}/v1/wake/events")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "service_unavailable"
            async with connect(bare.url("/v1/wake/detect")) as ws:
                assert (await receive_json(ws))["code"] == "service_unavailable"
    finally:
        await manager.close()
