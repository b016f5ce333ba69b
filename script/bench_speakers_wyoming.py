"""script/bench speakers_wyoming: what enrolled voices cost on the Wyoming side. Figures only (also part of
script/bench speakers).

1. Transcripts: Home Assistant's ASR flow (transcribe, audio-start, 64 ms chunks at real-time pace, endpointing on,
   the bundled tiny.en) for commands spoken by the bundled Piper voice; end of speech (the last speech chunk sent)
   → transcript received, with that voice enrolled (the transcript names it) and with nobody enrolled; and how long
   each transcript waited for its speaker after its decode was done (the server's own figure, from its log).
2. Wake words: the speaker check of one detection alone (the voice print of the 2 s before it and the comparison),
   then phrase end → detection at real-time pace through WakeWords, with --wake-speakers Joe and without a gate;
   and the audio each stream keeps for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from piper.config import SynthesisConfig
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Speech, describe_ms

from wyoming_minerva.audio import AudioFormat, convert_pcm, pcm16_to_float
from wyoming_minerva.handlers.asr import AsrHandler
from wyoming_minerva.handlers.server import EventSink, WyomingServer
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, ListenUri, WakeSettings
from wyoming_minerva.speakers.service import SpeakerService
from wyoming_minerva.speakers.store import SpeakerStore
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.stt.whisper import whisper_engines
from wyoming_minerva.wake.openwakeword import CHUNK
from wyoming_minerva.wake.service import MAX_WINDOWS_PER_ROUND, WakeWords
from wyoming_minerva.wake.speaker_gate import PHRASE_SECONDS, SpeakerGate

CHUNK_SECONDS = 0.064
ENROLMENT = [
    "Please remember to water the plants in the kitchen before you leave.",
    "The train to the city was delayed by twenty minutes this morning.",
]
COMMANDS = [
    "Turn off the bedroom fan.",
    "What time is it?",
    "Set a timer for ten minutes.",
    "Turn on the living room lights.",
    "What is the weather like tomorrow?",
]
_DECODE = re.compile(r"decode (\d+) ms, end of speech → transcript (-?\d+) ms")
_WAITED = re.compile(r"waited (\d+) ms for the speaker")


class ServerLog(logging.Handler):
    """The server's own figures from its ASR INFO line: decode ms, its end of speech → transcript ms, and how long
    the transcript waited for its speaker (runs are one at a time, so the last line is the last run's)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: tuple[float, float, float | None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        decode, waited = _DECODE.search(message), _WAITED.search(message)
        if decode:
            self.last = (float(decode[1]), float(decode[2]), float(waited[1]) if waited else None)


async def enrolled_joe(manager: ModelManager, speech: Speech, folder: Path) -> SpeakerService:
    service = SpeakerService(manager, SpeakerStore(folder))
    clips = [pcm16_to_float(convert_pcm(speech.say(line), AudioFormat(speech.rate))) for line in ENROLMENT]
    await service.enrol("Joe", clips)
    return service


async def one_command(port: int, speech: Speech, text: str) -> tuple[float, str | None]:
    """(end of speech → transcript in ms, the speaker in its context) for one paced utterance."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    rate = speech.rate
    step = int(rate * CHUNK_SECONDS) * 2
    spoken, silence = speech.say(text), speech.silence(2.0)
    try:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())

        async def send() -> float:
            ended = 0.0
            for part, is_speech in ((spoken, True), (silence, False)):
                for i in range(0, len(part), step):
                    chunk = part[i : i + step]
                    await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=chunk).event())
                    await asyncio.sleep(len(chunk) / 2 / rate)
                if is_speech:
                    ended = time.perf_counter()
            return ended

        sender = asyncio.create_task(send())
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None
            if event.type == "transcript":
                received = time.perf_counter()
                break
        ended = await sender
        context = event.data.get("context") or {}
        return (received - ended) * 1000, context.get("speaker")
    finally:
        await client.disconnect()


async def transcript_speakers(manager: ModelManager, speech: Speech, runs: int) -> None:
    settings = AsrSettings(models=("tiny.en",))
    stt = SpeechToText(settings, manager, whisper_engines(settings, (), True), ())
    log = ServerLog()
    logging.getLogger("wyoming_minerva.handlers.asr").addHandler(log)
    logging.getLogger("wyoming_minerva.handlers.asr").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as enrolled_dir, tempfile.TemporaryDirectory() as empty_dir:
        services = {
            "Joe enrolled": await enrolled_joe(manager, speech, Path(enrolled_dir)),
            "nobody enrolled": SpeakerService(manager, SpeakerStore(Path(empty_dir))),
        }
        latencies: dict[str, list[float]] = {name: [] for name in services}
        decodes: dict[str, list[float]] = {name: [] for name in services}
        server_side: dict[str, list[float]] = {name: [] for name in services}
        waits: list[float] = []
        named: dict[str, list[str | None]] = {name: [] for name in services}
        servers = {}
        for name, service in services.items():

            def factory(sink: EventSink, service: SpeakerService = service) -> AsrHandler:
                return AsrHandler(sink, stt, settings, speakers=service)

            servers[name] = WyomingServer("asr", ListenUri("tcp", "127.0.0.1", 0), factory)
            await servers[name].start()
        await one_command(servers["nobody enrolled"].port, speech, "Hello there.")  # loads the model
        for index in range(runs):
            for name in services:  # alternated, so load on the machine falls on both alike
                log.last = None
                took, speaker = await one_command(servers[name].port, speech, COMMANDS[index % len(COMMANDS)])
                latencies[name].append(took)
                named[name].append(speaker)
                await asyncio.sleep(0.05)  # the server logs just after sending the transcript
                if log.last is not None:
                    decodes[name].append(log.last[0])
                    server_side[name].append(log.last[1])
                    if log.last[2] is not None:
                        waits.append(log.last[2])
        for server in servers.values():
            await server.stop_accepting()
            await server.close()
    for name in services:
        speakers = ", ".join(sorted({str(s) for s in named[name]}))
        print(f"   {name}: end of speech → transcript {describe_ms(latencies[name])}; speaker: {speakers}")
        print(
            f"      server: decode {describe_ms(decodes[name])}; its end of speech → transcript "
            f"{describe_ms(server_side[name])}"
        )
    added = statistics.median(latencies["Joe enrolled"]) - statistics.median(latencies["nobody enrolled"])
    print(f"   difference of the medians (client): {added:+.0f} ms")
    if waits:
        print(f"   transcript waited for its speaker after the decode: {describe_ms(waits)}")


async def wake_detections(manager: ModelManager, speech: Speech, runs: int) -> None:
    steady = b"".join(
        c.audio_int16_bytes
        for c in speech.voice.synthesize("Okay Nabu.", syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    )
    phrase16 = convert_pcm(speech.silence(1.0) + steady, AudioFormat(speech.rate))
    with tempfile.TemporaryDirectory() as folder:
        service = await enrolled_joe(manager, speech, Path(folder))
        gate = SpeakerGate.of(service, ["Joe"])
        clip = np.frombuffer(phrase16, dtype="<i2")[-int(PHRASE_SECONDS * 16000) :]
        checks = []
        for _ in range(runs * 2):
            started = time.perf_counter()
            verdict = await gate.check(clip)
            checks.append((time.perf_counter() - started) * 1000)
        print(f"   speaker check of one detection (2 s voice print + comparison): {describe_ms(checks)}")
        print(f"   (Joe's phrase: speaker {verdict.speaker}, cosine {verdict.score}, allowed {verdict.allowed})")
        busy = [asyncio.ensure_future(manager.run(time.sleep, 3.0)) for _ in range(manager.workers)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        await gate.check(clip)
        took = (time.perf_counter() - started) * 1000
        print(f"   the same while every inference worker is busy (3 s jobs): {took:.0f} ms")
        await asyncio.gather(*busy)
        settings = WakeSettings()
        engines = {
            "no gate": WakeWords(settings, manager),
            "--wake-speakers Joe": WakeWords(settings, manager, speakers=gate),
        }
        latency: dict[str, list[float]] = {name: [] for name in engines}
        pcm = speech.silence(1.0) + steady + speech.silence(1.5)
        phrase_end = len(speech.silence(1.0) + steady)
        try:
            for _ in range(runs):
                for name, wake in engines.items():
                    latency[name].append(await paced_detection(wake, pcm, speech.rate, phrase_end))
        finally:
            for wake in engines.values():
                await wake.close()
    for name, values in latency.items():
        print(f"   {name}: phrase end → detection {describe_ms(values)}")
    ring = (int(PHRASE_SECONDS * 16000) + 2 * MAX_WINDOWS_PER_ROUND * CHUNK + CHUNK) * 2  # worker.py
    print(f"   audio kept per stream for the check: {ring / 1024:.0f} KiB (whether or not voices are enrolled)")


async def paced_detection(wake: WakeWords, pcm: bytes, rate: int, phrase_end: int) -> float:
    """Feed at real-time pace; ms from the phrase's last byte fed to its detection (nan: none)."""
    stream = await wake.open_stream(["okay_nabu"], AudioFormat(rate))
    found: list[float] = []

    async def watch() -> None:
        async for _ in stream:
            found.append(time.perf_counter())

    watcher = asyncio.create_task(watch())
    step = int(rate * CHUNK_SECONDS) * 2
    ended = 0.0
    for i in range(0, len(pcm), step):
        await stream.feed(pcm[i : i + step])
        if i < phrase_end <= i + step:
            ended = time.perf_counter()
        await asyncio.sleep(step / 2 / rate)
    await stream.finish()
    await stream.close()
    await watcher
    return (found[0] - ended) * 1000 if found else float("nan")


async def main(args: argparse.Namespace) -> None:
    speech = Speech()
    manager = ModelManager(workers=2, queue_size=8)
    try:
        print("1. Wyoming transcripts, Home Assistant's flow at real-time pace")
        await transcript_speakers(manager, speech, args.runs)
        print("\n2. wake detections, okay_nabu")
        await wake_detections(manager, speech, args.runs)
    finally:
        await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="utterances and wake words per setting (default 5)")
    asyncio.run(main(parser.parse_args()))
