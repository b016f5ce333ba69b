"""Backpressure over WebSocket: a flood of live sessions against a small server (fake Transcriber, so the timing is
ours): clients get session_limit / queue_full / buffer_overflow, and every accepted session finishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from conftest import ENGLISH, Speech, local_stt
from live_helpers import FakeTranscriber
from websockets.exceptions import ConnectionClosed
from ws_helpers import Engines, Served, connect, no_live_tasks, receive_json, receive_until, send_paced, served

from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, RealtimeSettings

pytestmark = pytest.mark.timeout(90)

PATH = "/v1/audio/transcriptions/stream"


@asynccontextmanager
async def small_server(fake: FakeTranscriber, **realtime: Any) -> AsyncIterator[Served]:
    manager = ModelManager(workers=1, queue_size=4)
    stt = local_stt(manager, AsrSettings(models=ENGLISH))
    await manager.get(stt.key, lambda: fake)
    try:
        async with served(Engines(stt=stt), manager, RealtimeSettings(**realtime)) as srv:
            yield srv
    finally:
        fake.gate.set()
        await manager.close()


async def one_client(server: Served, pcm: bytes, rate: int) -> tuple[str, list[dict[str, Any]], int | None]:
    """("accepted" | "refused", messages, close code)."""
    async with connect(server.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "start", "rate": rate}))
        first = await receive_json(ws)
        if first["type"] == "error":
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return "refused", [first], closed.value.rcvd.code if closed.value.rcvd else None
        await send_paced(ws, pcm, rate, pace=None)
        await ws.send(json.dumps({"type": "stop"}))
        return "accepted", [first, *await receive_until(ws, "done", timeout=60)], None


async def test_a_flood_of_sessions(speech: Speech) -> None:
    fake = FakeTranscriber(delay=1.0)
    pcm = speech.silence(0.3) + speech.say("Turn off the lights in the hall.") + speech.silence(0.8)
    async with small_server(fake, max_sessions=6, queue_size=2, overflow="reject") as server:
        results = await asyncio.gather(*(one_client(server, pcm, speech.rate) for _ in range(12)))
        hub = server.streams.hub
        assert hub is not None
        assert await no_live_tasks() == [] and hub.sessions == 0
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{server.http}/metrics")).text
    accepted = [messages for kind, messages, _ in results if kind == "accepted"]
    refused = [(messages, code) for kind, messages, code in results if kind == "refused"]
    assert len(accepted) == 6 and len(refused) == 6
    for messages, code in refused:
        assert messages[0]["code"] == "session_limit" and code == 1013
    outcomes = []
    for messages in accepted:
        assert messages[-1] == {"type": "done"}  # every accepted session finished
        results_for_utterance = [
            m for m in messages if (m["type"] == "transcript" and m["is_final"]) or m.get("code") == "queue_full"
        ]
        assert len(results_for_utterance) == 1  # a final or a queue_full, never nothing
        outcomes.append("final" if results_for_utterance[0]["type"] == "transcript" else "queue_full")
    # One worker (busy 1 s per decode), two finals may wait: of six utterances ending together one runs, two wait
    # and three are refused; a speculative decode begun at the pause may spare one of them a queue place.
    finals, full = outcomes.count("final"), outcomes.count("queue_full")
    assert (finals, full) in ((3, 3), (4, 2))
    assert hub.stats.sessions_rejected == 6 and hub.stats.finals_failed == {"queue_full": full}
    # what /metrics says about it: final latency (end of speech → final) and the refusals
    assert f"minerva_realtime_final_latency_seconds_count {finals}.0" in metrics
    assert f'minerva_realtime_final_latency_seconds_bucket{{le="+Inf"}} {finals}.0' in metrics
    assert "minerva_realtime_sessions_rejected_total 6.0" in metrics
    assert f'minerva_realtime_finals_failed_total{{code="queue_full"}} {full}.0' in metrics
    assert "minerva_realtime_sessions 0.0" in metrics


async def test_session_limit_on_the_openai_endpoint_too(speech: Speech) -> None:
    async with small_server(FakeTranscriber(), max_sessions=1) as server, connect(server.url(PATH)) as holder:
        await holder.send(json.dumps({"type": "start"}))
        assert (await receive_json(holder))["type"] == "session"
        async with connect(server.url("/v1/realtime?intent=transcription")) as ws:
            event = await receive_json(ws)
            assert event["type"] == "error" and event["error"]["code"] == "session_limit"
            assert event["error"]["type"] == "server_error"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_buffer_overflow_is_reported_and_the_session_recovers(speech: Speech) -> None:
    fake = FakeTranscriber()
    fake.gate.clear()  # finals cannot run: audio piles up
    utterance = speech.silence(0.3) + speech.say("Turn off the lights in the hall, please.") + speech.silence(0.8)
    async with small_server(fake, max_buffer_seconds=2.0) as server, connect(server.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "start", "rate": speech.rate, "interim": False}))
        await receive_json(ws)
        await send_paced(ws, utterance + utterance, speech.rate, pace=None)
        overflow = await receive_until(ws, "error")
        assert overflow[-1]["code"] == "buffer_overflow"
        fake.gate.set()
        finals = await receive_until(ws, "transcript")
        assert finals[-1]["is_final"] and finals[-1]["utterance"] == 1
        await send_paced(ws, utterance, speech.rate, pace=None)  # accepted again
        await ws.send(json.dumps({"type": "stop"}))
        rest = await receive_until(ws, "done")
    texts = [m for m in rest if m["type"] == "transcript"]
    assert len(texts) == 1 and texts[0]["is_final"]
