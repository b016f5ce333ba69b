"""Helpers for HTTP API tests: the app in-process behind the real openai SDK, audio encoded/decoded with PyAV."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import av
import httpx
import httpx2
import numpy as np
import openai
from fastapi import FastAPI

from wyoming_minerva.http.app import create_app
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import HttpSettings, Settings
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.tts.piper import TextToSpeech

# (container, codec, sample rate, file name): what browsers, phones and recorders upload
CONTAINERS = [
    ("wav", "pcm_s16le", 16000, "speech.wav"),
    ("mp3", "libmp3lame", 44100, "speech.mp3"),
    ("ogg", "libopus", 48000, "speech.ogg"),
    ("webm", "libopus", 48000, "speech.webm"),
    ("flac", "flac", 44100, "speech.flac"),
    ("ipod", "aac", 44100, "speech.m4a"),
]
BASE = "http://minerva.test"


@dataclass
class Engines:
    stt: SpeechToText | None
    tts: TextToSpeech | None


@dataclass
class Api:
    app: FastAPI
    sdk: openai.AsyncOpenAI  # the real OpenAI SDK, over an in-process ASGI transport
    raw: httpx.AsyncClient  # for requests the SDK cannot make (bad bodies, headers, streams)


def settings_with(**http: Any) -> Settings:
    return Settings(http=replace(HttpSettings(host="127.0.0.1", port=0), **http))


@asynccontextmanager
async def api(engines: Engines, manager: ModelManager, api_key: str | None = None, **http: Any) -> AsyncIterator[Api]:
    settings = settings_with(api_key=api_key, **http)
    app = create_app(settings, engines, manager)
    sdk_http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), timeout=60)
    sdk = openai.AsyncOpenAI(api_key=api_key or "unused", base_url=f"{BASE}/v1", http_client=sdk_http, max_retries=0)
    raw = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=60)
    try:
        yield Api(app, sdk, raw)
    finally:
        await raw.aclose()
        await sdk.close()


def encode(pcm: bytes, rate: int, container: str, codec: str, out_rate: int, channels: int = 1) -> bytes:
    """Interleaved 16-bit PCM with `channels` channels → a file in `container`/`codec` at `out_rate`
    (as a phone, browser or recorder would upload it)."""
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=out_rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def stereo(mono_pcm: bytes) -> bytes:
    samples = np.frombuffer(mono_pcm, dtype="<i2")
    return np.repeat(samples, 2).astype("<i2").tobytes()


@dataclass(frozen=True)
class Decoded:
    codec: str
    rate: int
    seconds: float
    peak: float


def decode(data: bytes) -> Decoded:
    """Any audio file → its codec, decoded rate, length and peak level (float, 0..1)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        codec = stream.codec_context.name
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [
            out.to_ndarray().reshape(-1)
            for frame in [*container.decode(stream), None]
            for out in resampler.resample(frame)
        ]
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return Decoded(codec, rate, len(samples) / rate, peak)


def same_length(fmt: str, decoded: float, expected: float) -> bool:
    """Lossless formats decode to the exact length; mp3 and aac add their encoder delay and pad the last frame
    (up to ~3 frames: 0.15 s at 24 kHz), Opus its 20 ms frames."""
    if fmt in ("mp3", "aac"):
        return expected - 0.005 <= decoded <= expected + 0.15
    return abs(decoded - expected) <= (0.03 if fmt == "opus" else 0.005)


def envelope_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error envelope, checked for shape."""
    body = response.json()
    assert set(body) >= {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


class CountingBody:
    """A multipart upload of `count` chunks that records how many the server pulled (to prove a body was
    not read past a limit)."""

    BOUNDARY = "minerva-test-boundary"
    CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"

    def __init__(self, chunk: bytes, count: int) -> None:
        self.head = (
            f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.BOUNDARY}--\r\n".encode()
        self.chunk = chunk
        self.count = count
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(self.count):
            self.pulled += 1
            yield (self.head if index == 0 else b"") + self.chunk + (self.tail if index == self.count - 1 else b"")

    @property
    def total(self) -> int:
        return len(self.head) + len(self.chunk) * self.count + len(self.tail)
