"""The HTTP server against slow and hostile clients, on a real socket: uploads that trickle in, headers that never
end, hostile JSON on every WebSocket route, handshakes without the key, requests cut by the shutdown grace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from http_helpers import encode
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wyoming_minerva.app import App
from wyoming_minerva.http.stream_common import BadJsonError, InvalidDataError, parse_message
from wyoming_minerva.runtime.manager import CancelToken
from wyoming_minerva.settings import DiscoverySettings, HttpSettings, Settings
from wyoming_minerva.stt.engine import Segment, TranscriptionInfo, TranscriptionOptions

pytestmark = pytest.mark.timeout(120)

KEY = "hardening-key"


def settings(grace: float = 5.0, **http: Any) -> Settings:
    return Settings(
        http=HttpSettings(**{"host": "127.0.0.1", "port": 0, **http}),
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


@asynccontextmanager
async def trickling(port: int, count: int, every: float = 0.3, head: bytes | None = None) -> AsyncIterator[list[Any]]:
    """`count` uploads that announce a 100 kB JSON body and send one byte of it every `every` seconds."""
    head = head or (
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    peers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]

    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        with contextlib.suppress(OSError):
            while True:
                await writer.drain()
                await asyncio.sleep(every)
                writer.write(b" ")

    drips = [asyncio.create_task(drip(writer)) for _, writer in peers]
    try:
        yield peers
    finally:
        for task in drips:
            task.cancel()
        for _, writer in peers:
            writer.close()
        await asyncio.gather(*drips, return_exceptions=True)


async def read_response(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(timeout):
        status = int((await reader.readline()).split()[1])
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.strip().split("\r\n") if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


# ---- item 5: slow uploads -----------------------------------------------------------------------


async def test_slow_uploads_take_no_slot_and_do_not_make_the_server_unready() -> None:
    async with running(settings(max_concurrency=2, body_timeout_seconds=60)) as app:
        base = f"http://127.0.0.1:{app.http_port}"
        async with trickling(app.http_port, 6), httpx.AsyncClient(timeout=30) as client:
            await asyncio.sleep(1.0)  # every trickler is inside the app, waiting for its body
            answer = await client.post(f"{base}/v1/audio/speech", json={"input": "   "})
            assert answer.status_code == 400, answer.text  # judged on its body, not refused as busy
            assert answer.json()["error"]["code"] == "empty_text"
            ready = await client.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            assert app.http is not None


async def test_a_body_that_trickles_in_is_timed_out_with_408() -> None:
    async with running(settings(body_timeout_seconds=1.0)) as app, trickling(app.http_port, 1) as peers:
        reader, _ = peers[0]
        status, headers, body = await read_response(reader, timeout=20)
        assert status == 408
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "request_timeout"
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # and the connection is closed


async def test_headers_that_never_end_are_closed() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a"
    async with running(settings(header_timeout_seconds=1.0)) as app:
        async with trickling(app.http_port, 3, head=head) as peers:
            silent = await asyncio.open_connection("127.0.0.1", app.http_port)  # says nothing at all
            async with asyncio.timeout(15):
                for reader, _ in [*peers, silent]:
                    while await reader.read(4096):
                        pass  # EOF: the server closed it
            silent[1].close()
        async with httpx.AsyncClient(timeout=10) as client:  # everyone else is still served
            assert (await client.get(f"http://127.0.0.1:{app.http_port}/health")).status_code == 200


async def test_connections_beyond_the_limit_are_refused() -> None:
    async with running(settings(max_connections=2, header_timeout_seconds=30)) as app:
        idle = [await asyncio.open_connection("127.0.0.1", app.http_port) for _ in range(2)]
        await asyncio.sleep(0.3)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(f"http://127.0.0.1:{app.http_port}/health")
            assert answer.status_code == 503
        finally:
            for _, writer in idle:
                writer.close()


# ---- item 10: hostile JSON on every WebSocket route ---------------------------------------------

HOSTILE = {
    "huge integer": '{"type": "start", "rate": ' + "7" * 5000 + "}",
    "deep nesting": '{"type": "start", "x": ' + "[" * 30000 + "]" * 30000 + "}",
    "deep nesting, whole message": "[" * 30000 + "]" * 30000,
}
ROUTES = ["/v1/realtime", "/v1/audio/transcriptions/stream", "/v1/audio/speech/stream", "/v1/wake/detect"]


def test_json_limits_of_websocket_messages() -> None:
    deepest = '{"type": "x", "a": ' + "[" * 15 + "]" * 15 + "}"  # 16 levels: the limit
    assert parse_message(deepest)["type"] == "x"
    deeper = '{"type": "x", "a": ' + "[" * 16 + "]" * 16 + "}"
    for payload in (deeper, '{"type": 1' + "0" * 4400 + "}"):
        with pytest.raises(InvalidDataError):
            parse_message(payload)
    with pytest.raises(BadJsonError) as bad:
        parse_message("{oops")
    assert not isinstance(bad.value, InvalidDataError)  # malformed JSON keeps the connection open


@pytest.mark.parametrize("route", ROUTES)
async def test_hostile_json_closes_the_websocket_with_1007(route: str) -> None:
    config = settings()
    async with running(config) as app:
        app._wake()  # the wake route needs the engine (it loads nothing until a stream starts)
        for name, payload in HOSTILE.items():
            async with connect(f"ws://127.0.0.1:{app.http_port}{route}") as ws:
                await ws.send(payload)
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None, name
                assert closed.value.rcvd.code == 1007, (name, closed.value.rcvd)
                assert closed.value.rcvd.reason, name


# ---- item 11: WebSocket handshakes without the key, requests cut by the shutdown grace ----------


@pytest.mark.parametrize("route", ["/v1/audio/speech/stream", "/v1/realtime"])
async def test_a_websocket_without_the_key_is_closed_with_1008(route: str) -> None:
    async with running(settings(api_key=KEY)) as app:
        url = f"ws://127.0.0.1:{app.http_port}{route}"
        for protocols in (None, ["realtime", "openai-insecure-api-key.wrong"]):
            with pytest.raises(ConnectionClosed) as closed:
                async with connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
                    async with asyncio.timeout(10):
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, protocols
            assert "API key" in closed.value.rcvd.reason
        async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.send(json.dumps({"type": "nonsense"}))
            async with asyncio.timeout(10):
                while json.loads(await ws.recv())["type"] != "error":
                    pass


class StuckTranscriber:
    """A Transcriber that needs 10 s (in 50 ms segments) and stops when cancelled."""

    name = "stuck"
    languages = ("en",)
    is_multilingual = False

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        def segments() -> Iterator[Segment]:
            for index in range(200):
                time.sleep(0.05)
                yield Segment(index * 0.1, index * 0.1 + 0.1, f" word{index}")
                if cancel is not None and cancel.cancelled:
                    return

        return TranscriptionInfo("en", len(audio) / 16000), segments()


async def test_a_request_cut_by_the_shutdown_grace_gets_the_error_envelope() -> None:
    tone = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes()
    upload = encode(tone, 16000, "wav", "pcm_s16le", 16000)
    app = App(settings(grace=1.0))
    await app.start()
    stopping: asyncio.Task[None] | None = None
    try:
        stt = app.engines.stt
        assert stt is not None
        await app.manager.get(stt.key, StuckTranscriber)
        url = f"http://127.0.0.1:{app.http_port}/v1/audio/transcriptions"
        async with httpx.AsyncClient(timeout=30) as client:
            request = asyncio.create_task(client.post(url, files={"file": ("a.wav", upload)}))
            async with asyncio.timeout(10):
                while not app.manager.queue_depth:  # noqa: ASYNC110 - the manager's own counter
                    await asyncio.sleep(0.02)
            stopping = asyncio.create_task(app.stop())
            answer = await request
        assert answer.status_code == 503, (answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "shutting_down"
    finally:
        await (stopping if stopping is not None else app.stop())
