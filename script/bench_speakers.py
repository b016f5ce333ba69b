"""script/bench speakers: diarization quality, speed and memory on really different voices. Figures only.

1. Real-time factor of diarization alone (VAD, embeddings, clustering; no transcription) on a 10-minute
   4-voice file, and the peak RSS added by loading the embedder and diarizing it (VmHWM reset just before).
2. Attribution: share of speech time given to the right speaker on 4-voice conversations (the bundled Piper
   voice with a new sentence each turn, the human lamp recording, the Home Assistant Cloud voices of the English
   and German recordings from ../shared/fixtures), and with the French voice as a fifth.
3. Embedding cost per second of audio: diarization windows (0.82 s side by side) and the clip recipe
   (windows every 0.4 s) on a 10 s clip; and a voice print of a 2 s wake phrase (what --wake-speakers costs).
4. Wyoming transcripts (Home Assistant's flow at real-time pace, endpointing on, the bundled tiny.en): end of speech →
   transcript with and without an enrolled voice, and how long the transcript waited for its speaker.
5. Wake detections: what the speaker check of one detection costs (the gate alone, on the 2 s before it), and
   phrase end → detection at real-time pace with and without --wake-speakers.

The machine's load average is printed with the figures: other processes share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, Speech
from bench_speakers_wyoming import transcript_speakers, wake_detections

from wyoming_minerva.audio import AudioFormat, convert_pcm, pcm16_to_float, read_wav
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.speakers.attribution import sequential_label
from wyoming_minerva.speakers.embedder import WINDOW_SAMPLES, OnnxSpeakerEmbedder
from wyoming_minerva.speakers.evaluation import LabelledSpan, attribution_share, stitch
from wyoming_minerva.speakers.service import SpeakerService

FIXTURES = Path(os.environ.get("MINERVA_FIXTURES", ROOT.parent / "shared" / "fixtures"))
RECORDINGS = {
    "lamp": "asr/turn_on_the_living_room_lamp.wav",
    "cloud_en": "asr/living_room_light_en.wav",
    "cloud_de": "asr/living_room_light_de.wav",
    "cloud_fr": "asr/whats_your_name_french.wav",
}
JOE_LINES = [
    "The weather tomorrow looks sunny with a light breeze from the west.",
    "I have moved the meeting to Thursday afternoon at three.",
    "Could you turn the heating down a little in the bedroom?",
    "We still need milk, bread, and a dozen eggs from the shop.",
    "The parcel arrived this morning and it is on the hall table.",
    "Dinner will be ready in about twenty minutes.",
    "Please remember to water the plants in the kitchen before you leave.",
    "The train to the city was delayed by twenty minutes this morning.",
]
GAPS = [0.6, 0.15, 1.0, 0.4, 0.8, 0.3, 1.4]  # 0.15 s: the VAD bridges it, the change is inside one stretch


def load(relative: str) -> np.ndarray:
    pcm, fmt = read_wav((FIXTURES / relative).read_bytes())
    return pcm16_to_float(convert_pcm(pcm, fmt))


def conversation(
    voices: dict[str, np.ndarray], joe: list[np.ndarray], who: list[str], turns: int, seed: int
) -> tuple[np.ndarray, list[LabelledSpan]]:
    """`turns` turns, never the same speaker twice in a row, Joe saying his next line each time."""
    rng = np.random.default_rng(seed)
    lines = itertools.cycle(joe)
    order: list[str] = []
    for _ in range(turns):
        order.append(str(rng.choice([name for name in who if not order or name != order[-1]])))
    return stitch([(name, next(lines) if name == "joe" else voices[name]) for name in order], GAPS)


def vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


async def main(args: argparse.Namespace) -> None:
    missing = [name for name, path in RECORDINGS.items() if not (FIXTURES / path).is_file()]
    if missing:
        sys.exit(f"the fixture recordings are needed ({FIXTURES}); missing: {', '.join(missing)}")
    print(f"start: {load_average()}")
    speech = Speech()
    joe = [pcm16_to_float(convert_pcm(speech.say(line), AudioFormat(speech.rate))) for line in JOE_LINES]
    voices = {name: load(path) for name, path in RECORDINGS.items()}
    four = ["joe", "lamp", "cloud_en", "cloud_de"]
    long_audio, long_truth = conversation(voices, joe, four, int(args.minutes * 60 / 2) + 4, seed=7)
    long_audio = long_audio[: int(args.minutes * 60 * 16000)]
    long_truth = [t for t in long_truth if t.end <= len(long_audio) / 16000]
    gc.collect()

    manager = ModelManager(workers=2, queue_size=8)
    service = SpeakerService(manager)
    peak_known = reset_peak_rss()
    before = vm("VmRSS")
    started = time.perf_counter()
    await service.voice_print(voices["lamp"])  # loads the model
    load_s = time.perf_counter() - started

    print(f"\n1. diarization alone on {len(long_audio) / 16000 / 60:.1f} minutes ({load_average()})")
    started = time.perf_counter()
    result = await service.diarize_audio(long_audio)
    took = time.perf_counter() - started
    _, turns = result.labelled(sequential_label)
    share = attribution_share(long_audio, long_truth, [LabelledSpan(t.start, t.end, t.speaker) for t in turns])
    print(
        f"   {took:.1f} s → RTF {took / (len(long_audio) / 16000):.3f}; {result.speech_seconds:.0f} s of speech; "
        f"{len(result.speakers)} speakers; {share * 100:.1f} % right"
    )
    peak = vm("VmHWM")
    if peak_known:
        print(
            f"   peak RSS added by loading the embedder ({load_s:.2f} s) and diarizing: {peak - before:.1f} MiB "
            f"(RSS before {before:.0f} MiB)"
        )
    else:
        print("   peak RSS added: not measured (/proc/self/clear_refs is not writable here)")

    print("\n2. attribution (share of speech time given to the right speaker)")
    for who in (four, [*four, "cloud_fr"]):
        for seed in range(args.seeds):
            audio, truth = conversation(voices, joe, who, args.turns, seed)
            result = await service.diarize_audio(audio)
            _, turns = result.labelled(sequential_label)
            share = attribution_share(audio, truth, [LabelledSpan(t.start, t.end, t.speaker) for t in turns])
            print(
                f"   {len(who)} voices, seed {seed}: {len(result.speakers)} speakers found, "
                f"{share * 100:.1f} % right ({len(audio) / 16000:.0f} s, {args.turns} turns)"
            )

    print("\n3. embedding cost")
    embedder = OnnxSpeakerEmbedder.load()
    clip = np.concatenate(joe)[: 10 * 16000]
    pieces = np.stack([clip[i : i + WINDOW_SAMPLES] for i in range(0, len(clip) - WINDOW_SAMPLES, WINDOW_SAMPLES)])
    embedder.embed_windows(pieces[:2])
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        embedder.embed_windows(pieces)
        runs.append(time.perf_counter() - started)
    seconds_covered = len(pieces) * WINDOW_SAMPLES / 16000
    print(f"   diarization windows: {min(runs) / seconds_covered * 1000:.0f} ms per second of speech (1 thread)")
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        embedder.embed(clip)
        runs.append(time.perf_counter() - started)
    print(f"   clip recipe (enrolment, references): {min(runs) / 10 * 1000:.0f} ms per second of audio")
    await service.voice_print(voices["lamp"])
    wake = joe[2][: 2 * 16000]
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        await service.voice_print(wake, shortest=0.3)
        runs.append(time.perf_counter() - started)
    print(f"   voice print of a 2 s wake phrase: {sorted(runs)[len(runs) // 2] * 1000:.0f} ms median")

    print(f"\n4. Wyoming transcripts, Home Assistant's flow at real-time pace ({load_average()})")
    await transcript_speakers(manager, speech, args.runs)
    print(f"\n5. wake detections, okay_nabu ({load_average()})")
    await wake_detections(manager, speech, args.runs)

    print(f"\nend: {load_average()}")
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long file (default 10)")
    parser.add_argument("--turns", type=int, default=24, help="turns per attribution conversation (default 24)")
    parser.add_argument("--seeds", type=int, default=2, help="conversations per voice set (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="utterances and wake words per setting (default 5)")
    asyncio.run(main(parser.parse_args()))
