"""script/bench wake: CPU per stream and concurrent real-time streams for the wake word service. Figures only.

1. Engine CPU per second of audio for one stream, in process, ours against pyopen-wakeword (the engine of
   wyoming-openwakeword 2.x), on two kinds of audio: "quiet" (a room at -65 dBFS with a wake word and a
   command every 15 s) and "speech" (people talking all the time, wake words in between).
2. The real server (a child process): server CPU per stream-second with streams paced in real time, and
   with one client sending as fast as it can.
3. Concurrency sweep: N satellites stream "quiet" audio in real time (64 ms chunks, default model
   okay_nabu, no audio-stop); a level is sustained when every wake word gives exactly one detection and
   each arrives within 1 s of where the phrase ends in the audio. Latency = phrase end → detection received.

The bench client shares the machine with the server: at high N its own CPU use counts against the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Speech, cpu_seconds, free_port, pct, peak_rss_mib, server_process, wait_ready
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.wake import Detect

RATE = 16000
CHUNK = 1024  # samples per event, as satellites send
CYCLE_S = 15.0  # one wake word + command per cycle in "quiet" audio
COMMANDS = ["Turn on the kitchen lights.", "What time is it?", "Set a timer for ten minutes.", "Close the blinds."]
TALK = [
    "I think we should leave a little earlier tomorrow because the traffic was terrible today.",
    "Did you see the game last night? The second half was much better than the first.",
    "We need to buy more coffee, some apples and something for dinner on Friday.",
]


@dataclass
class Audio:
    pcm: bytes
    phrase_ends: list[float]  # seconds of audio where each wake word ends

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


class Voice:
    def __init__(self) -> None:
        self.speech = Speech()
        self._cache: dict[str, np.ndarray] = {}

    def say(self, text: str) -> np.ndarray:
        if text not in self._cache:
            samples = np.frombuffer(self.speech.say(text), dtype="<i2").astype(np.float32)
            self._cache[text] = soxr.resample(samples, self.speech.rate, RATE).astype(np.float32)
        return self._cache[text]


def phrase_end(samples: np.ndarray) -> float:
    return float(np.nonzero(np.abs(samples) > 500)[0][-1]) / RATE


def make_audio(voice: Voice, seconds: float, kind: str, seed: int, offset: float) -> Audio:
    """Room noise; from `offset` on, every CYCLE_S a wake word and a command; "speech" adds talk all along."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    mix = rng.normal(0, 32768 * 10 ** (-65 / 20), total).astype(np.float32)
    talk = np.zeros(total, np.float32)
    if kind == "speech":
        cursor, index = 0, seed
        while cursor < total:
            words = voice.say(TALK[index % len(TALK)])[: total - cursor]
            talk[cursor : cursor + len(words)] = words
            cursor += len(words) + int(0.3 * RATE)
            index += 1
    wake = voice.say("Okay Nabu.")
    ends: list[float] = []
    t = offset
    while t + 6 < seconds:
        command = voice.say(COMMANDS[(seed + len(ends)) % len(COMMANDS)])
        start = int(t * RATE)
        at = start + len(wake) + int(0.3 * RATE)
        talk[max(0, start - int(0.7 * RATE)) : at + len(command) + int(0.3 * RATE)] = 0.0  # a pause to say it
        mix[start : start + len(wake)] += wake
        mix[at : at + len(command)] += command
        ends.append(t + phrase_end(wake))
        t += CYCLE_S
    return Audio(np.clip(mix + talk, -32768, 32767).astype("<i2").tobytes(), ends)


# ---- 1. engine CPU in process ----------------------------------------------------------------------


def engine_cpu(audio: Audio, gate: bool) -> float:
    from wyoming_minerva.audio import AudioFormat
    from wyoming_minerva.runtime.manager import ModelManager
    from wyoming_minerva.settings import WakeSettings
    from wyoming_minerva.wake.service import WakeWords

    async def run() -> float:
        manager = ModelManager()
        async with WakeWords(WakeSettings(silence_gate=gate, threads=1), manager) as wake:
            await wake.preload()
            warm = await wake.open_stream(None, AudioFormat())
            await warm.feed(bytes(RATE * 2))
            await warm.finish()
            await warm.close()
            started = time.process_time()
            stream = await wake.open_stream(None, AudioFormat())
            for offset in range(0, len(audio.pcm), CHUNK * 2):
                await stream.feed(audio.pcm[offset : offset + CHUNK * 2])
            await stream.finish()
            await stream.close()
            cpu = time.process_time() - started  # the whole process: worker thread and feeding loop
        await manager.close()
        return cpu

    return asyncio.run(run()) * 1000 / audio.seconds


def reference_cpu(audio: Audio) -> float:
    from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures

    features = OpenWakeWordFeatures.from_builtin()
    model = OpenWakeWord.from_builtin(Model.OKAY_NABU)
    for embedding in features.process_streaming(bytes(2560)):  # its first chunk processes 8 s of zeros
        list(model.process_streaming(embedding))
    started = time.process_time()
    for offset in range(0, len(audio.pcm), CHUNK * 2):
        for embedding in features.process_streaming(audio.pcm[offset : offset + CHUNK * 2]):
            list(model.process_streaming(embedding))
    return (time.process_time() - started) * 1000 / audio.seconds


