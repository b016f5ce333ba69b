"""script/bench attack: what hostile clients cost the server. Prints figures only.

Each scenario runs against a fresh server started as a child process (so its memory is its own); the figure
is its resident memory after it is ready, and its peak (VmHWM) during the attack:
- audio-chunks that declare a format which inflates when converted (1 kHz / 8-bit, 4 MiB payloads) on the
  ASR and wake services, and a wake stream declaring 384 kHz / 32-bit / 32 channels that races ahead;
- 500 connections that never send anything (how many are refused, how many the idle timeout closes);
- 100 ASR connections each buffering 59 s of audio (how many get server_busy);
- a FLAC of 590 s of silence uploaded to the HTTP API's /v1/audio/transcriptions;
then the event-loop lag an innocent client sees (describe round trips) while 20 connections each pipeline
2,000 describes without reading the answers, and while one client sends 20,000 and reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import free_port, pct, peak_rss_mib, server_process, wait_ready

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def frame(event_type: str, data: Mapping[str, object] | None = None, payload: bytes = b"") -> bytes:
    header: dict[str, object] = {"type": event_type, "data": dict(data or {})}
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + payload


async def next_type(reader: asyncio.StreamReader, timeout: float) -> str | None:
    """The type (or error code) of the next event; None when the server closed the connection or said nothing."""
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readline()
            if not line:
                return None
            header = json.loads(line)
            extra = await reader.readexactly(header.get("data_length") or 0)
            await reader.readexactly(header.get("payload_length") or 0)
    except (TimeoutError, ConnectionError):
        return None
    data = {**(header.get("data") or {}), **(json.loads(extra) if extra else {})}
    return str(data.get("code") or header["type"])


Attack = Callable[[dict[str, int]], Awaitable[str]]


async def measure(name: str, flags: Sequence[str], services: Sequence[str], attack: Attack) -> None:
    """A fresh server with `flags`; prints its RSS when ready and its peak during `attack` (which says the outcome)."""
    ports = {service: free_port() for service in services}
    uris = [f for s, p in ports.items() for f in ((f"--{s}-uri", f"tcp://127.0.0.1:{p}") if s != "http" else ())]
    http = ["--http", f"127.0.0.1:{ports['http']}"] if "http" in ports else []
    with server_process([*uris, *http, *flags]) as proc:
        if "http" in ports:
            await wait_http(f"http://127.0.0.1:{ports['http']}")
        for service, port in ports.items():
            if service != "http":
                await wait_ready(port)
        before = rss_mib(proc.pid)
        started = time.monotonic()
        outcome = await attack(ports)
        took = time.monotonic() - started
        peak = peak_rss_mib(proc.pid)
        alive = "" if proc.poll() is None else f", the server EXITED ({proc.returncode})"
    print(f"{name}\n    ready {before:.0f} MiB, peak {peak:.0f} MiB (+{peak - before:.0f}), {took:.1f} s{alive}")
    print(f"    {outcome}")


async def wait_http(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base} did not answer")
            await asyncio.sleep(0.2)


# ---- item 2: formats that inflate ---------------------------------------------------------------------------


def inflating_chunks(service: str, connections: int) -> Attack:
    async def attack(ports: dict[str, int]) -> str:
        fmt = {"rate": 1000, "width": 1, "channels": 1}
        payload = bytes(4 * MIB)
        streams = [await asyncio.open_connection("127.0.0.1", ports[service]) for _ in range(connections)]
        for _, writer in streams:
            writer.write(frame("audio-start", fmt) + frame("audio-chunk", fmt, payload))
        answers = await asyncio.gather(*(next_type(reader, 10) for reader, _ in streams))
        for _, writer in streams:
            writer.close()
        said = summarise(answers).replace("None", "nothing (being processed)")
        return f"{connections} × 4 MiB declared 1 kHz/8-bit (70 min of audio each): answers {said}"

    return attack


async def enormous_wake_stream(ports: dict[str, int]) -> str:
    fmt = {"rate": 384_000, "width": 4, "channels": 32}
    chunk = frame("audio-chunk", fmt, bytes(4 * MIB))
    _, writer = await asyncio.open_connection("127.0.0.1", ports["wake"])
    writer.write(frame("audio-start", fmt))
    sent = 0
    for _ in range(64):
        writer.write(chunk)
        try:
            async with asyncio.timeout(3):
                await writer.drain()
        except TimeoutError:
            break
        sent += 1
    writer.close()
    return f"384 kHz/32-bit/32 ch, 4 MiB chunks: the server took {sent} of 64 before the client had to wait 3 s"


# ---- item 3: connections and buffered audio -------------------------------------------------------------------


async def idle_connections(ports: dict[str, int]) -> str:
    opened = time.monotonic()
    connections = [await asyncio.open_connection("127.0.0.1", ports["asr"]) for _ in range(500)]

    async def fate(reader: asyncio.StreamReader) -> tuple[str | None, float]:
        answer = await next_type(reader, 30)
        if answer is not None:  # server_busy: the close follows
            await next_type(reader, 30)
        return answer, time.monotonic() - opened

    fates = await asyncio.gather(*(fate(reader) for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    refused = [seconds for answer, seconds in fates if answer == "server_busy"]
    idle = [seconds for answer, seconds in fates if answer is None and seconds < 29]
    return (
        f"500 silent connections: {len(refused)} refused (server_busy) within {max(refused, default=0):.1f} s, "
        f"{len(idle)} closed by the idle timeout (5 s here) "
        f"after {min(idle, default=0):.1f}–{max(idle, default=0):.1f} s"
    )


async def buffering_asr(ports: dict[str, int]) -> str:
    audio = bytes(59 * 32000)  # 59 s of 16 kHz s16: just under the 60 s cap
    start = frame("transcribe") + frame("audio-start", {"rate": 16000, "width": 2, "channels": 1})
    opened = [await asyncio.open_connection("127.0.0.1", ports["asr"]) for _ in range(100)]
    for _, writer in opened:
        writer.write(start)
        for offset in range(0, len(audio), 64000):  # 2 s chunks
            writer.write(frame("audio-chunk", {}, audio[offset : offset + 64000]))
    answers = await asyncio.gather(*(next_type(reader, 15) for reader, _ in opened))
    for _, writer in opened:
        writer.close()
    return f"100 connections × 59 s buffered: answers {summarise(answers)} (None = still held, no answer yet)"


# ---- item 4: a tiny upload that decodes to a lot ----------------------------------------------------------------


def silent_flac(seconds: int, rate: int = 48000) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="stereo")
        second = np.zeros((1, 2 * rate), np.int16)
        for _ in range(seconds):
            frame_ = av.AudioFrame.from_ndarray(second, format="s16", layout="stereo")
            frame_.sample_rate = rate
            for packet in stream.encode(frame_):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def flac_upload(flac: bytes) -> Attack:
    async def attack(ports: dict[str, int]) -> str:
        url = f"http://127.0.0.1:{ports['http']}/v1/audio/transcriptions"
        async with httpx.AsyncClient(timeout=300) as client:
            started = time.monotonic()
            response = await client.post(
                url, files={"file": ("silence.flac", flac, "audio/flac")}, data={"model": "whisper-1"}
            )
        return f"{len(flac) // 1024} KiB FLAC, 590 s of 48 kHz stereo silence: HTTP {response.status_code} after " + (
            f"{time.monotonic() - started:.1f} s"
        )

    return attack


# ---- item 6: loop lag under a describe flood --------------------------------------------------------------------


async def describe_lag(port: int, flood: Callable[[], Coroutine[Any, Any, object]], probes: int = 60) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    flooding = asyncio.create_task(flood())
    await asyncio.sleep(0.05)
    lags: list[float] = []
    for _ in range(probes):
        started = time.perf_counter()
        writer.write(frame("describe"))
        if await next_type(reader, 30) != "info":
            break
        lags.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    flooding.cancel()
    writer.close()
    if not lags:
        return "no describe answered"
    return f"describe round trip p50 {pct(lags, 50):.1f} ms, p95 {pct(lags, 95):.1f} ms, max {max(lags):.1f} ms"


async def unread_flood(port: int) -> None:
    floods = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    try:
        for _, writer in floods:
            writer.write(frame("describe") * 2000)  # the answers are never read
        await asyncio.sleep(3600)
    finally:
        for _, writer in floods:
            writer.close()


async def reading_flood(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame("describe") * 20000)
        for _ in range(20000):
            if await next_type(reader, 30) is None:
                break
    finally:
        writer.close()


async def lag_scenarios(ports: dict[str, int]) -> str:
    port = ports["tts"]
    quiet = await describe_lag(port, lambda: asyncio.sleep(3600), probes=20)
    unread = await describe_lag(port, lambda: unread_flood(port))
    reading = await describe_lag(port, lambda: reading_flood(port))
    return (
        f"no flood: {quiet}\n    20 connections × 2,000 describes, answers unread: {unread}\n"
        f"    one client sending 20,000 describes and reading them: {reading}"
    )


def summarise(answers: Sequence[str | None]) -> str:
    counts: dict[str, int] = {}
    for answer in answers:
        counts[str(answer)] = counts.get(str(answer), 0) + 1
    return ", ".join(f"{count} × {answer}" for answer, count in sorted(counts.items()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run only the scenarios whose name contains this (e.g. 'idle', 'HTTP')")
    parser.add_argument("server_flags", nargs="*", help="extra server flags (after --)")
    args = parser.parse_args()
    base = ["--workers", "2", *args.server_flags]
    preload = [*base, "--preload"]
    scenarios: list[tuple[str, list[str], list[str], Attack]] = [
        ("ASR, 3 connections", base, ["asr"], inflating_chunks("asr", 3)),
        ("Wake, 3 connections", preload, ["wake"], inflating_chunks("wake", 3)),
        ("Wake, a stream racing ahead", preload, ["wake"], enormous_wake_stream),
        ("ASR, idle connections", [*base, "--wyoming-idle-timeout", "5"], ["asr"], idle_connections),
        ("ASR, buffering connections", base, ["asr"], buffering_asr),
        ("HTTP upload", preload, ["http"], flac_upload(silent_flac(590))),
        ("Loop lag (TTS service, describe)", base, ["tts"], lag_scenarios),
    ]
    print("Server: a fresh child process per scenario, bundled models, --workers 2.\n")
    for name, flags, services, attack in scenarios:
        if args.only is None or args.only.lower() in name.lower():
            await measure(name, flags, services, attack)


if __name__ == "__main__":
    asyncio.run(main())
