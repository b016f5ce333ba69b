"""script/bench realtime: live speech-to-text and streaming TTS over WebSocket. Prints figures only.

- End of speech → final transcript (p50/p95) with 1, 4 and 8 live sessions at once on
  WS /v1/audio/transcriptions/stream: each session streams 3-5 s commands in real time in 64 ms messages,
  1.5 s of silence after each, sessions starting at staggered moments. "End of speech" is when the client
  sent the last loud sample; the final comes after the server's VAD hears --realtime-silence-ms of silence.
- Time to the first PCM frame on WS /v1/audio/speech/stream for a short first sentence (TTS cache off).
- Server peak RSS. The server runs as a child process with --http only, models preloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import COMMANDS, Speech, describe_ms, free_port, pct, peak_rss_mib, server_process
from websockets.asyncio.client import connect

FIRST_SENTENCES = [
    "Sure.",
    "Okay, done.",
    "Right away.",
    "Of course.",
    "Got it.",
    "All set.",
    "No problem.",
    "Here you go.",
]
CHUNK_S = 0.064
TRAILING_S = 1.5
RATE = 16000


def speech_end_seconds(pcm: bytes) -> float:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.nonzero(samples > 300)[0]
    return float(loud[-1] + 1) / RATE if len(loud) else 0.0


def to_16k(pcm: bytes, rate: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return (np.clip(soxr.resample(samples, rate, RATE), -1, 1) * 32767).astype("<i2").tobytes()


def wait_http(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


async def live_session(port: int, commands: list[bytes], delay: float) -> tuple[list[float], list[float], int, int]:
    """Streams each command in real time; (end of speech → final ms, server latency_ms, interims, finals)."""
    await asyncio.sleep(delay)
    client_ms: list[float] = []
    server_ms: list[float] = []
    interims = 0
    ends: dict[int, float] = {}  # utterance number → wall time its speech ended at the client
    finals: dict[int, float] = {}
    async with connect(f"ws://127.0.0.1:{port}/v1/audio/transcriptions/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "rate": RATE, "language": "en"}))
        json.loads(await ws.recv())

        async def reader() -> None:
            nonlocal interims
            async for message in ws:
                data = json.loads(message)
                if data["type"] == "transcript" and not data["is_final"]:
                    interims += 1
                elif data["type"] == "transcript":
                    finals[data["utterance"]] = time.perf_counter()
                    server_ms.append(data["latency_ms"])
                elif data["type"] == "done":
                    return

        task = asyncio.create_task(reader())
        step = int(RATE * CHUNK_S) * 2
        start = time.perf_counter()
        sent = 0.0
        for number, pcm in enumerate(commands, 1):
            end_s = sent + speech_end_seconds(pcm)
            audio = pcm + bytes(int(RATE * TRAILING_S) * 2)
            for offset in range(0, len(audio), step):
                chunk = audio[offset : offset + step]
                await ws.send(chunk)
                sent += len(chunk) / 2 / RATE
                if number not in ends and sent >= end_s:
                    ends[number] = time.perf_counter()
                await asyncio.sleep(max(0.0, start + sent - time.perf_counter()))
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 60)
    for number, at in finals.items():
        if number in ends:
            client_ms.append((at - ends[number]) * 1000)
    return client_ms, server_ms, interims, len(finals)


async def tts_first_frame(port: int, sentences: list[str]) -> list[float]:
    out: list[float] = []
    async with connect(f"ws://127.0.0.1:{port}/v1/audio/speech/stream", max_size=None) as ws:
        for first in sentences:
            text = f"{first} The lights in the living room are now at fifty percent and the heating is on."
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "speak", "text": text}))
            got_first = False
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    if not got_first:
                        out.append((time.perf_counter() - started) * 1000)
                        got_first = True
                elif json.loads(message)["type"] in ("done", "error"):
                    break
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,4,8", help="concurrent live sessions to measure (default 1,4,8)")
    parser.add_argument("--commands", type=int, default=5, help="commands each session streams (default 5)")
    parser.add_argument("server_args", nargs="*", help="extra wyoming-minerva flags (after --)")
    args = parser.parse_args()

    speech = Speech()
    commands = [to_16k(speech.say(text), speech.rate) for text in COMMANDS]
    durations = [len(c) / 2 / RATE for c in commands]
    print(f"{len(commands)} commands of {min(durations):.1f}-{max(durations):.1f} s, streamed in real time")
    port = free_port()
    flags = ["--http", f"127.0.0.1:{port}", "--preload", "--tts-cache-mb", "0", *args.server_args]
    with server_process(flags) as proc:
        wait_http(port)
        await live_session(port, commands[:1], 0.0)  # warm-up
        rng = random.Random(7)
        for n in (int(x) for x in args.sessions.split(",")):
            plans = []
            for i in range(n):
                order = commands[i % len(commands) :] + commands[: i % len(commands)]
                plans.append(live_session(port, (order * 2)[: args.commands], rng.uniform(0, 2.0)))
            results = await asyncio.gather(*plans)
            client = [ms for r in results for ms in r[0]]
            server = [ms for r in results for ms in r[1]]
            interims = sum(r[2] for r in results)
            finals = sum(r[3] for r in results)
            print(f"\n{n} live session{'s' if n > 1 else ''} ({finals} utterances)")
            print(f"  end of speech → final (client):  {describe_ms(client)}")
            print(f"  end of speech → final (server):  {describe_ms(server)}")
            print(f"  interim results per utterance:    {interims / max(1, finals):.1f}")
        first = await tts_first_frame(port, FIRST_SENTENCES)
        print("\nstreaming TTS, short first sentence, cache off")
        print(f"  request → first PCM frame: median {statistics.median(first):.0f} ms, p95 {pct(first, 95):.0f} ms")
        print(f"\nserver peak RSS: {peak_rss_mib(proc.pid):.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
