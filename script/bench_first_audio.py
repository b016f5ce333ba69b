"""script/bench first_audio: time to first audio for Home Assistant's streamed LLM answers. Prints figures only.

Each request is a 5-sentence answer never spoken before (made from templates, the first sentence unique too),
sent the way Home Assistant streams an LLM answer: synthesize-start, the text as 3-6 character
synthesize-chunks (sent at once, or one every `--delta-ms`), the full synthesize, synthesize-stop.
First audio = synthesize-start sent → first audio-chunk read. Our server runs with the audio cache off, so every
piece is really synthesized. `--reference PYTHON` runs the same answers against wyoming-piper started with that
interpreter (e.g. a venv under /tmp with wyoming-piper installed), alternating requests between the servers so
load from elsewhere on the machine hits both alike, and prints the ratio of the medians.
Also: the server's CPU seconds per answer (less noisy than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_seconds, free_port, pct, server_process, wait_ready
from bench_tts import VOICE, reference_process
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

ROOMS = ["kitchen", "living room", "bedroom", "office", "hallway", "garage", "bathroom", "guest room", "nursery"]
FIRSTS = [
    "Sure, I turned on the {room} lights and set them to {n} percent brightness.",
    "I have set the {room} thermostat to {t} degrees, so it should be warm in about {m} minutes.",
    "The {room} window has been open for {m} minutes and the temperature in there dropped to {t} degrees.",
    "Okay, your timer for {m} minutes is running and I will tell you when it is done.",
    "Right now it is {t} degrees outside with light rain and a gentle wind from the {wind}.",
    "All {k} lights in the {room} are off now, and the motion sensor there is armed again.",
    "Good morning, the coffee machine in the {room} started {m} minutes ago and should be ready soon.",
    "There are {k} open windows in the house right now, including the one in the {room}.",
]
OTHERS = [
    "The {room} is already at {t} degrees.",
    "Tomorrow will be sunny with a high of {t}.",
    "Your next meeting starts at {h} a.m. with Dr. Smith.",
    "The washing machine will finish in {m} minutes.",
    "I locked the front door and closed the garage {k} minutes ago.",
    "The air quality in the {room} is good, with {n} percent humidity.",
    "Your package is expected to arrive around {h} o'clock.",
    "The robot vacuum has cleaned the {room} and is back on its dock.",
    "Is there anything else I can do for you?",
    "Let me know if you want me to change anything else.",
]
WINDS = ["north", "south", "east", "west", "north west", "south east"]


def answers(count: int, seed: int) -> list[str]:
    """`count` distinct 5-sentence answers, no two with the same first sentence."""
    rng = random.Random(seed)
    out: list[str] = []
    firsts: set[str] = set()
    while len(out) < count:
        values = {
            "room": rng.choice(ROOMS),
            "n": rng.randrange(5, 100),
            "t": rng.randrange(15, 30),
            "m": rng.randrange(2, 60),
            "k": rng.randrange(2, 12),
            "h": rng.randrange(7, 12),
            "wind": rng.choice(WINDS),
        }
        first = rng.choice(FIRSTS).format(**values)
        if first in firsts:
            continue
        firsts.add(first)
        rest = rng.sample(OTHERS, 4)
        out.append(" ".join([first, *(s.format(**values) for s in rest)]))
    return out


def char_deltas(text: str, rng: random.Random) -> list[str]:
    """The text in 3-6 character pieces, the way an LLM's tokens arrive."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        step = rng.randint(3, 6)
        out.append(text[pos : pos + step])
        pos += step
    return out


@dataclass
class First:
    wall: float  # seconds from synthesize-start to the first audio-chunk
    cpu: float  # CPU seconds the server spent in that time (less sensitive to other load on the machine)


