"""script/bench upstream: latency that proxying through an upstream adds, and how fast a dead upstream is left.

Prints figures only. Three parts:
1. The clients against zero-work upstreams on loopback (in this process: an OpenAI-compatible fake that answers a
   fixed transcript or 24 kHz PCM, a Wyoming fake that answers transcript / audio at once), through
   `run_with_failover` / `stream_with_failover` with a healthy pool and its prober running: this is the latency a
   proxy hop adds (encoding, framing, loopback, parsing), the upstream's own work excluded. Target < 15 ms.
2. A real minerva (child process, bundled tiny.en and Piper voice, preloaded): a 3-4 s command and TTS first audio,
   sent directly as Home Assistant does and through each client, interleaved; the difference of the medians is
   the client's share (it is within the noise of a decode on a loaded machine).
3. Failover: a pool of [real minerva over tcp://] with a second real minerva standing in for the local engine
   (the in-process engine is wired in by the integration); the upstream is SIGSTOPped right before a request.
   Figures: time to the answer, and to the prober marking the upstream down without any request.
4. The wired server: a front minerva process (`--stt-upstream tcp://… --tts-upstream tcp://…`, its own models
   preloaded as the fallback) in front of an upstream minerva, both asked the way Home Assistant does, interleaved:
   what the whole front server adds (Wyoming in, the failover wrapper, Wyoming out); then the upstream is
   SIGSTOPped right before a request to the front, which answers with its own model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import COMMANDS, Speech, describe_ms, free_port, server_process, wait_ready
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import async_write_event
from wyoming.info import AsrProgram, Attribution, Info, TtsProgram
from wyoming.tts import Synthesize

from wyoming_minerva.audio import AudioFormat, convert_pcm
from wyoming_minerva.handlers.server import read_event
from wyoming_minerva.stt.engine import TranscriptionOptions
from wyoming_minerva.upstream import (
    UpstreamPool,
    UpstreamSettings,
    parse_upstream_url,
    run_with_failover,
    stream_with_failover,
)
from wyoming_minerva.upstream.pools import stt_client, tts_client

TTS_TEXT = "Sure, I turned on the kitchen lights. The living room is already at twenty degrees."
TRANSCRIPT = {"task": "transcribe", "language": "en", "duration": 3.5, "text": " Turn on the living room lights."}
FAKE_PCM = bytes(4800)  # 100 ms of 24 kHz silence per chunk
_NOBODY = Attribution(name="bench", url="")
FAKE_INFO = Info(
    asr=[AsrProgram("fake", _NOBODY, True, None, None, models=[])],
    tts=[TtsProgram("fake", _NOBODY, True, None, None, voices=[])],
)


# ---- zero-work fakes --------------------------------------------------------------------------------


async def fake_openai(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: a fixed verbose_json for uploads, 5 chunks of PCM for speech, 200 for probes."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = next(
                (int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0
            )
            await reader.readexactly(length)
            if " /v1/audio/speech " in head:
                chunks = b"".join(f"{len(FAKE_PCM):x}\r\n".encode() + FAKE_PCM + b"\r\n" for _ in range(5))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(chunks + b"0\r\n\r\n")
            else:
                body = json.dumps(TRANSCRIPT if head.startswith("POST") else {"status": "ok"}).encode()
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            await writer.drain()
    writer.close()


async def fake_wyoming(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """transcript right after audio-stop; for synthesize, audio-start + 5 chunks + audio-stop; info for describe."""
    with contextlib.suppress(ConnectionError):
        while (event := await read_event(reader)) is not None:
            if event.type == "describe":
                await async_write_event(FAKE_INFO.event(), writer)
            elif event.type == "audio-stop":
                await async_write_event(Transcript(text=str(TRANSCRIPT["text"])).event(), writer)
            elif event.type == "synthesize":
                await async_write_event(AudioStart(rate=24000, width=2, channels=1).event(), writer)
                for _ in range(5):
                    await async_write_event(AudioChunk(rate=24000, width=2, channels=1, audio=FAKE_PCM).event(), writer)
                await async_write_event(AudioStop().event(), writer)
    writer.close()


async def timed(rounds: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    await work()  # warm-up: connections, code paths
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def first_piece(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]


async def whole(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


async def one_upstream(label: str, url: str, audio: np.ndarray, rounds: int) -> None:
    settings = UpstreamSettings()
    options = TranscriptionOptions(language="en")
    stt = UpstreamPool("stt", [stt_client(parse_upstream_url(url), settings)], settings)
    tts = UpstreamPool("tts", [tts_client(parse_upstream_url(url), settings)], settings)
    await stt.start()
    await tts.start()
    try:
        asr = await timed(rounds, lambda: run_with_failover(stt, lambda c: c.transcribe(audio, options)))
        first = await timed(rounds, lambda: first_piece(stream_with_failover(tts, lambda c: c.synthesize(TTS_TEXT))))
        full = await timed(rounds, lambda: whole(stream_with_failover(tts, lambda c: c.synthesize(TTS_TEXT))))
    finally:
        await stt.close()
        await tts.close()
    print(f"   {label:18s} STT {len(audio) / 16000:.1f} s command: {describe_ms(asr)}")
    print(f"   {label:18s} TTS first audio:      {describe_ms(first)}; whole 0.5 s answer: {describe_ms(full)}")


async def part_one(audio: np.ndarray, rounds: int) -> None:
    print("1. Added latency through a healthy upstream that does no work (loopback, failover wrapper included)")
    openai = await asyncio.start_server(fake_openai, "127.0.0.1", 0)
    wyoming = await asyncio.start_server(fake_wyoming, "127.0.0.1", 0)
    try:
        await one_upstream("OpenAI-compatible", f"http://127.0.0.1:{port_of(openai)}/v1", audio, rounds)
        await one_upstream("Wyoming", f"tcp://127.0.0.1:{port_of(wyoming)}", audio, rounds)
    finally:
        openai.close()
        wyoming.close()


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


# ---- a real minerva -----------------------------------------------------------------------------------


async def direct_asr(port: int, pcm: bytes, rate: int) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        step = rate // 10 * 2
        for offset in range(0, len(pcm), step):
            await client.write_event(
                AudioChunk(rate=rate, width=2, channels=1, audio=pcm[offset : offset + step]).event()
            )
        await client.write_event(AudioStop().event())
        while (event := await client.read_event()) is not None and event.type != "transcript":
            pass
    finally:
        await client.disconnect()


async def direct_tts_first(port: int) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        await client.write_event(Synthesize(text=TTS_TEXT).event())
        while (event := await client.read_event()) is not None and event.type != "audio-chunk":
            pass
    finally:
        await client.disconnect()


async def interleaved(rounds: int, works: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in works}
    for work in works.values():
        await work()
    for _ in range(rounds):
        for name, work in works.items():
            started = time.perf_counter()
            await work()
            results[name].append((time.perf_counter() - started) * 1000)
    return results


def minerva_args(asr: int, tts: int, http: int) -> list[str]:
    return [
        "--asr-uri",
        f"tcp://127.0.0.1:{asr}",
        "--tts-uri",
        f"tcp://127.0.0.1:{tts}",
        "--http",
        f"127.0.0.1:{http}",
        "--preload",
        "--tts-cache-mb",
        "0",
    ]


async def part_two(speech: Speech, pcm: bytes, audio: np.ndarray, rounds: int) -> None:
    print("2. A real minerva (child process): direct as Home Assistant vs through each client (interleaved)")
    asr, tts, http = free_port(), free_port(), free_port()
    settings = UpstreamSettings(timeout=60)
    options = TranscriptionOptions(language="en")
    with server_process(minerva_args(asr, tts, http)):
        await wait_ready(asr, 180)
        await wait_ready(tts, 60)
        clients = {
            "wyoming": (
                stt_client(parse_upstream_url(f"tcp://127.0.0.1:{asr}"), settings),
                tts_client(parse_upstream_url(f"tcp://127.0.0.1:{tts}"), settings),
            ),
            "openai": (
                stt_client(parse_upstream_url(f"http://127.0.0.1:{http}/v1"), settings),
                tts_client(parse_upstream_url(f"http://127.0.0.1:{http}/v1"), settings),
            ),
        }
        try:
            stt_times = await interleaved(
                rounds,
                {
                    "direct (HA sequence)": lambda: direct_asr(asr, pcm, speech.rate),
                    "WyomingUpstream": lambda: clients["wyoming"][0].transcribe(audio, options),
                    "OpenAIUpstream": lambda: clients["openai"][0].transcribe(audio, options),
                },
            )
            tts_times = await interleaved(
                rounds,
                {
                    "direct (HA sequence)": lambda: direct_tts_first(tts),
                    "WyomingUpstream": lambda: first_piece(clients["wyoming"][1].synthesize(TTS_TEXT)),
                    "OpenAIUpstream": lambda: first_piece(clients["openai"][1].synthesize(TTS_TEXT, "alloy")),
                },
            )
        finally:
            for pair in clients.values():
                for client in pair:
                    await client.aclose()
    for title, results in (("STT 3-4 s command", stt_times), ("TTS first audio", tts_times)):
        base = statistics.median(results["direct (HA sequence)"])
        for name, times in results.items():
            delta = (
                "" if name.startswith("direct") else f"  (median {statistics.median(times) - base:+.0f} ms vs direct)"
            )
            print(f"   {title:17s} {name:21s} {describe_ms(times)}{delta}")


# ---- failover ------------------------------------------------------------------------------------------


async def part_three(audio: np.ndarray, settings: UpstreamSettings, runs: int) -> None:
    every, limit = settings.probe_interval, settings.probe_timeout
    print(f"3. Failover: upstream SIGSTOPped (probe every {every:g} s, timeout {limit:g} s)")
    up_asr, local_asr = free_port(), free_port()
    options = TranscriptionOptions(language="en")
    with (
        server_process(["--asr-uri", f"tcp://127.0.0.1:{up_asr}", "--preload"]) as upstream,
        server_process(["--asr-uri", f"tcp://127.0.0.1:{local_asr}", "--preload"]),
    ):
        await wait_ready(up_asr, 180)
        await wait_ready(local_asr, 180)
        local_client = stt_client(parse_upstream_url(f"tcp://127.0.0.1:{local_asr}"), replace(settings, timeout=60))
        local_times = await timed(3, lambda: local_client.transcribe(audio, options))
        print(f"   the stand-in local engine alone:        {describe_ms(local_times)}")
        pool = UpstreamPool("stt", [stt_client(parse_upstream_url(f"tcp://127.0.0.1:{up_asr}"), settings)], settings)
        await pool.start()
        backend = pool.backends[0]
        answers, downs = [], []
        try:
            for _ in range(runs):
                await until(lambda: backend.state.value == "up", 60)
                await run_with_failover(
                    pool, lambda c: c.transcribe(audio, options), lambda: local_client.transcribe(audio, options)
                )
                upstream.send_signal(signal.SIGSTOP)
                try:
                    started = time.perf_counter()
                    await run_with_failover(
                        pool, lambda c: c.transcribe(audio, options), lambda: local_client.transcribe(audio, options)
                    )
                    answers.append((time.perf_counter() - started) * 1000)
                finally:
                    upstream.send_signal(signal.SIGCONT)
                await until(lambda: backend.state.value == "up", 60)
                upstream.send_signal(signal.SIGSTOP)  # now without any request: the prober alone
                try:
                    started = time.perf_counter()
                    await until(lambda: backend.state.value == "down", 60)
                    downs.append((time.perf_counter() - started) * 1000)
                finally:
                    upstream.send_signal(signal.SIGCONT)
        finally:
            await pool.close()
            await local_client.aclose()
    print(f"   request sent as the upstream stops → answer: {describe_ms(answers)}")
    print(f"   upstream stops → prober marks it down:   {describe_ms(downs)}")


async def part_four(speech: Speech, pcm: bytes, rounds: int, runs: int, settings: UpstreamSettings) -> None:
    print("4. The wired server: Home Assistant → front minerva → upstream minerva, vs the upstream directly")
    up = [free_port() for _ in range(3)]
    front = [free_port() for _ in range(3)]
    upstream_flags = ["--stt-upstream", f"tcp://127.0.0.1:{up[0]}", "--tts-upstream", f"tcp://127.0.0.1:{up[1]}"]
    health = [
        *("--upstream-probe-interval", f"{settings.probe_interval:g}"),
        *("--upstream-probe-timeout", f"{settings.probe_timeout:g}", "--upstream-timeout", "60"),
    ]
    with server_process([*minerva_args(*up), "--no-endpointing"]) as upstream:
        await wait_ready(up[0], 180)
        await wait_ready(up[1], 60)
        with server_process([*minerva_args(*front), "--no-endpointing", *upstream_flags, *health]):
            await wait_ready(front[0], 180)
            await wait_ready(front[1], 60)
            stt_times = await interleaved(
                rounds,
                {
                    "upstream directly": lambda: direct_asr(up[0], pcm, speech.rate),
                    "through the front": lambda: direct_asr(front[0], pcm, speech.rate),
                },
            )
            tts_times = await interleaved(
                rounds,
                {
                    "upstream directly": lambda: direct_tts_first(up[1]),
                    "through the front": lambda: direct_tts_first(front[1]),
                },
            )
            answers = []
            for _ in range(runs):
                upstream.send_signal(signal.SIGSTOP)
                try:
                    started = time.perf_counter()
                    await direct_asr(front[0], pcm, speech.rate)
                    answers.append((time.perf_counter() - started) * 1000)
                finally:
                    upstream.send_signal(signal.SIGCONT)
                # back in rotation: the front's own decode would otherwise take the next request
                await asyncio.sleep(settings.probe_timeout + 3)
                await direct_asr(front[0], pcm, speech.rate)
    for title, results in (("STT 3-4 s command", stt_times), ("TTS first audio", tts_times)):
        base = statistics.median(results["upstream directly"])
        for name, times in results.items():
            delta = "" if name == "upstream directly" else f"  (median {statistics.median(times) - base:+.0f} ms)"
            print(f"   {title:17s} {name:18s} {describe_ms(times)}{delta}")
    print(f"   request to the front as the upstream stops → transcript: {describe_ms(answers)}")


async def until(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="requests per figure in parts 1 and 2 (default 20)")
    parser.add_argument("--failover-runs", type=int, default=3, help="SIGSTOP runs in parts 3, 4 (default 3)")
    parser.add_argument("--probe-interval", type=float, default=UpstreamSettings.probe_interval)
    parser.add_argument("--probe-timeout", type=float, default=UpstreamSettings.probe_timeout)
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run (default 1,2,3,4)")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    speech = Speech()
    pcm = speech.say(COMMANDS[0]) + speech.silence(0.3)
    audio = np.frombuffer(convert_pcm(pcm, AudioFormat(speech.rate, 2, 1)), dtype="<i2").astype(np.float32) / 32768.0
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"command: {len(audio) / 16000:.2f} s of Piper speech; load average {load}")
    if 1 in parts:
        await part_one(audio, args.rounds)
    if 2 in parts:
        await part_two(speech, pcm, audio, args.rounds)
    settings = UpstreamSettings(probe_interval=args.probe_interval, probe_timeout=args.probe_timeout, timeout=60)
    if 3 in parts:
        await part_three(audio, settings, args.failover_runs)
    if 4 in parts:
        await part_four(speech, pcm, args.rounds, args.failover_runs, settings)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
