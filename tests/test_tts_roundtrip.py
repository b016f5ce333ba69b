"""Round trip: speech from our TTS service, transcribed by our ASR service (bundled tiny.en), gives the words back."""

from __future__ import annotations

import pytest
from asr_helpers import asr_server, transcribe, transcript_text
from conftest import normalise, wyoming_client
from tts_helpers import joe, read_answer, send_stream, tts_server
from wyoming.tts import Synthesize

from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.piper import PiperSynthesizer

__all__ = ["joe"]  # the session fixture, imported for pytest


@pytest.mark.parametrize(
    ("text", "streamed", "rate"),
    [
        ("Turn on the kitchen lights.", True, None),
        ("Please close the front door.", False, None),  # (numbers come back as digits: none here)
        ("**Open** the garage door.", True, 16000),  # markdown is not read aloud; resampled output still clear
    ],
)
async def test_synthesized_speech_is_transcribed_back(
    joe: PiperSynthesizer, text: str, streamed: bool, rate: int | None
) -> None:
    manager = ModelManager(workers=2, queue_size=8)  # one manager for both services, as in the app
    try:
        async with (
            tts_server(joe, TtsSettings(sample_rate=rate), manager=manager) as (tts, _),
            wyoming_client(tts.port) as client,
        ):
            if streamed:
                await send_stream(client, text)
                answer = await read_answer(client, "synthesize-stopped")
            else:
                await client.write_event(Synthesize(text=text).event())
                answer = await read_answer(client, "audio-stop")
        start = answer.start
        async with asr_server(manager) as (asr, _), wyoming_client(asr.port) as client:
            events = await transcribe(client, answer.audio + bytes(start.rate // 2), start.rate)
    finally:
        await manager.close()
    assert normalise(transcript_text(events)) == normalise(text)
