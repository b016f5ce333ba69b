"""WS /v1/audio/speech/stream with the bundled Piper voice: websockets clients against uvicorn on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ws_helpers import Engines, Served, connect, no_live_tasks, receive_json, served

from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.piper import TextToSpeech

pytestmark = pytest.mark.timeout(120)

PATH = "/v1/audio/speech/stream"
STORY = (
    "The kitchen lights are on now. The thermostat is set to twenty one degrees. "
    "Tomorrow will be sunny with a high of eighteen. Your next meeting starts at nine. "
    "Is there anything else I can do for you?"
)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[Served, TextToSpeech]]:
    manager = ModelManager(workers=2, queue_size=8)
    tts = TextToSpeech(TtsSettings(cache_mb=0), manager)  # no cache: every piece is really synthesized
    await tts.preload()
    try:
        async with served(Engines(tts=tts), manager) as srv:
            yield srv, tts
    finally:
        await manager.close()


async def read_request(ws: Any, timeout: float = 60.0) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages of one request up to done/cancelled/error, and its audio frames."""
    messages: list[dict[str, Any]] = []
    frames: list[bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                frames.append(message)
                continue
            messages.append(json.loads(message))
            if messages[-1]["type"] in ("done", "cancelled", "error"):
                return messages, frames


async def test_whole_text_streams_sentence_by_sentence(server: tuple[Served, TextToSpeech]) -> None:
    srv, tts = server
    async with connect(srv.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "speak", "text": STORY}))
        start = await receive_json(ws)
        assert start == {
            "type": "start",
            "request": 1,
            "sample_rate": 22050,
            "sample_width": 2,
            "channels": 1,
            "voice": "en_US-joe-medium",
        }
        synthesized_before = tts.stats.pieces_synthesized
        first = await ws.recv()
        assert isinstance(first, bytes) and len(first) > 0
        pieces_at_first_frame = tts.stats.pieces_synthesized - synthesized_before
        messages, frames = await read_request(ws)
        pieces_total = tts.stats.pieces_synthesized - synthesized_before
    assert pieces_total >= 5
    assert pieces_at_first_frame < pieces_total  # audio went out before the whole text was synthesized
    assert messages[-1]["type"] == "done" and messages[-1]["request"] == 1
    audio = first + b"".join(frames)
    assert abs(messages[-1]["audio_ms"] - len(audio) // 2 * 1000 // 22050) <= 1
    assert len(audio) / 2 / 22050 > 6  # five sentences of speech


async def test_llm_deltas_are_spoken_before_the_text_ends(server: tuple[Served, TextToSpeech]) -> None:
    srv, _ = server
    text = "Here is the weather for today. It will rain in the afternoon, so take an umbrella."
    words = text.split()
    async with connect(srv.url(PATH)) as ws:
        first_audio: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def listen() -> tuple[list[dict[str, Any]], list[bytes]]:
            messages, frames = [], []
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    if not first_audio.done():
                        first_audio.set_result(asyncio.get_running_loop().time())
                    frames.append(message)
                else:
                    messages.append(json.loads(message))
                    if messages[-1]["type"] in ("done", "error"):
                        return messages, frames

        listener = asyncio.create_task(listen())
        for index, word in enumerate(words):
            delta = {"type": "text", "text": (" " if index else "") + word}
            if index == 0:
                delta["speed"] = 1.25
            await ws.send(json.dumps(delta))
            await asyncio.sleep(0.1)  # a language model writing
        end_sent = asyncio.get_running_loop().time()
        await ws.send(json.dumps({"type": "end"}))
        messages, frames = await asyncio.wait_for(listener, 60)
    assert first_audio.done() and first_audio.result() < end_sent  # the first sentence spoke while text came
    assert [m["type"] for m in messages] == ["start", "done"]
    assert len(b"".join(frames)) / 2 / 22050 > 3


async def test_cancel_stops_at_once_and_the_socket_serves_on(server: tuple[Served, TextToSpeech]) -> None:
    srv, _ = server
    async with connect(srv.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "speak", "text": STORY + " " + STORY}))
        await ws.send(json.dumps({"type": "speak", "text": "This one waits in the queue."}))
        assert (await receive_json(ws))["type"] == "start"
        assert isinstance(await ws.recv(), bytes)
        await ws.send(json.dumps({"type": "cancel"}))
        after: list[Any] = []
        async with asyncio.timeout(10):
            while True:
                message = await ws.recv()
                after.append(message if isinstance(message, bytes) else json.loads(message))
                if isinstance(after[-1], dict) and after[-1] == {"type": "cancelled", "request": 2}:
                    break
        texts = [m for m in after if isinstance(m, dict)]
        assert texts == [{"type": "cancelled", "request": 1}, {"type": "cancelled", "request": 2}]
        cancelled_at = after.index({"type": "cancelled", "request": 1})
        assert all(isinstance(m, dict) for m in after[cancelled_at:])  # no audio after the cancel answer
        await ws.send(json.dumps({"type": "speak", "text": "Still here."}))
        messages, frames = await read_request(ws)
        assert [m["type"] for m in messages] == ["start", "done"] and messages[0]["request"] == 3 and frames


async def test_bad_requests_are_errors_before_any_audio(server: tuple[Served, TextToSpeech]) -> None:
    srv, _ = server
    async with connect(srv.url(PATH)) as ws:

        async def answer(message: dict[str, Any] | str) -> dict[str, Any]:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
            return await receive_json(ws)

        voice = await answer({"type": "speak", "text": "Hello.", "voice": "no-such-voice"})
        assert voice["type"] == "error" and voice["code"] == "voice_not_found" and voice["request"] == 1
        speed = await answer({"type": "speak", "text": "Hello.", "speed": 9})
        assert speed["code"] == "bad_request" and "speed" in speed["message"]
        assert (await answer({"type": "speak", "text": "  "}))["code"] == "empty_text"
        assert (await answer({"type": "end"}))["code"] == "bad_request"
        assert (await answer({"type": "sing"}))["code"] == "unknown_type"
        assert (await answer("[1, 2]"))["code"] == "bad_json"
        await ws.send(b"\x00\x01")
        assert (await receive_json(ws))["code"] == "bad_request"
        await ws.send(json.dumps({"type": "speak", "text": "Now it works.", "voice": "alloy"}))  # OpenAI name
        messages, frames = await read_request(ws)
        assert [m["type"] for m in messages] == ["start", "done"] and frames


async def test_a_client_that_leaves_mid_speech_leaves_nothing_behind(server: tuple[Served, TextToSpeech]) -> None:
    srv, tts = server
    async with connect(srv.url(PATH)) as ws:
        await ws.send(json.dumps({"type": "speak", "text": STORY + " " + STORY}))
        assert (await receive_json(ws))["type"] == "start"
        assert isinstance(await ws.recv(), bytes)
    synthesized = tts.stats.pieces_synthesized
    assert await no_live_tasks() == []
    await asyncio.sleep(0.5)
    assert tts.stats.pieces_synthesized <= synthesized + 1  # at most the piece under way when it left
