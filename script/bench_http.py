"""script/bench http: the OpenAI-compatible HTTP API under load. Prints figures only.

Against the real server started as a child process (HTTP only, bundled tiny.en and Piper voice preloaded):
- POST /v1/audio/transcriptions of a ~3 s spoken command (WAV upload) by 1, 5, 10 and 20 clients at once,
  each sending its next request as soon as the last one is answered (after Retry-After when refused):
  latency p50/p95/p99 of the answered ones, throughput, and every non-200 answer by status and code
  (more requests than workers + queue size are refused with 429 on purpose);
- POST /v1/audio/speech of a 3-sentence answer: time to the first byte and to the last, for pcm and mp3,
  one request at a time, the piece cache off (--tts-cache-mb 0) so every piece is synthesized;
- the server's peak RSS;
- in this process first: the peak RSS that decoding one upload adds, for a ~100 kB FLAC of 590 s of silence
  (the decoder's share of that attack; the whole request path is measured by script/bench attack).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
import wave
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Speech, free_port, pct, peak_rss_mib, server_process

COMMAND = "Turn on the living room lights and set them to fifty percent brightness please."
ANSWER = (
    "Sure, I turned on the kitchen lights and set the thermostat to 21 degrees. "
    "Tomorrow will be sunny with a high of 18. Is there anything else I can do for you?"
)


def silent_flac(seconds: int, rate: int = 48000) -> bytes:
    """A stereo FLAC of digital silence: ~100 kB that decode to `seconds` of audio."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="stereo")
        block = np.zeros((1, rate * 2), dtype="<i2")
        for second in range(seconds):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            frame.sample_rate = rate
            frame.pts = second * rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decode_peak() -> None:
    """Peak RSS added by decode_upload of the silent FLAC, in this process (VmHWM reset through clear_refs)."""
    from wyoming_minerva.http.codecs import decode_upload

    data = silent_flac(590)
    decode_upload(silent_flac(1), 600.0)  # imports and FFmpeg's first allocations are not the figure
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        print("decode: cannot reset the peak RSS here (/proc/self/clear_refs); figure skipped")
        return
    before = rss_mib()
    started = time.perf_counter()
    decoded = decode_upload(data, 600.0)
    took = time.perf_counter() - started
    added = peak_rss_mib(os.getpid()) - before
    print(
        f"decode: FLAC {len(data) / 1000:.0f} kB → {decoded.seconds:.0f} s at 16 kHz "
        f"({decoded.samples.nbytes / 1048576:.0f} MiB float32): peak RSS +{added:.0f} MiB, {took:.1f} s"
    )


def wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


async def wait_http(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{base}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base} did not become ready")
            await asyncio.sleep(0.2)


async def transcribe_load(
    base: str, upload: bytes, clients: int, total: int
) -> tuple[list[float], Counter[str], float]:
    """`clients` loops share `total` requests; returns latencies (ms) of 200s, errors, wall seconds."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    remaining = total
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"{base}/v1/audio/transcriptions",
                        files={"file": ("command.wav", upload, "audio/wav")},
                        data={"model": "whisper-1"},
                    )
                except httpx.TransportError as err:
                    errors[type(err).__name__] += 1
                    continue
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    code = response.json().get("error", {}).get("code", "?")
                    errors[f"{response.status_code} {code}"] += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "0")))  # a polite client waits

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - started


async def speech_timing(base: str, fmt: str) -> tuple[float, float, int]:
    """(first byte ms, last byte ms, bytes) for one /v1/audio/speech request."""
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        first: float | None = None
        size = 0
        body = {"model": "tts-1", "voice": "alloy", "input": ANSWER, "response_format": fmt}
        async with client.stream("POST", f"{base}/v1/audio/speech", json=body) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - started
                size += len(chunk)
        return (first or 0.0) * 1000, (time.perf_counter() - started) * 1000, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,5,10,20", help="concurrent clients to measure (default 1,5,10,20)")
    parser.add_argument("--requests", type=int, default=40, help="transcriptions per level (default 40)")
    parser.add_argument("--speech-rounds", type=int, default=5, help="speech requests per format (default 5)")
    parser.add_argument("server_args", nargs="*", help="extra wyoming-minerva flags (after --)")
    args = parser.parse_args()

    decode_peak()
    speech = Speech()
    pcm = speech.say(COMMAND) + speech.silence(0.3)
    upload = wav(pcm, speech.rate)
    print(f"upload: {len(pcm) / 2 / speech.rate:.1f} s command, WAV {speech.rate} Hz, {len(upload) / 1024:.0f} KiB")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The speech cache is off: every piece is really synthesized.
    flags = ["--http", f"127.0.0.1:{port}", "--preload", "--local-files-only", "--tts-cache-mb", "0"]
    with server_process([*flags, *args.server_args]) as proc:
        await wait_http(base)
        await transcribe_load(base, upload, 1, 2)  # warm-up
        print("\nPOST /v1/audio/transcriptions")
        print(f"{'clients':>8} {'ok':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>7}  errors")
        for clients in (int(level) for level in args.levels.split(",")):
            latencies, errors, wall = await transcribe_load(base, upload, clients, max(args.requests, clients))
            print(
                f"{clients:>8} {len(latencies):>5} {pct(latencies, 50):>8.0f} {pct(latencies, 95):>8.0f} "
                f"{pct(latencies, 99):>8.0f} {len(latencies) / wall:>7.2f}  "
                f"{', '.join(f'{k} ×{v}' for k, v in sorted(errors.items())) or 'none'}"
            )

        print("\nPOST /v1/audio/speech (3 sentences, one request at a time)")
        for fmt in ("pcm", "mp3"):
            await speech_timing(base, fmt)  # warm-up
            firsts, lasts = [], []
            for _ in range(args.speech_rounds):
                first, last, _ = await speech_timing(base, fmt)
                firsts.append(first)
                lasts.append(last)
            print(
                f"  {fmt:>4}: first byte p50 {pct(firsts, 50):.0f} ms (max {max(firsts):.0f}), "
                f"last byte p50 {pct(lasts, 50):.0f} ms"
            )
        print(f"\nserver peak RSS: {peak_rss_mib(proc.pid):.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
