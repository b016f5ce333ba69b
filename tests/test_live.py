"""The live transcription engine with the bundled Whisper model (what the fake Transcriber cannot show)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from conftest import ENGLISH, Speech, local_stt, normalise
from live_helpers import EventLog, feed

from wyoming_minerva.audio import AudioFormat
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings, RealtimeSettings
from wyoming_minerva.stt.live.hub import Final, Interim, LiveHub, SessionOptions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[LiveHub]:
    manager = ModelManager(workers=2, queue_size=8)
    stt = local_stt(manager, AsrSettings(cpu_threads=2, models=ENGLISH))
    await stt.preload()
    live = LiveHub(stt, RealtimeSettings())
    try:
        yield live
    finally:
        await live.close()
        await manager.close()


async def test_loud_noise_that_webrtcvad_calls_speech_gives_no_words(hub: LiveHub, speech: Speech) -> None:
    rng = np.random.default_rng(3)
    hiss = rng.normal(0, 3000, 16000).clip(-32768, 32767).astype("<i2").tobytes()  # 1 s of loud hiss
    session = hub.open(SessionOptions())
    log = EventLog(session)
    await feed(session, bytes(16000) + hiss + bytes(32000), 16000, pace=4.0)
    session.finish()
    events = await log.done()
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 1  # webrtcvad heard "speech"...
    assert finals[0].text == ""  # ...but Silero (faster-whisper's VAD filter) kept it from Whisper
    assert finals[0].utterance == 1


async def test_two_commands_in_one_stream(hub: LiveHub, speech: Speech) -> None:
    pcm = (
        speech.silence(0.5)
        + speech.say("Open the garage door.")
        + speech.silence(1.0)
        + speech.say("Turn off the kitchen lights.")
        + speech.silence(1.0)
    )
    session = hub.open(SessionOptions(format=AudioFormat(speech.rate, 2, 1), language="en"))
    log = EventLog(session)
    await feed(session, pcm, speech.rate, pace=2.0)
    session.finish()
    events = await log.done()
    finals = [e for e in events if isinstance(e, Final)]
    assert [normalise(f.text) for f in finals] == ["open the garage door", "turn off the kitchen lights"]
    assert all(not isinstance(e, Interim) or e.utterance in (1, 2) for e in events)