def runqueue_wait(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (other processes had it)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


# ---- 2./3. the real server ------------------------------------------------------------------------


@dataclass
class StreamResult:
    latencies: list[float] = field(default_factory=list)  # phrase end → detection received, seconds
    processing: list[float] = field(default_factory=list)  # detection timestamp → received, seconds
    missed: int = 0
    extra: int = 0
    send_lag: float = 0.0  # how far the client itself fell behind its schedule


async def stream(port: int, audio: Audio, pace: bool, names: list[str] | None, stop: bool = False) -> StreamResult:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    received: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def reader() -> None:
        while (event := await client.read_event()) is not None:
            if event.type == "detection":
                received.append((time.perf_counter(), int(event.data["timestamp"])))
            elif event.type == "info":  # the describe sent after audio-stop: everything before it is in
                break
        done.set()

    task = asyncio.create_task(reader())
    await client.write_event(Detect(names=names).event())
    await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
    result = StreamResult()
    started = time.perf_counter()
    step = CHUNK * 2
    for index, offset in enumerate(range(0, len(audio.pcm), step)):
        if pace:
            due = started + index * CHUNK / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.send_lag = max(result.send_lag, -delay)
        await client.write_event(
            AudioChunk(rate=RATE, width=2, channels=1, audio=audio.pcm[offset : offset + step]).event()
        )
    if stop:
        await client.write_event(AudioStop().event())
        await client.write_event(Describe().event())
        await asyncio.wait_for(done.wait(), 300)
    else:
        await asyncio.sleep(1.5)  # let the last detections arrive, then close like Home Assistant
    task.cancel()
    await client.disconnect()
    matched: set[int] = set()
    for at, timestamp in received:
        near = [i for i, end in enumerate(audio.phrase_ends) if -0.5 <= timestamp / 1000 - end <= 1.5]
        if not near or near[0] in matched:
            result.extra += 1
            continue
        matched.add(near[0])
        result.latencies.append(at - (started + audio.phrase_ends[near[0]]))
        result.processing.append(at - (started + timestamp / 1000))
    result.missed = len(audio.phrase_ends) - len(matched)
    return result


def sweep_level_ok(results: list[StreamResult]) -> bool:
    return all(not r.missed and not r.extra and all(lat <= 1.0 for lat in r.latencies) for r in results)


async def server_benchmarks(args: argparse.Namespace, voice: Voice) -> None:
    port = free_port()
    server_args = ["--wake-uri", f"tcp://127.0.0.1:{port}", "--preload"]
    if args.no_gate:
        server_args.append("--no-wake-silence-gate")
    with server_process(server_args) as proc:
        await wait_ready(port)
        print(f"\n## Real server (pid {proc.pid}, {' '.join(server_args)})")
        # As fast as possible: one client, two minutes of each kind, audio-stop at the end.
        for kind in ("quiet", "speech"):
            audio = make_audio(voice, 120.0, kind, seed=1, offset=2.0)
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            result = await stream(port, audio, pace=False, names=None, stop=True)
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
            print(
                f"as fast as possible, {kind:6s}: {cpu * 1000 / audio.seconds:5.1f} ms CPU per audio-second, "
                f"{audio.seconds / wall:5.0f}× real time, {len(audio.phrase_ends) - result.missed}/"
                f"{len(audio.phrase_ends)} wake words, {result.extra} extra"
            )
        print(f"\nconcurrent real-time streams ({args.seconds:.0f} s each, {args.kind!r} audio, okay_nabu):")
        print("  N | server CPU ms/stream-s | server cores | latency median / p95 / max", end="")
        print(" | missed | extra | client lag | server waited for CPU | RSS")
        best = 0
        for n in args.levels:
            audios = [make_audio(voice, args.seconds, args.kind, seed=i, offset=1.0 + (i * 0.37) % 8) for i in range(n)]
            cpu0, wall0, wait0 = cpu_seconds(proc.pid), time.perf_counter(), runqueue_wait(proc.pid)
            results = await asyncio.gather(*(stream(port, audio, pace=True, names=["okay_nabu"]) for audio in audios))
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
            waited = (runqueue_wait(proc.pid) - wait0) / wall
            lat = [x for r in results for x in r.latencies]
            ok = sweep_level_ok(results)
            best = n if ok else best
            print(
                f"{n:3d} | {cpu * 1000 / (n * args.seconds):22.1f} | {cpu / wall:12.2f} | "
                f"{np.median(lat) * 1000 if lat else float('nan'):6.0f} / {pct(lat, 95) * 1000:4.0f} / "
                f"{max(lat, default=float('nan')) * 1000:4.0f} ms | {sum(r.missed for r in results):6d} | "
                f"{sum(r.extra for r in results):5d} | {max(r.send_lag for r in results) * 1000:7.0f} ms | "
                f"{waited * 100:17.0f} % | "
                f"{peak_rss_mib(proc.pid):.0f} MiB{'' if ok else '  ← not sustained'}"
            )
            if not ok and not args.keep_going:
                break
        print(f"\nsustained: {best} concurrent real-time streams (every wake word once, each within 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64, 96, 128])
    parser.add_argument("--seconds", type=float, default=32.0, help="length of each stream in the sweep")
    parser.add_argument("--kind", choices=["quiet", "speech"], default="quiet", help="audio of the sweep's streams")
    parser.add_argument("--no-gate", action="store_true", help="run the server with --no-wake-silence-gate")
    parser.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(f"# wake word bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    voice = Voice()
    if not args.skip_engine:
        print("\n## Engine CPU per audio-second, one stream, okay_nabu (in process, as fast as possible)")
        for kind in ("quiet", "speech"):
            audio = make_audio(voice, 60.0, kind, seed=0, offset=2.0)
            ours_gate, ours = engine_cpu(audio, gate=True), engine_cpu(audio, gate=False)
            reference = reference_cpu(audio)
            print(
                f"{kind:6s}: ours {ours_gate:5.1f} ms (silence gate on), {ours:5.1f} ms (gate off); "
                f"pyopen-wakeword {reference:5.1f} ms"
            )
    asyncio.run(server_benchmarks(args, voice))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work on this machine skews every figure)")


if __name__ == "__main__":
    main()
