"""Helpers for the catalog tests and script/bench console: a loopback file server that can cut a download,
ignore or honour Range, and count what it sent; a piper-voices index and a fake Hugging Face hub for it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

SEND_BLOCK = 64 * 1024


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class FileServer:
    """Serves `files` (URL path → bytes) on 127.0.0.1; `cut_after[path] = N` drops the connection after N
    bytes of the first full GET of that path; `delay` sleeps between blocks (seconds)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    honour_range: bool = True
    block: int = SEND_BLOCK  # bytes per write (and per `delay`)
    requests: list[Request] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    port: int = 0
    connections: set[socket.socket] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def gets(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def _handler(state: FileServer, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with lock:
                state.connections.add(self.connection)

        def finish(self) -> None:
            with lock:
                state.connections.discard(self.connection)
            super().finish()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            ranged = self.headers.get("Range")
            with lock:
                state.requests.append(Request(path, ranged))
                first_full = ranged is None and path in state.cut_after
                cut = state.cut_after.pop(path) if first_full else None
            body = state.files.get(path)
            if body is None:
                self._send_head(404, 0)
                return
            start = 0
            if ranged and state.honour_range:
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._send_head(206, len(body) - start, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
            else:
                self._send_head(200, len(body))
            self._send_body(path, body[start:], cut)

        def _send_head(self, status: int, length: int, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()

        def _send_body(self, path: str, data: bytes, cut: int | None) -> None:
            limit = len(data) if cut is None else min(cut, len(data))
            view = memoryview(data)
            try:
                for offset in range(0, limit, state.block):
                    block = view[offset : min(limit, offset + state.block)]
                    self.wfile.write(block)
                    with lock:
                        state.sent[path] = state.sent.get(path, 0) + len(block)
                    if state.delay:
                        time.sleep(state.delay)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # a cut: the client sees the body end early
                self.close_connection = True

    return Handler


@contextmanager
def file_server(state: FileServer) -> Iterator[FileServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, threading.Lock()))
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        for connection in list(state.connections):  # the host is gone: kept-alive connections too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- a piper-voices index ----------------------------------------------------------------------


def voice_config(name: str, rate: int = 22050) -> bytes:
    language, dataset, quality = name.split("-")
    config = {
        "audio": {"sample_rate": rate, "quality": quality},
        "espeak": {"voice": language.split("_")[0]},
        "language": {"code": language, "name_english": "English", "country_english": "Testland"},
        "num_symbols": 256,
        "num_speakers": 1,
        "speaker_id_map": {},
        "phoneme_id_map": {},
        "dataset": dataset,
    }
    return json.dumps(config).encode()


def voice_files(name: str, model: bytes, config: bytes | None = None) -> dict[str, bytes]:
    """The two files of a voice at the paths piper-voices uses (relative to voices.json)."""
    language, dataset, quality = name.split("-")
    folder = f"/{language.split('_')[0]}/{language}/{dataset}/{quality}"
    return {f"{folder}/{name}.onnx": model, f"{folder}/{name}.onnx.json": config or voice_config(name)}


def voice_index(voices: Mapping[str, Mapping[str, bytes]], md5: Mapping[str, str] | None = None) -> bytes:
    """voices.json for `voices` (name → voice_files(...)); `md5` overrides a file's digest (by file name)."""
    index: dict[str, Any] = {}
    for name, files in voices.items():
        language, dataset, quality = name.split("-")
        index[name] = {
            "key": name,
            "name": dataset,
            "language": {"code": language, "family": language.split("_")[0], "name_english": "English"},
            "quality": quality,
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": {
                path.lstrip("/"): {
                    "size_bytes": len(data),
                    "md5_digest": (md5 or {}).get(path.rsplit("/", 1)[-1], hashlib.md5(data).hexdigest()),
                }
                for path, data in files.items()
            },
            "aliases": [],
        }
    return json.dumps(index).encode()


def serve_voices(server: FileServer, voices: Mapping[str, Mapping[str, bytes]], **index: Any) -> str:
    """Put the voices and their voices.json on the server; returns the index URL."""
    for files in voices.values():
        server.files.update(files)
    server.files["/voices.json"] = voice_index(voices, **index)
    return server.url("/voices.json")


def serve_whisper(server: FileServer, repo: str, files: Mapping[str, bytes]) -> None:
    """A faster-whisper repository as the hub lays it out: its tree listing and its files."""
    tree = [
        {
            "type": "file",
            "path": name,
            "size": len(data),
            "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)} if name == "model.bin" else None,
        }
        for name, data in files.items()
    ]
    tree.append({"type": "file", "path": "README.md", "size": 5})
    server.files[f"/api/models/{repo}/tree/main"] = json.dumps(tree).encode()
    for name, data in files.items():
        server.files[f"/{repo}/resolve/main/{name}"] = data


def random_bytes(size: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def folder_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---- the app with a catalog, served on loopback ------------------------------------------------


class FakeSynth:
    """A Synthesizer (behind the tts.engine Protocol) that says a short tone: the fake voices have no real model."""

    def __init__(self, info: Any) -> None:
        self.info = info

    def synthesize(self, text: str, options: Any) -> bytes:
        t = np.arange(int(0.05 * len(text) * self.info.sample_rate)) / self.info.sample_rate
        return bytes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())


def fake_voice_loader(files: Any) -> FakeSynth:
    from wyoming_minerva.tts.voices import read_voice_config, voice_info

    config = read_voice_config(files.config)
    assert config is not None
    return FakeSynth(voice_info(files.name, config))


async def sse_events(client: Any, url: str, timeout: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of a server-sent event stream until it ends."""
    import asyncio

    found: list[tuple[str, dict[str, Any]]] = []
    kind = "message"
    async with asyncio.timeout(timeout), client.stream("GET", url) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                found.append((kind, json.loads(line[6:])))
                kind = "message"
    return found
