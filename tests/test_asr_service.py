"""The ASR service end to end: real server on loopback, the bundled tiny.en model, the wyoming client as peer."""

from __future__ import annotations

import asyncio
import time

from asr_helpers import asr_server, read_until, send_audio, send_chunks, transcribe, transcript_text
from conftest import ENGLISH, Speech, fixture_path, normalise, wyoming_client
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStop
from wyoming.info import Describe

from wyoming_minerva.audio import read_wav
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import AsrSettings


async def test_info_describes_one_asr_program() -> None:
    async with (
        asr_server(settings=AsrSettings(models=ENGLISH, endpointing=True)) as (server, _),
        wyoming_client(server.port) as client,
    ):
        await client.write_event(Describe().event())
        info = (await read_until(client, "info"))[-1].data
    (program,) = info["asr"]
    assert program["installed"] and program["supports_transcript_streaming"]
    assert program["requires_external_vad"] is False
    (model,) = program["models"]
    assert model["name"] == "tiny.en" and model["languages"] == ["en"] and model["installed"]
    assert program["attribution"]["name"] and program["version"]


async def test_info_without_endpointing_asks_for_external_vad() -> None:
    async with (
        asr_server(settings=AsrSettings(models=ENGLISH, endpointing=False)) as (server, _),
        wyoming_client(server.port) as client,
    ):
        await client.write_event(Describe().event())
        info = (await read_until(client, "info"))[-1].data
    assert info["asr"][0]["requires_external_vad"] is True


async def test_human_recordings_come_back_as_words() -> None:
    expected = {
        "asr/turn_on_the_living_room_lamp.wav": "turn on the living room lamp",  # 44.1 kHz stereo
        "asr/living_room_light_en.wav": "turn on the living room light",  # 16 kHz mono
    }
    async with asr_server() as (server, _):
        for name, words in expected.items():
            pcm, fmt = read_wav(fixture_path(name).read_bytes())
            async with wyoming_client(server.port) as client:
                events = await transcribe(client, pcm, fmt.rate, fmt.width, fmt.channels)
            assert normalise(transcript_text(events)) == words, name


async def test_synthesized_speech_full_event_sequence(speech: Speech) -> None:
    pcm = speech.say("Turn off the kitchen lights.") + speech.silence(0.3)
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        events = await transcribe(client, pcm, speech.rate)
    types = [e.type for e in events]
    # The VAD's start of speech comes first (in audio ms); audio-stop came before the endpoint: no voice-stopped.
    assert types[:2] == ["voice-started", "transcript-start"], types
    assert 0 <= events[0].data["timestamp"] < 500
    assert types[-2:] == ["transcript", "transcript-stop"]
    assert "transcript-chunk" in types
    chunk_text = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert normalise(chunk_text) == normalise(transcript_text(events)) == "turn off the kitchen lights"
    assert events[-2].data.get("language") == "en"


async def test_endpointing_answers_before_audio_stop_and_connection_stays_open(speech: Speech) -> None:
    command = speech.say("Turn off the bedroom fan.")
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, command + speech.silence(3.0), speech.rate)
        # No audio-stop yet: the server must find the end of speech itself, and says where it heard it end.
        events = await read_until(client, "transcript-stop", timeout=30)
        assert normalise(transcript_text(events)) == "turn off the bedroom fan"
        stopped = next(e for e in events if e.type == "voice-stopped").data["timestamp"]
        assert 1000 < stopped <= len(command) * 1000 // 2 // speech.rate + 100
        # Audio after the endpoint is ignored; audio-stop then brings no second transcript.
        await send_chunks(client, speech.silence(0.5), speech.rate)
        await client.write_event(AudioStop().event())
        # The next utterance on the same connection works.
        events = await transcribe(client, speech.say("What time is it?"), speech.rate)
        assert normalise(transcript_text(events)) == "what time is it"


async def test_no_endpointing_waits_for_audio_stop(speech: Speech) -> None:
    async with (
        asr_server(settings=AsrSettings(models=ENGLISH, endpointing=False)) as (server, _),
        wyoming_client(server.port) as client,
    ):
        await client.write_event(Transcribe().event())
        await send_audio(client, speech.say("Turn on the fan.") + speech.silence(2.0), speech.rate)
        try:
            async with asyncio.timeout(2.0):
                early = await client.read_event()
        except TimeoutError:
            early = None
        assert early is None, "a transcript came before audio-stop with endpointing off"
        await client.write_event(AudioStop().event())
        events = await read_until(client, "transcript-stop")
    assert normalise(transcript_text(events)) == "turn on the fan"


async def test_audio_stop_without_audio_gives_empty_transcript() -> None:
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStop().event())
        events = await read_until(client, "transcript-stop", timeout=10)
        assert transcript_text(events) == ""
        # Still serving on the same connection.
        await client.write_event(Describe().event())
        await read_until(client, "info", timeout=5)


async def test_missing_transcribe_and_audio_start_use_defaults(speech: Speech) -> None:
    pcm = speech.say("Open the garage door.")
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        for i in range(0, len(pcm), 4096):
            await client.write_event(AudioChunk(rate=speech.rate, width=2, channels=1, audio=pcm[i : i + 4096]).event())
        await client.write_event(AudioStop().event())
        events = await read_until(client, "transcript-stop")
    assert normalise(transcript_text(events)) == "open the garage door"


async def test_pure_silence_gives_no_hallucinated_words(speech: Speech) -> None:
    async with asr_server() as (server, _), wyoming_client(server.port) as client:
        events = await transcribe(client, speech.silence(3.0), speech.rate)
    assert transcript_text(events) == ""


async def test_two_first_requests_load_the_model_once(speech: Speech) -> None:
    manager = ModelManager(workers=2, queue_size=8)
    pcm = speech.say("Turn on the lights.")
    try:
        async with asr_server(manager=manager) as (server, stt):

            async def one() -> str:
                async with wyoming_client(server.port) as client:
                    return transcript_text(await transcribe(client, pcm, speech.rate))

            texts = await asyncio.gather(one(), one())
            assert manager.load_count(stt.key) == 1
            assert [normalise(t) for t in texts] == ["turn on the lights"] * 2
    finally:
        await manager.close()


async def test_describe_is_instant_while_a_long_decode_runs(speech: Speech) -> None:
    long_audio = b"".join(speech.say(f"This is sentence number {n} of a long dictation.") for n in range(1, 9))
    async with asr_server() as (server, stt):
        await stt.preload()
        async with wyoming_client(server.port) as busy, wyoming_client(server.port) as probe:
            await busy.write_event(Transcribe().event())
            await send_audio(busy, long_audio, speech.rate)
            await busy.write_event(AudioStop().event())
            async with asyncio.timeout(10):  # each connection gets one event per turn: wait for the decode
                while stt.manager.queue_depth < 1:  # noqa: ASYNC110 - polling the manager's own counter
                    await asyncio.sleep(0.01)
            started = time.perf_counter()
            await probe.write_event(Describe().event())
            await read_until(probe, "info", timeout=5)
            elapsed = time.perf_counter() - started
            assert stt.manager.queue_depth >= 1, "decode finished before describe was answered; test proves nothing"
            assert elapsed < 0.1, f"describe took {elapsed * 1000:.0f} ms during a decode"
            await read_until(busy, "transcript-stop", timeout=60)
