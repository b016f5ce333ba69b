"""Diarization with the real embedder on conversations of really different voices.

Voices: the bundled Piper voice (Joe: a different sentence each turn), the human lamp recording, and the Home
Assistant Cloud voices of the English and German recordings (../shared/fixtures; skipped when absent).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import Speech, fixture_path

from wyoming_minerva.audio import AudioFormat, convert_pcm, pcm16_to_float, read_wav
from wyoming_minerva.errors import BadRequestError
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.speakers.attribution import sequential_label
from wyoming_minerva.speakers.evaluation import LabelledSpan, attribution_share, stitch
from wyoming_minerva.speakers.service import Diarization, NoSpeechError, ReferenceLengthError, SpeakerService
from wyoming_minerva.speakers.store import SpeakerStore

pytestmark = pytest.mark.timeout(300)

JOE_LINES = [
    "The weather tomorrow looks sunny with a light breeze from the west.",
    "I have moved the meeting to Thursday afternoon at three.",
    "Could you turn the heating down a little in the bedroom?",
    "We still need milk, bread, and a dozen eggs from the shop.",
    "The parcel arrived this morning and it is on the hall table.",
    "Dinner will be ready in about twenty minutes.",
]
JOE_ENROLMENT = [
    "Please remember to water the plants in the kitchen before you leave.",
    "The train to the city was delayed by twenty minutes this morning.",
]
FIXTURE_VOICES = {
    "lamp": "asr/turn_on_the_living_room_lamp.wav",  # a human
    "cloud_en": "asr/living_room_light_en.wav",  # Home Assistant Cloud voices
    "cloud_de": "asr/living_room_light_de.wav",
}


@dataclass
class Voices:
    speech: Speech
    fixtures: dict[str, np.ndarray]

    def joe(self, text: str) -> np.ndarray:
        return pcm16_to_float(convert_pcm(self.speech.say(text), AudioFormat(self.speech.rate)))

    def conversation(self, order: list[str], gaps: list[float]) -> tuple[np.ndarray, list[LabelledSpan]]:
        lines = itertools.cycle(JOE_LINES)
        return stitch([(who, self.joe(next(lines)) if who == "joe" else self.fixtures[who]) for who in order], gaps)


def recording(relative: str) -> np.ndarray:
    pcm, fmt = read_wav(fixture_path(relative).read_bytes())
    return pcm16_to_float(convert_pcm(pcm, fmt))


@pytest.fixture(scope="module")
def voices(speech: Speech) -> Voices:
    return Voices(speech, {name: recording(path) for name, path in FIXTURE_VOICES.items()})


@pytest.fixture(scope="module")
async def manager() -> AsyncIterator[ModelManager]:
    manager = ModelManager(workers=2, queue_size=8)
    yield manager
    await manager.close()


@pytest.fixture
def service(manager: ModelManager) -> SpeakerService:
    return SpeakerService(manager)


def found_spans(result: Diarization) -> list[LabelledSpan]:
    _, turns = result.labelled(sequential_label)
    return [LabelledSpan(t.start, t.end, t.speaker) for t in turns]


FOUR = ["joe", "lamp", "cloud_en", "cloud_de", "joe", "cloud_de", "lamp", "cloud_en", "joe", "lamp", "cloud_de"]
FOUR += ["cloud_en", "joe"]


async def test_four_voices_are_four_speakers(service: SpeakerService, voices: Voices) -> None:
    # gaps of 0.15 s are bridged by the VAD: those speaker changes happen inside one stretch of speech
    audio, truth = voices.conversation(FOUR, [0.6, 0.15, 1.0, 0.4, 0.8])
    result = await service.diarize_audio(audio)
    assert len(result.speakers) == 4
    share = attribution_share(audio, truth, found_spans(result))
    assert share >= 0.85, share
    assert result.names == {}


async def test_one_voice_is_one_speaker(service: SpeakerService, voices: Voices) -> None:
    audio, truth = voices.conversation(["joe"] * 5, [0.5, 1.2])
    result = await service.diarize_audio(audio)
    assert len(result.speakers) == 1
    assert attribution_share(audio, truth, found_spans(result)) >= 0.95


async def test_silence_and_noise_have_no_speakers(service: SpeakerService) -> None:
    silence = np.zeros(16000 * 20, dtype=np.float32)
    assert (await service.diarize_audio(silence)).turns == ()
    assert (await service.diarize_audio(np.zeros(100, dtype=np.float32))).turns == ()  # shorter than a window


async def test_known_voices_are_named_and_the_others_are_not(manager: ModelManager, voices: Voices) -> None:
    service = SpeakerService(manager)
    joe = await service.voice_print(np.concatenate([voices.joe(line) for line in JOE_ENROLMENT]))
    german = await service.voice_print(voices.fixtures["cloud_de"])
    audio, truth = voices.conversation(FOUR, [0.6, 0.9])
    result = await service.diarize_audio(audio, {"Joe": joe.vector, "Greta": german.vector})
    labels, turns = result.labelled(sequential_label)
    assert sorted(labels) == ["Greta", "Joe", "Speaker_0", "Speaker_1"]
    found = [LabelledSpan(t.start, t.end, t.speaker) for t in turns]
    renamed = [
        LabelledSpan(t.start, t.end, {"joe": "Joe", "cloud_de": "Greta"}.get(t.speaker, t.speaker)) for t in truth
    ]
    assert attribution_share(audio, renamed, found) >= 0.85
    for span in found:  # the named labels sit where those voices speak
        owners = {t.speaker for t in truth if min(span.end, t.end) - max(span.start, t.start) > 0.5}
        if span.speaker == "Joe":
            assert owners == {"joe"}
        if span.speaker == "Greta":
            assert owners == {"cloud_de"}


async def test_enrolment_survives_a_restart(manager: ModelManager, voices: Voices, tmp_path: Path) -> None:
    first = SpeakerService(manager, SpeakerStore(tmp_path))
    await first.enrol("Joe", [voices.joe(line) for line in JOE_ENROLMENT])
    restarted = SpeakerService(manager, SpeakerStore(tmp_path))  # a new process reads the same data dir
    assert [s.name for s in restarted.require_store().all()] == ["Joe"]
    audio, _ = voices.conversation(["lamp", "joe", "cloud_en", "joe"], [0.7])
    labels, _ = (await restarted.diarize_audio(audio)).labelled(sequential_label)
    assert labels == ["Speaker_0", "Joe", "Speaker_1"]
    lamp = await restarted.voice_print(voices.fixtures["lamp"])
    labels, _ = (await restarted.diarize_audio(audio, {"JOE": lamp.vector})).labelled(sequential_label)
    assert labels == ["JOE", "Speaker_0", "Speaker_1"]  # a reference replaces the enrolled voice of that name
    joe_said = await restarted.identify(voices.joe("Turn off the lights in the garage."))
    assert joe_said is not None and joe_said[0] == "Joe" and joe_said[1] >= 0.62
    assert await restarted.identify(voices.fixtures["lamp"]) is None


async def test_reference_clips_need_one_to_thirty_seconds_of_speech(service: SpeakerService, voices: Voices) -> None:
    short = recording("tts/this_is_a_test.wav")  # 0.74 s, another Piper voice
    with pytest.raises(ReferenceLengthError, match="at least 1 s"):
        await service.voice_print(short)
    with pytest.raises(NoSpeechError):
        await service.voice_print(np.zeros(16000 * 5, dtype=np.float32))
    long = np.concatenate([voices.joe(line) for line in JOE_LINES * 2])
    with pytest.raises(ReferenceLengthError, match="at most 30 s"):
        await service.voice_print(long)
    assert isinstance(ReferenceLengthError("x"), BadRequestError)
    fine = await service.voice_print(voices.fixtures["lamp"])
    assert 1.0 <= fine.speech_seconds <= 3.0


async def test_a_cancelled_diarization_frees_the_executor(
    manager: ModelManager, service: SpeakerService, voices: Voices
) -> None:
    """Five minutes of talk take many seconds; cancelled early, the worker stops after its current batch."""
    audio, _ = voices.conversation(FOUR * 8, [0.5])
    assert len(audio) / 16000 > 300
    await service.voice_print(voices.fixtures["lamp"])  # the model is loaded: only the work remains
    task = asyncio.create_task(service.diarize_audio(audio))
    await asyncio.sleep(1.0)
    assert manager.queue_depth == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = time.perf_counter()
    while manager.queue_depth:
        assert time.perf_counter() - cancelled < 5.0, "the diarization kept running after the caller left"
        await asyncio.sleep(0.05)
