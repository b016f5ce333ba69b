"""script/bench asr: end of speech → transcript for commands streamed like a satellite. Prints figures only.

Each 3-5 s command is streamed at real-time pace in 64 ms chunks, followed by 1.5 s of silence.
- endpointing on (our default): when does the transcript arrive after the speech ends?
- endpointing off, audio-stop 0.7 s after speech (what Home Assistant's own VAD does): audio-stop → transcript.
Also the real-time factor of a decode (audio sent at once) and the server's peak RSS.
Multilingual: the German and French recordings of ../shared/fixtures through the same flow, routed to the bundled
multilingual program, with the language given (Home Assistant) and without (detected first), and the server's peak RSS
with both programs loaded. `--skip-english` runs only that part.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import COMMANDS, Speech, describe_ms, free_port, peak_rss_mib, server_process, wait_ready
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

CHUNK_S = 0.064


def speech_end_seconds(pcm: bytes, rate: int) -> float:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.nonzero(samples > 300)[0]
    return float(loud[-1] + 1) / rate if len(loud) else 0.0


async def stream_command(
    port: int,
    pcm: bytes,
    rate: int,
    stop_after_speech: float | None,
    trailing: float = 1.5,
    language: str | None = "en",
    channels: int = 1,
) -> tuple[str, float, float | None]:
    """Returns (text, end of speech → transcript ms, audio-stop → transcript ms or None)."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    end_s = speech_end_seconds(pcm, rate * channels)
    audio = pcm + bytes(int(rate * trailing) * 2 * channels)
    step = int(rate * CHUNK_S) * 2 * channels
    got: dict[str, float | str] = {}

    async def reader() -> None:
        while (event := await client.read_event()) is not None:
            if event.type == "transcript":
                got["at"], got["text"] = time.perf_counter(), event.data.get("text", "")
                return

    task = asyncio.create_task(reader())
    await client.write_event(Transcribe(language=language).event())
    await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    start = time.perf_counter()
    speech_end_wall = stop_wall = None
    sent = 0.0
    for i in range(0, len(audio), step):
        if task.done():
            break
        piece = audio[i : i + step]
        await client.write_event(AudioChunk(rate=rate, width=2, channels=channels, audio=piece).event())
        sent += len(piece) / 2 / rate / channels
        if speech_end_wall is None and sent >= end_s:
            speech_end_wall = time.perf_counter()
        if stop_after_speech is not None and sent >= end_s + stop_after_speech:
            break
        await asyncio.sleep(max(0.0, start + sent - time.perf_counter()))
    if not task.done():
        stop_wall = time.perf_counter()
        await client.write_event(AudioStop().event())
    await asyncio.wait_for(task, 30)
    await client.disconnect()
    at = float(got["at"])
    assert speech_end_wall is not None
    return str(got["text"]), (at - speech_end_wall) * 1000, (at - stop_wall) * 1000 if stop_wall else None


async def decode_rtf(port: int, pcm: bytes, rate: int) -> float:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm).event())
    started = time.perf_counter()
    await client.write_event(AudioStop().event())
    while (event := await client.read_event()) is not None and event.type != "transcript":
        pass
    elapsed = time.perf_counter() - started
    await client.disconnect()
    return elapsed / (len(pcm) / 2 / rate)


FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "asr"
NON_ENGLISH = {"living_room_light_de.wav": "de", "whats_your_name_french.wav": "fr"}


async def multilingual(rounds: int, server_args: list[str]) -> None:
    from wyoming_minerva.audio import read_wav

    recordings = {name: read_wav((FIXTURES / name).read_bytes()) for name in NON_ENGLISH if (FIXTURES / name).is_file()}
    if not recordings:
        print(f"\nmultilingual: skipped ({FIXTURES} has no recordings)")
        return
    port = free_port()
    with server_process(["--asr-uri", f"tcp://127.0.0.1:{port}", *server_args]) as proc:
        await wait_ready(port)
        for name, (pcm, fmt) in recordings.items():  # warm-up: loads and joins base, loads tiny.en
            await stream_command(port, pcm, fmt.rate, None, language=NON_ENGLISH[name], channels=fmt.channels)
        english = Speech()
        await stream_command(port, english.say(COMMANDS[0]), english.rate, None)
        for label, given in (("language given (Home Assistant)", True), ("no language (detected, then routed)", False)):
            eos, texts = [], []
            for _ in range(rounds):
                for name, (pcm, fmt) in recordings.items():
                    language = NON_ENGLISH[name] if given else None
                    text, eos_ms, _ = await stream_command(
                        port, pcm, fmt.rate, None, language=language, channels=fmt.channels
                    )
                    eos.append(eos_ms)
                    texts.append(text)
            print(f"\nmultilingual, {label}: end of speech → transcript: {describe_ms(eos)}")
            print(f"  transcripts: {sorted(set(texts))!r}")
        print(f"  server peak RSS with both programs loaded: {peak_rss_mib(proc.pid):.0f} MiB")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="times each command is streamed per mode")
    parser.add_argument("--skip-english", action="store_true", help="only the multilingual part")
    parser.add_argument("server_args", nargs="*", help="extra wyoming-minerva flags (after --)")
    args = parser.parse_args()
    if args.skip_english:
        await multilingual(args.rounds, args.server_args)
        return

    speech = Speech()
    commands = [speech.say(text) for text in COMMANDS]
    durations = [len(c) / 2 / speech.rate for c in commands]
    print(f"{len(commands)} commands, {min(durations):.1f}-{max(durations):.1f} s, streamed in real time")

    for label, flags, stop_after in (
        ("endpointing on (default)", [], None),
        ("endpointing off, audio-stop 0.7 s after speech", ["--no-endpointing"], 0.7),
    ):
        port = free_port()
        data_dir = Path(tempfile.mkdtemp(prefix="bench-asr-"))  # empty: shows whether base was ever joined
        server_args = ["--asr-uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir), "--preload", *flags]
        with server_process([*server_args, *args.server_args]) as proc:
            await wait_ready(port)
            await stream_command(port, commands[0], speech.rate, stop_after)  # warm-up
            eos, stop, texts = [], [], []
            for _ in range(args.rounds):
                for pcm in commands:
                    text, eos_ms, stop_ms = await stream_command(port, pcm, speech.rate, stop_after)
                    texts.append(text)
                    eos.append(eos_ms)
                    if stop_ms is not None:
                        stop.append(stop_ms)
            rtf = [await decode_rtf(port, pcm, speech.rate) for pcm in commands]
            print(f"\n{label}")
            print(f"  end of speech → transcript: {describe_ms(eos)}")
            print(f"  audio-stop → transcript:    {describe_ms(stop) if stop else 'transcript came before audio-stop'}")
            print(f"  real-time factor (decode only): {np.median(rtf):.3f}")
            print(f"  server peak RSS: {peak_rss_mib(proc.pid):.0f} MiB")
            print(f"  sample transcript: {texts[0]!r}")
            joined = (data_dir / "whisper-base-multilingual").exists()
            print(f"  English-only workload touched the multilingual model: {'YES' if joined else 'no'}")
    await multilingual(args.rounds, args.server_args)


if __name__ == "__main__":
    asyncio.run(main())