async def first_audio(port: int, pid: int, text: str, deltas: list[str], delta_s: float) -> First:
    """Time to the first audio-chunk; the answer is then read to synthesize-stopped."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    voice = SynthesizeVoice(name=VOICE)
    first: float | None = None
    cpu_first = 0.0

    async def send() -> None:
        for delta in deltas:
            await client.write_event(SynthesizeChunk(text=delta).event())
            if delta_s:
                await asyncio.sleep(delta_s)
        await client.write_event(Synthesize(text=text, voice=voice).event())
        await client.write_event(SynthesizeStop().event())

    try:
        cpu_started = cpu_seconds(pid)
        started = time.perf_counter()
        await client.write_event(SynthesizeStart(voice=voice).event())
        sender = asyncio.create_task(send())
        async with asyncio.timeout(120):
            while (event := await client.read_event()) is not None:
                if event.type == "audio-chunk" and first is None:
                    first = time.perf_counter()
                    cpu_first = cpu_seconds(pid) - cpu_started
                elif event.type == "error":
                    raise RuntimeError(f"server error: {event.data}")
                elif event.type == "synthesize-stopped":
                    break
        await sender
    finally:
        await client.disconnect()
    assert first is not None, "no audio"
    return First(first - started, cpu_first)


def figures(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:5.0f} ms, p95 {pct(values, 95) * 1000:5.0f} ms"


def ratio(ours: list[float], theirs: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}x"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="answers per server (default 20)")
    parser.add_argument("--delta-ms", type=float, default=0.0, help="pause between deltas (default 0: at once)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the answers and their deltas")
    parser.add_argument("--reference", metavar="PYTHON", help="an interpreter with wyoming-piper, to compare")
    parser.add_argument("server_args", nargs="*", help="extra wyoming-minerva flags (after --)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    texts = answers(args.runs + 1, args.seed)
    load = os.getloadavg()
    print(f"CPU cores: {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} (other work makes figures noisy)")
    print(f"{args.runs} unique 5-sentence answers as 3-6 character deltas, {args.delta_ms:g} ms apart")
    port, ref_port = free_port(), free_port()
    flags = ["--tts-uri", f"tcp://127.0.0.1:{port}", "--preload", "--local-files-only", "--tts-cache-mb", "0"]
    results: dict[str, list[First]] = {"minerva": []}
    cpu: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        procs = {"minerva": stack.enter_context(server_process([*flags, *args.server_args]))}
        ports = {"minerva": port}
        await wait_ready(port)
        if args.reference:
            procs["wyoming-piper"] = stack.enter_context(reference_process(args.reference, ref_port))
            await wait_ready(ref_port)
            ports["wyoming-piper"] = ref_port
            results["wyoming-piper"] = []
        for name, server in ports.items():  # warm-up: the first synthesis of a process is slow
            await first_audio(server, procs[name].pid, texts[0], char_deltas(texts[0], rng), 0)
            cpu[name] = -cpu_seconds(procs[name].pid)
        for text in texts[1:]:
            deltas = char_deltas(text, rng)
            for name, server in ports.items():
                pid = procs[name].pid
                results[name].append(await first_audio(server, pid, text, deltas, args.delta_ms / 1000))
        for name, proc in procs.items():
            cpu[name] += cpu_seconds(proc.pid)
    walls = {name: [r.wall for r in values] for name, values in results.items()}
    cpus = {name: [r.cpu for r in values] for name, values in results.items()}
    for name in results:
        print(f"  [{name}] first audio: {figures(walls[name])}")
        print(f"  [{name}] server CPU until first audio: {figures(cpus[name])}")
        print(f"  [{name}] server CPU per answer: {cpu[name] / args.runs * 1000:.0f} ms")
    if args.reference:
        ours, theirs = "minerva", "wyoming-piper"
        print(f"  ratio minerva / wyoming-piper, first audio (medians): {ratio(walls[ours], walls[theirs])}")
        print(f"  ratio minerva / wyoming-piper, CPU until first audio: {ratio(cpus[ours], cpus[theirs])}")
        print("  (target <= 0.50x)")


if __name__ == "__main__":
    asyncio.run(main())
