"""Enrolled voices on the Wyoming side: transcript.context.speaker through Home Assistant's ASR flow, the speaker of a
wake detection, and --wake-speakers letting only enrolled voices wake. Real servers on loopback, the bundled models.

The enrolled voice is the bundled Piper voice (sentences other than the ones it is then heard saying); the other
voices are the human lamp recording and the wake word recordings of ../shared/fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asr_helpers import read_until, send_audio
from conftest import ENGLISH, Speech, fixture_path, local_stt, normalise, send_chunks, wyoming_client, wyoming_server
from test_wake_service import detect
from test_wake_support import SteadySpeech
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart
from wyoming.event import Event
from wyoming.wake import Detect

from wyoming_minerva.app import App
from wyoming_minerva.audio import AudioFormat, convert_pcm, pcm16_to_float, read_wav, wav_bytes
from wyoming_minerva.handlers.asr import AsrHandler
from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.handlers.wake import WakeHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import (
    AsrSettings,
    DiscoverySettings,
    HttpSettings,
    ListenUri,
    Service,
    Settings,
    WakeSettings,
)
from wyoming_minerva.speakers.service import MODEL_KEY, SpeakerService
from wyoming_minerva.speakers.store import SpeakerStore
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.wake.service import WakeWords
from wyoming_minerva.wake.speaker_gate import SpeakerGate

pytestmark = pytest.mark.timeout(180)

ENROLMENT = [
    "Please remember to water the plants in the kitchen before you leave.",
    "The train to the city was delayed by twenty minutes this morning.",
]
SETTINGS = AsrSettings(models=ENGLISH)


@dataclass
class Setup:
    manager: ModelManager
    stt: SpeechToText
    speech: Speech


@pytest.fixture(scope="module")
async def setup(speech: Speech) -> AsyncIterator[Setup]:
    manager = ModelManager(workers=2, queue_size=8)
    yield Setup(manager, local_stt(manager, SETTINGS), speech)
    await manager.close()


async def enrolled(setup: Setup, folder: Path) -> SpeakerService:
    """A speaker service whose store knows the bundled Piper voice as Joe."""
    service = SpeakerService(setup.manager, SpeakerStore(folder))
    rate = setup.speech.rate
    await service.enrol("Joe", [pcm16_to_float(convert_pcm(setup.speech.say(t), AudioFormat(rate))) for t in ENROLMENT])
    return service


@asynccontextmanager
async def asr(setup: Setup, speakers: SpeakerService) -> AsyncIterator[WyomingServer]:
    async with wyoming_server("asr", lambda sink: AsrHandler(sink, setup.stt, SETTINGS, speakers=speakers)) as server:
        yield server


async def first_transcript(server: WyomingServer, pcm: bytes, rate: int, channels: int = 1) -> Event:
    """Home Assistant's flow: transcribe, audio-start, chunks; the first transcript (no audio-stop: endpointing)."""
    async with wyoming_client(server.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, pcm, rate, channels=channels)
        events = await read_until(client, "transcript", timeout=60)
    return events[-1]


async def test_transcript_names_the_enrolled_voice(setup: Setup, tmp_path: Path) -> None:
    speech = setup.speech
    service = await enrolled(setup, tmp_path)
    async with asr(setup, service) as server:
        joe = await first_transcript(server, speech.say("Turn off the bedroom fan.") + speech.silence(2.0), speech.rate)
        pcm, fmt = read_wav(fixture_path("asr/turn_on_the_living_room_lamp.wav").read_bytes())
        silence = bytes(fmt.rate * fmt.width * fmt.channels * 2)
        lamp = await first_transcript(server, pcm + silence, fmt.rate, fmt.channels)
    assert normalise(joe.data["text"]) == "turn off the bedroom fan"
    context = joe.data["context"]
    assert set(context) == {"speaker", "speaker_score"} and context["speaker"] == "Joe", context
    assert 0.62 <= context["speaker_score"] <= 1.0
    assert normalise(lamp.data["text"]) == "turn on the living room lamp"
    assert "context" not in lamp.data, lamp.data  # another voice: no speaker


async def test_without_enrolment_nothing_changes_and_nothing_loads(setup: Setup, tmp_path: Path) -> None:
    speech = setup.speech
    service = SpeakerService(setup.manager, SpeakerStore(tmp_path))
    setup.manager.unload(MODEL_KEY)  # an earlier test of the module may have loaded it
    async with asr(setup, service) as server:
        event = await first_transcript(server, speech.say("What time is it?") + speech.silence(2.0), speech.rate)
    assert normalise(event.data["text"]) == "what time is it"
    assert "context" not in event.data
    assert not setup.manager.is_loaded(MODEL_KEY)  # homes without enrolled voices pay nothing


# ---- wake ----------------------------------------------------------------------------------------


@asynccontextmanager
async def wake_server(setup: Setup, gate: SpeakerGate) -> AsyncIterator[WyomingServer]:
    wake = WakeWords(WakeSettings(), setup.manager, speakers=gate)
    try:
        async with wyoming_server("wake", lambda sink: WakeHandler(sink, wake)) as server:
            yield server
    finally:
        await wake.close()


def recording16k(relative: str) -> bytes:
    pcm, fmt = read_wav(fixture_path(relative).read_bytes())
    return convert_pcm(pcm, fmt)


