"""script/bench memory: peak memory of the one process under mixed work, and what the TTS cache really costs.

1. Mixed work: one server with all three Wyoming services, every model preloaded. Each round runs at the same
   time one streamed STT command (satellite-style, real-time 64 ms chunks, then audio-stop), one streamed
   5-sentence TTS answer (Home Assistant's token deltas) and a 10 s wake stream (real time). Prints the RSS when
   idle, the highest RSS sampled in each round and the process's VmHWM (peak RSS) at the end.
   Target: VmHWM <= 490 MiB (0.75x of the three reference servers' 650 MiB together).
2. Cache growth: two TTS servers, one with `--tts-cache-mb` (default 8) and one with the cache off, get the
   same unique sentences (plain synthesize) in turn; the difference of their RSS is what the cache costs,
   printed against its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import COMMANDS, Speech, free_port, peak_rss_mib, server_process, wait_ready
from bench_tts import FIVE, VOICE, deltas
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice
from wyoming.wake import Detect

RATE = 16000
CHUNK_S = 0.064
WAKE_SECONDS = 10.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """Samples a process's RSS every few milliseconds on a thread; `peak()` is the highest since `reset()`."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_mib(self.pid))

    def reset(self) -> None:
        self._peak = 0.0

    def peak(self) -> float:
        return self._peak


def resampled(speech: Speech, text: str) -> bytes:
    import numpy as np
    import soxr

    samples = np.frombuffer(speech.say(text), dtype="<i2").astype(np.float32)
    return bytes(soxr.resample(samples, speech.rate, RATE).astype("<i2").tobytes())


async def paced(client: AsyncTcpClient, pcm: bytes) -> None:
    """Audio in 64 ms chunks at real-time pace."""
    step = int(RATE * CHUNK_S) * 2
    started = time.perf_counter()
    for offset in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[offset : offset + step]).event())
        await asyncio.sleep(max(0.0, started + (offset + step) / 2 / RATE - time.perf_counter()))


async def stt_command(port: int, pcm: bytes) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
    await paced(client, pcm + bytes(int(RATE * 0.8) * 2))
    await client.write_event(AudioStop().event())
    async with asyncio.timeout(60):
        while (event := await client.read_event()) is not None and event.type not in ("transcript", "error"):
            pass
    await client.disconnect()


async def tts_answer(port: int, text: str) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    voice = SynthesizeVoice(name=VOICE)
    await client.write_event(SynthesizeStart(voice=voice).event())
    for delta in deltas(text):
        await client.write_event(SynthesizeChunk(text=delta).event())
    await client.write_event(Synthesize(text=text, voice=voice).event())
    await client.write_event(SynthesizeStop().event())
    async with asyncio.timeout(120):
        while (event := await client.read_event()) is not None and event.type not in ("synthesize-stopped", "error"):
            pass
    await client.disconnect()


async def wake_stream(port: int, pcm: bytes) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Detect(names=None).event())
    await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
    await paced(client, pcm)
    await client.disconnect()  # Home Assistant never sends audio-stop: it closes the socket


async def mixed(rounds: int) -> None:
    speech = Speech()
    command = resampled(speech, COMMANDS[0])
    wake_words = resampled(speech, "Okay Nabu. " + COMMANDS[1])
    wake_pcm = (bytes(int(RATE * 3) * 2) + wake_words + bytes(int(RATE * WAKE_SECONDS) * 2))[
        : int(RATE * WAKE_SECONDS) * 2
    ]
    ports = {name: free_port() for name in ("asr", "tts", "wake")}
    flags = [arg for name, port in ports.items() for arg in (f"--{name}-uri", f"tcp://127.0.0.1:{port}")]
    with server_process([*flags, "--preload", "--local-files-only"]) as proc:
        for port in ports.values():
            await wait_ready(port)
        await asyncio.sleep(1.0)
        print(
            f"  idle, every model loaded: RSS {rss_mib(proc.pid):.0f} MiB (VmHWM so far {peak_rss_mib(proc.pid):.0f})"
        )
        with RssSampler(proc.pid) as sampler:
            for number in range(1, rounds + 1):
                sampler.reset()
                started = time.perf_counter()
                await asyncio.gather(
                    stt_command(ports["asr"], command),
                    tts_answer(ports["tts"], FIVE),
                    wake_stream(ports["wake"], wake_pcm),
                )
                took = time.perf_counter() - started
                print(f"  round {number}: highest sampled RSS {sampler.peak():.0f} MiB ({took:.1f} s)", flush=True)
        await asyncio.sleep(0.5)
        print(f"  after the rounds: RSS {rss_mib(proc.pid):.0f} MiB")
        print(f"  one process, STT + TTS + wake at once: VmHWM {peak_rss_mib(proc.pid):.0f} MiB (target <= 490)")


def unique_sentences(count: int) -> list[str]:
    rooms = ["kitchen", "living room", "bedroom", "office", "hallway", "garage", "bathroom", "attic", "porch"]
    return [
        f"The {rooms[i % len(rooms)]} sensor number {i} reported {20 + i % 7} degrees at {1 + i % 12} o'clock."
        for i in range(count)
    ]


async def plain(port: int, text: str) -> None:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
    async with asyncio.timeout(60):
        while (event := await client.read_event()) is not None and event.type not in ("audio-stop", "error"):
            pass
    await client.disconnect()


async def cache_growth(texts: int, cache_mb: float) -> None:
    ports = {"cache": free_port(), "no cache": free_port()}
    megabytes = {"cache": cache_mb, "no cache": 0}
    common = ["--preload", "--local-files-only"]
    with (
        server_process(
            [*common, "--tts-uri", f"tcp://127.0.0.1:{ports['cache']}", "--tts-cache-mb", str(cache_mb)]
        ) as cached,
        server_process([*common, "--tts-uri", f"tcp://127.0.0.1:{ports['no cache']}", "--tts-cache-mb", "0"]) as plain_,
    ):
        pids = {"cache": cached.pid, "no cache": plain_.pid}
        for port in ports.values():
            await wait_ready(port)
        warm = unique_sentences(texts + 5)[texts:]
        for text in warm:  # the same warm-up for both: allocator and ONNX Runtime reach their working size
            for port in ports.values():
                await plain(port, text)
        before = {name: rss_mib(pid) for name, pid in pids.items()}
        for number, text in enumerate(unique_sentences(texts), 1):
            for port in ports.values():
                await plain(port, text)
            if number % 50 == 0 or number == texts:
                grown = {name: rss_mib(pid) - before[name] for name, pid in pids.items()}
                print(
                    f"  after {number} unique sentences: RSS growth with cache {grown['cache']:.1f} MiB, "
                    f"without {grown['no cache']:.1f} MiB → the cache costs {grown['cache'] - grown['no cache']:.1f} "
                    f"MiB (limit {megabytes['cache']:g} MiB)",
                    flush=True,
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of mixed work (default 3)")
    parser.add_argument("--cache-texts", type=int, default=200, help="unique sentences for the cache (0 = skip)")
    parser.add_argument("--cache-mb", type=float, default=8.0, help="--tts-cache-mb of the cache scenario")
    parser.add_argument("--skip-mixed", action="store_true", help="only the cache scenario")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"CPU cores: {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} (memory figures are not timing)")
    if not args.skip_mixed:
        print("mixed work:")
        await mixed(args.rounds)
    if args.cache_texts:
        print(f"TTS cache, {args.cache_texts} unique sentences:")
        await cache_growth(args.cache_texts, args.cache_mb)


if __name__ == "__main__":
    asyncio.run(main())
