"""Helpers for the upstream tests: a scriptable fake OpenAI-compatible server and a fake Wyoming server
(raw asyncio on 127.0.0.1, port 0: they can answer, fail with a status, hang, or close mid-answer),
real minerva HTTP APIs on loopback, and upstream settings with short test timeouts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from wyoming_minerva.app import Engines
from wyoming_minerva.http.app import create_app
from wyoming_minerva.http.server import HttpServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import HttpSettings, Settings
from wyoming_minerva.upstream import UpstreamSettings, UpstreamUrl, parse_upstream_url

# Short limits so failure tests take about a second; generous enough for a loaded 2-core machine.
FAST = UpstreamSettings(timeout=1.5, probe_interval=0.3, probe_timeout=1.0, failures=2, backoff_max=1.0)

VERBOSE = {
    "task": "transcribe",
    "language": "english",
    "duration": 2.5,
    "text": " Turn on the kitchen lights.",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.2, "text": " Turn on", "avg_logprob": -0.2, "no_speech_prob": 0.01},
        {"id": 1, "start": 1.2, "end": 2.5, "text": " the kitchen lights.", "avg_logprob": -0.3},
    ],
    "words": [
        {"word": "Turn", "start": 0.1, "end": 0.4},
        {"word": "on", "start": 0.5, "end": 0.7},
        {"word": "the", "start": 1.3, "end": 1.4},
        {"word": "kitchen", "start": 1.5, "end": 1.9},
        {"word": "lights.", "start": 2.0, "end": 2.4},
    ],
}


def settings_for(urls: list[UpstreamUrl], base: UpstreamSettings = FAST, **changes: Any) -> UpstreamSettings:
    return replace(base, stt=tuple(urls), tts=tuple(urls), **changes)


def float_audio(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def field(self, name: str) -> str | None:
        """One multipart form field's value (the tests' uploads are small and well formed)."""
        marker = f'name="{name}"\r\n\r\n'.encode()
        if marker not in self.body:
            return None
        return self.body.split(marker, 1)[1].split(b"\r\n", 1)[0].decode()

    def fields(self, name: str) -> list[str]:
        marker = f'name="{name}"\r\n\r\n'.encode()
        return [part.split(b"\r\n", 1)[0].decode() for part in self.body.split(marker)[1:]]


@dataclass
class FakeOpenAI:
    """Answers by `mode`: ok, json_only, 500, 400, 401, hang, close_mid, close_before_body."""

    mode: str = "ok"
    health: int = 200  # status of GET /health (404 = like a server without it: the probe uses /v1/models)
    hang_probes: bool = False
    speech: list[bytes] = field(default_factory=lambda: [bytes(4800), bytes(4800), bytes(4801)])
    speech_gap: float = 0.0
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> UpstreamUrl:
        return parse_upstream_url(f"http://127.0.0.1:{self.port}/v1", api_key="sk-test-secret")

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, path, headers, body)
        self.requests.append(request)
        if method == "GET":
            if self.hang_probes:
                await asyncio.sleep(3600)
            status = self.health if path == "/health" else 200
            await self._respond(writer, status, {"status": "ok"} if status == 200 else {"detail": "Not Found"})
            return True
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode in ("500", "400", "401"):
            message = {"error": {"message": f"fake failure {mode}", "type": "server_error", "code": None}}
            await self._respond(writer, int(mode), message)
            return True
        if path.endswith("/audio/speech"):
            return await self._speech(writer, mode)
        if mode == "close_mid":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"text')
            await writer.drain()
            return False
        if mode == "json_only" and request.field("response_format") == "verbose_json":
            message = {"error": {"message": "response_format 'verbose_json' is not supported", "code": None}}
            await self._respond(writer, 400, message)
            return True
        if request.field("response_format") == "json":
            await self._respond(writer, 200, {"text": VERBOSE["text"]})
        else:
            await self._respond(writer, 200, VERBOSE)
        return True

    async def _speech(self, writer: asyncio.StreamWriter, mode: str) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        if mode == "close_before_body":
            return False
        for index, piece in enumerate(self.speech):
            if self.speech_gap:
                await asyncio.sleep(self.speech_gap)
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            if mode == "close_mid" and index == 0:
                return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        await writer.drain()


@asynccontextmanager
async def fake_openai(**kwargs: Any) -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def silent_tcp() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a hung upstream); yields the port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


@asynccontextmanager
async def minerva_http(engines: Engines, manager: ModelManager) -> AsyncIterator[int]:
    """The real HTTP API (OpenAI-compatible) on 127.0.0.1, port 0; yields the port."""
    settings = Settings(http=HttpSettings(host="127.0.0.1", port=0))
    server = HttpServer(create_app(settings, engines, manager), "127.0.0.1", 0, grace_seconds=1)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RealMinerva:
    """One minerva's engines served three ways: Wyoming ASR, Wyoming TTS and the HTTP API."""

    asr_port: int
    tts_port: int
    http_port: int
    engines: Engines
    manager: ModelManager

    def url(self, service: str) -> UpstreamUrl:
        port = {"asr": self.asr_port, "tts": self.tts_port}.get(service)
        return parse_upstream_url(f"tcp://127.0.0.1:{port}" if port else f"http://127.0.0.1:{self.http_port}/v1")


@asynccontextmanager
async def real_minerva(joe: Any) -> AsyncIterator[RealMinerva]:
    """Real servers on loopback (bundled tiny.en and Piper voice) to be used as an upstream."""
    from asr_helpers import asr_server
    from tts_helpers import tts_server

    manager = ModelManager(workers=2, queue_size=16)
    await manager.start()
    try:
        async with (
            asr_server(manager) as (asr, stt),
            tts_server(joe, manager=manager) as (tts_wyoming, tts),
        ):
            engines = Engines(stt=stt, tts=tts)
            async with minerva_http(engines, manager) as http_port:
                yield RealMinerva(asr.port, tts_wyoming.port, http_port, engines, manager)
    finally:
        await manager.close()
