"""Diarized transcriptions on /v1/audio/transcriptions (model gpt-4o-transcribe-diarize), through the real openai SDK.

OpenAI's diarized_json shape exactly; known speakers (references) and enrolled voices named, the others A, B, …;
the stream's events; what OpenAI refuses with that model is a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import ENGLISH, Speech, local_stt, normalise
from http_helpers import Api, api, envelope_of
from test_speakers_http import JOE_ENROLMENT, Engines, Setup, conversation, data_url, recording, wav

from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings
from wyoming_minerva.speakers.service import SpeakerService
from wyoming_minerva.speakers.store import SpeakerStore

pytestmark = pytest.mark.timeout(240)

DIARIZE = "gpt-4o-transcribe-diarize"
BODY_KEYS = {"task", "duration", "text", "segments", "usage"}
SEGMENT_KEYS = {"type", "id", "speaker", "start", "end", "text"}
NONE = (None, None)


@pytest.fixture(scope="module")
async def setup(speech: Speech) -> AsyncIterator[Setup]:
    lamp, cloud_en = recording("asr/turn_on_the_living_room_lamp.wav"), recording("asr/living_room_light_en.wav")
    manager = ModelManager(workers=2, queue_size=8)
    yield Setup(manager, local_stt(manager, AsrSettings(models=ENGLISH)), speech, lamp, cloud_en)
    await manager.close()


@pytest.fixture
async def client(setup: Setup, tmp_path: Path) -> AsyncIterator[Api]:
    service = SpeakerService(setup.manager, SpeakerStore(tmp_path))
    async with api(Engines(setup.stt, None, service), setup.manager) as a:  # type: ignore[arg-type]
        yield a


@pytest.fixture(scope="module")
def talk(setup: Setup) -> bytes:
    audio, order = conversation(setup)
    assert order == ["joe", "lamp", "joe", "cloud_en"]
    return wav(audio)


async def post(client: Api, talk: bytes, **form: object) -> httpx.Response:
    fields = {"model": DIARIZE, "response_format": "diarized_json", **form}
    return await client.raw.post(
        "/v1/audio/transcriptions", files={"file": ("talk.wav", talk, "audio/wav")}, data=fields
    )


def speakers_of(body: dict[str, object]) -> list[str]:
    segments = body["segments"]
    assert isinstance(segments, list)
    return [segment["speaker"] for segment in segments]


async def test_diarized_json_has_openai_shape(client: Api, talk: bytes) -> None:
    result = await client.sdk.audio.transcriptions.create(
        model=DIARIZE, file=("talk.wav", talk), response_format="diarized_json", chunking_strategy="auto"
    )
    assert result.task == "transcribe" and result.duration == pytest.approx(len(talk) / 32000, abs=0.05)
    body = result.model_dump(exclude_unset=True)
    assert set(body) == BODY_KEYS
    assert body["usage"] == {"type": "duration", "seconds": round(result.duration, 3)}
    assert all(set(segment) == SEGMENT_KEYS for segment in body["segments"]), body["segments"]
    assert speakers_of(body) == ["A", "B", "A", "C"], body["segments"]
    segments = result.segments
    assert [s.type for s in segments] == ["transcript.text.segment"] * 4
    assert len({s.id for s in segments}) == 4
    assert all(s.start < s.end <= segments[i + 1].start for i, s in enumerate(segments[:-1]))
    texts = [normalise(s.text) for s in segments]
    assert "heating" in texts[0] and "living room" in texts[1] and "milk" in texts[2] and "light" in texts[3]
    assert normalise(result.text) == " ".join(texts)


async def test_known_speakers_are_named(client: Api, setup: Setup, talk: bytes) -> None:
    result = await client.sdk.audio.transcriptions.create(
        model=DIARIZE,
        file=("talk.wav", talk),
        response_format="diarized_json",
        chunking_strategy={"type": "server_vad", "silence_duration_ms": 500, "threshold": 0.5},  # as form fields
        known_speaker_names=["Lampy"],
        known_speaker_references=[data_url(setup.lamp)],
    )
    assert [s.speaker for s in result.segments] == ["A", "Lampy", "A", "B"]


async def test_enrolled_voices_are_named(client: Api, setup: Setup, talk: bytes) -> None:
    clips = [("file", (f"joe{i}.wav", wav(setup.joe(line)), "audio/wav")) for i, line in enumerate(JOE_ENROLMENT)]
    assert (await client.raw.post("/v1/speakers", data={"name": "Joe"}, files=clips)).status_code == 201
    response = await post(client, talk, **{"chunking_strategy": json.dumps({"type": "server_vad"})})
    assert response.status_code == 200, response.text
    assert speakers_of(response.json()) == ["Joe", "A", "Joe", "B"]


async def test_stream_sends_segments_then_done(client: Api, talk: bytes) -> None:
    whole = (await post(client, talk)).json()
    stream = await client.sdk.audio.transcriptions.create(
        model=DIARIZE, file=("talk.wav", talk), response_format="diarized_json", stream=True
    )
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types == ["transcript.text.delta", "transcript.text.segment"] * 4 + ["transcript.text.done"], types
    segments = [e.model_dump(exclude_unset=True) for e in events if e.type == "transcript.text.segment"]
    assert segments == whole["segments"]
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert [d.segment_id for d in deltas] == [s["id"] for s in segments]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == whole["text"]
    assert normalise("".join(d.delta for d in deltas)) == normalise(whole["text"])


async def test_json_and_text_from_the_diarizing_model(client: Api, talk: bytes) -> None:
    plain = await client.sdk.audio.transcriptions.create(model=DIARIZE, file=("talk.wav", talk))
    assert "heating" in normalise(plain.text) and "milk" in normalise(plain.text)
    text = await post(client, talk, response_format="text")
    assert text.status_code == 200 and normalise(text.text) == normalise(plain.text)


async def test_what_openai_refuses_is_400(client: Api, talk: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.sdk.audio.transcriptions.create(
            model=DIARIZE, file=("talk.wav", talk), response_format="diarized_json", prompt="Joe and Anna"
        )
    assert raised.value.status_code == 400
    cases = [
        ({"prompt": "Joe and Anna"}, "prompt", "unsupported_parameter"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities", "unsupported_parameter"),
        ({"response_format": "verbose_json"}, "response_format", "invalid_value"),
        ({"response_format": "srt"}, "response_format", "invalid_value"),
        ({"model": "whisper-1"}, "response_format", "invalid_value"),  # diarized_json needs the diarizing model
        ({"chunking_strategy": "sometimes"}, "chunking_strategy", "invalid_value"),
        ({"chunking_strategy": '{"type": "semantic_vad"}'}, "chunking_strategy", "invalid_value"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"}, "chunking_strategy", None),
        (
            {"known_speaker_names[]": ["A", "B"], "known_speaker_references[]": ["data:audio/wav;base64,AA=="]},
            None,
            None,
        ),
    ]
    for form, param, code in cases:  # None: any param or code (the envelope's shape is checked)
        response = await post(client, talk, **form)
        assert response.status_code == 400, (form, response.text)
        error = envelope_of(response)
        assert param is None or error["param"] == param, (form, error)
        assert code is None or error["code"] == code, (form, error)


async def test_silence_is_an_empty_diarized_answer(client: Api) -> None:
    response = await post(client, wav(np.zeros(16000 * 3, dtype=np.float32)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == BODY_KEYS and body["segments"] == [] and body["text"] == ""