async def wake_events(server: WyomingServer, pcm: bytes, rate: int) -> list[Event]:
    async with wyoming_client(server.port) as client:
        return await detect(client, pcm, rate, names=["okay_nabu"])


def joe_says_okay_nabu(speech: Speech) -> tuple[bytes, int]:
    steady = SteadySpeech(speech)
    return steady.silence(1.0) + steady.say("Okay Nabu.") + steady.silence(1.0), steady.rate


def other_voice_says_okay_nabu() -> bytes:
    return bytes(16000) + recording16k("wake/okay_nabu.wav") + bytes(32000)


async def test_detection_names_the_enrolled_voice(setup: Setup, tmp_path: Path) -> None:
    service = await enrolled(setup, tmp_path)
    joe, rate = joe_says_okay_nabu(setup.speech)
    async with wake_server(setup, SpeakerGate.of(service)) as server:
        by_joe = await wake_events(server, joe, rate)
        by_other = await wake_events(server, other_voice_says_okay_nabu(), 16000)
    (detection,) = [e for e in by_joe if e.type == "detection"]
    assert detection.data["name"] == "okay_nabu" and detection.data["speaker"] == "Joe", detection.data
    assert 0.5 <= detection.data["context"]["speaker_score"] <= 1.0
    (other,) = [e for e in by_other if e.type == "detection"]  # everyone wakes without --wake-speakers
    assert other.data["speaker"] is None and "context" not in other.data


async def test_wake_speakers_let_only_the_enrolled_voice_wake(setup: Setup, tmp_path: Path) -> None:
    service = await enrolled(setup, tmp_path)
    joe, rate = joe_says_okay_nabu(setup.speech)
    async with wake_server(setup, SpeakerGate.of(service, ["joe"])) as server:
        by_other = await wake_events(server, other_voice_says_okay_nabu(), 16000)
        by_joe = await wake_events(server, joe, rate)
    assert [e.type for e in by_other] == ["not-detected"], [e.type for e in by_other]
    assert [e.type for e in by_joe] == ["detection"] and by_joe[0].data["speaker"] == "Joe"


async def test_wake_speakers_keep_the_phrase_of_a_long_stream(setup: Setup, tmp_path: Path) -> None:
    """Home Assistant streams for hours: the phrase is found in the bounded ring, not in all the audio so far."""
    service = await enrolled(setup, tmp_path)
    joe, rate = joe_says_okay_nabu(setup.speech)
    steady = SteadySpeech(setup.speech)
    long = steady.say("The weather tomorrow looks sunny with a light breeze from the west.") * 3 + joe
    async with wake_server(setup, SpeakerGate.of(service, ["Joe"])) as server, wyoming_client(server.port) as client:
        await client.write_event(Detect(names=["okay_nabu"]).event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        await send_chunks(client, long, rate)
        event = (await read_until(client, "detection", timeout=60))[-1]
    assert event.data["speaker"] == "Joe"
    assert event.data["timestamp"] > len(long) * 1000 // 2 // rate - 2500


async def test_wake_without_enrolment_loads_no_speaker_model(setup: Setup, tmp_path: Path) -> None:
    service = SpeakerService(setup.manager, SpeakerStore(tmp_path))
    setup.manager.unload(MODEL_KEY)
    joe, rate = joe_says_okay_nabu(setup.speech)
    async with wake_server(setup, SpeakerGate.of(service)) as server:
        events = await wake_events(server, joe, rate)
    assert [e.type for e in events] == ["detection"] and events[0].data["speaker"] is None
    assert not setup.manager.is_loaded(MODEL_KEY)


async def test_the_app_wires_enrolment_transcripts_and_wake_speakers(setup: Setup, tmp_path: Path) -> None:
    """The whole process: a voice enrolled over HTTP names the Wyoming transcript, and --wake-speakers lets it wake."""
    speech = setup.speech
    local = ListenUri("tcp", "127.0.0.1", 0)
    settings = Settings(
        asr_uri=local,
        wake_uri=local,
        http=HttpSettings(host="127.0.0.1", port=0),
        data_dirs=(tmp_path,),
        local_files_only=True,
        discovery=DiscoverySettings(enabled=False),
        wake=WakeSettings(speakers=("Joe",)),
    )
    settings.validate()
    app = App(settings)
    await app.start()
    try:
        clips = [
            ("file", (f"{i}.wav", wav_bytes(speech.say(t), speech.rate), "audio/wav")) for i, t in enumerate(ENROLMENT)
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as client:
            enrolled = await client.post("/v1/speakers", data={"name": "Joe"}, files=clips)
        assert enrolled.status_code == 201, enrolled.text
        asr_server = app.servers[Service.ASR]
        transcript = await first_transcript(
            asr_server, speech.say("What time is it?") + speech.silence(2.0), speech.rate
        )
        joe, rate = joe_says_okay_nabu(speech)
        by_joe = await wake_events(app.servers[Service.WAKE], joe, rate)
        by_other = await wake_events(app.servers[Service.WAKE], other_voice_says_okay_nabu(), 16000)
    finally:
        await app.stop()
    assert transcript.data["context"]["speaker"] == "Joe", transcript.data
    assert [e.type for e in by_joe] == ["detection"] and by_joe[0].data["speaker"] == "Joe"
    assert [e.type for e in by_other] == ["not-detected"]
    assert (tmp_path / "speakers.json").is_file()
