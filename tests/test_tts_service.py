"""The Wyoming TTS service on loopback with the bundled voice: Home Assistant's sequences, errors, concurrency."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, wyoming_client
from tts_helpers import FIVE_SENTENCES, Answer, joe, read_answer, send_stream, token_deltas, tts_server
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_minerva.app import App
from wyoming_minerva.errors import MinervaError
from wyoming_minerva.settings import DiscoverySettings, ListenUri, Service, Settings, TtsSettings
from wyoming_minerva.tts.piper import PiperSynthesizer

__all__ = ["joe"]  # the session fixture, imported for pytest

PARAGRAPH = " ".join(
    f"Sentence number {n} of this paragraph says something about the weather in a calm voice." for n in range(1, 9)
)


def audio_events(answer: Answer) -> list[str]:
    return [t for t in answer.types if t != "audio-chunk"]


async def test_info_offers_the_bundled_voice_and_streaming(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Describe().event())
        answer = await read_answer(client, "info", timeout=5)
    info = Info.from_event(answer.events[-1])
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.installed and program.supports_synthesize_streaming
    voice = next(v for v in program.voices if v.name == "en_US-joe-medium")
    assert voice.installed and voice.languages == ["en_US"]
    assert voice.attribution.name and program.attribution.url


async def test_plain_synthesize_gives_start_chunks_stop_in_one_format(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="Turned on the lights. It is 21.5 degrees.").event())
        answer = await read_answer(client, "audio-stop")
    assert audio_events(answer) == ["audio-start", "audio-stop"]
    assert answer.formats() == {(22050, 2, 1)}
    assert 1.5 < answer.seconds() < 8.0
    stamps = [e.data["timestamp"] for e in answer.events if e.type == "audio-chunk"]
    assert stamps == sorted(stamps) and stamps[0] == 0


async def test_home_assistant_stream_speaks_the_first_sentence_before_the_rest_arrives(joe: PiperSynthesizer) -> None:
    voice = SynthesizeVoice(name="en_US-joe-medium")
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(SynthesizeStart(voice=voice).event())
        deltas = token_deltas(FIVE_SENTENCES)
        first, rest = deltas[:20], deltas[20:]  # the first sentence and a bit of the second
        for delta in first:
            await client.write_event(SynthesizeChunk(text=delta).event())
        answer = await read_answer(client, "audio-chunk", timeout=20)  # before the stream is complete
        for delta in rest:
            await client.write_event(SynthesizeChunk(text=delta).event())
        await client.write_event(Synthesize(text=FIVE_SENTENCES, voice=voice).event())
        await client.write_event(SynthesizeStop().event())
        answer = await read_answer(client, "synthesize-stopped", answer=answer)
        # The connection still serves a describe afterwards: nothing is left over from the stream.
        await client.write_event(Describe().event())
        after = await read_answer(client, "info", timeout=5)
    assert audio_events(answer) == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert answer.types[-1] == "synthesize-stopped"
    assert answer.formats() == {(22050, 2, 1)}
    assert answer.seconds() > 8.0  # all five sentences, the ignored full `synthesize` not spoken twice
    assert answer.seconds() < 20.0
    assert after.types == ["info"]


async def test_plain_synthesize_after_a_stream_on_the_same_connection(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await send_stream(client, "First answer. Streamed.")
        streamed = await read_answer(client, "synthesize-stopped")
        await client.write_event(Synthesize(text="Second answer, plain.").event())
        plain = await read_answer(client, "audio-stop")
    assert audio_events(streamed) == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert audio_events(plain) == ["audio-start", "audio-stop"]
    assert plain.seconds() > 0.5


async def test_output_sample_rate_flag_gives_one_resampled_format(joe: PiperSynthesizer) -> None:
    settings = TtsSettings(sample_rate=16000, sentence_silence=0.25)
    async with tts_server(joe, settings) as (server, tts), wyoming_client(server.port) as client:
        await send_stream(client, "One. Two. Three.")
        answer = await read_answer(client, "synthesize-stopped")
        quiet = TtsSettings(sample_rate=16000)
        tts.settings = quiet
        await send_stream(client, "One. Two. Three.")
        tight = await read_answer(client, "synthesize-stopped")
    assert answer.formats() == {(16000, 2, 1)}
    # Two gaps of 0.25 s between the three sentences.
    assert abs((answer.seconds() - tight.seconds()) - 0.5) < 0.05


def speech_seconds(pcm: bytes, rate: int) -> float:
    """From the first to the last 10 ms frame within 35 dB of the loudest: the speech, without edge silence."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    frame = rate // 100
    rms = np.sqrt((samples[: len(samples) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (-35 / 20))[0]
    return (loud[-1] + 1 - loud[0]) * frame / rate


async def test_fixture_sentence_is_about_as_long_as_another_piper_voice(joe: PiperSynthesizer) -> None:
    with wave.open(str(fixture_path("tts/this_is_a_test.wav")), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        expected = speech_seconds(wav.readframes(wav.getnframes()), wav.getframerate())
    # Without the voice's random noise the length is the same every run (the default varies by about ±5 %).
    settings = TtsSettings(noise_scale=0.0, noise_w=0.0)
    async with tts_server(joe, settings) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="This is a test.").event())
        answer = await read_answer(client, "audio-stop")
    sent = answer.seconds()
    spoken = speech_seconds(answer.audio, answer.start.rate)
    assert abs(spoken - expected) / expected < 0.30, (spoken, expected)
    assert sent - spoken < 0.1, "more than 0.1 s of silence around one sentence"


async def test_describe_answers_at_once_while_a_long_paragraph_is_synthesized(joe: PiperSynthesizer) -> None:
    async with (
        tts_server(joe, workers=1) as (server, _),
        wyoming_client(server.port) as busy,
        wyoming_client(server.port) as asker,
    ):
        await busy.write_event(Synthesize(text=PARAGRAPH).event())
        answer = await read_answer(busy, "audio-chunk", timeout=30)
        started = time.perf_counter()
        await asker.write_event(Describe().event())
        await read_answer(asker, "info", timeout=5)
        elapsed = time.perf_counter() - started
        # Ask the busy connection too: its own read loop is not blocked by its synthesis either.
        await busy.write_event(Describe().event())
        answer = await read_answer(busy, "info", timeout=5, answer=answer)
        still_speaking = "audio-stop" not in answer.types
        await read_answer(busy, "audio-stop", answer=answer)
    assert elapsed < 0.1, f"describe took {elapsed * 1000:.0f} ms"
    assert still_speaking, "the paragraph finished before describe was asked: the test proves nothing"


async def test_two_concurrent_paragraphs_both_start_before_either_finishes(joe: PiperSynthesizer) -> None:
    async with (
        tts_server(joe, workers=2) as (server, _),
        wyoming_client(server.port) as one,
        wyoming_client(server.port) as two,
    ):
        await one.write_event(Synthesize(text=PARAGRAPH).event())
        await two.write_event(Synthesize(text=PARAGRAPH.replace("weather", "garden")).event())
        first, second = await asyncio.gather(read_answer(one, "audio-stop"), read_answer(two, "audio-stop"))
    assert max(first.first("audio-chunk"), second.first("audio-chunk")) < min(
        first.first("audio-stop"), second.first("audio-stop")
    )


async def test_repeated_phrase_comes_from_the_cache_identical(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, tts), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="Turned on the lights.").event())
        first = await read_answer(client, "audio-stop")
        synthesized = tts.stats.pieces_synthesized
        await send_stream(client, "Turned on the lights.")  # the same phrase, streamed this time
        second = await read_answer(client, "synthesize-stopped")
    assert second.audio == first.audio
    assert tts.stats.pieces_synthesized == synthesized and tts.stats.cache_hits == 1


async def test_disconnect_mid_stream_stops_the_work(joe: PiperSynthesizer) -> None:
    long_text = " ".join(f"This is sentence {n}, spoken slowly and with care." for n in range(40))
    async with tts_server(joe) as (server, tts):
        async with wyoming_client(server.port) as client:
            await send_stream(client, long_text)
            await read_answer(client, "audio-chunk", timeout=30)
        await asyncio.sleep(0.6)  # a piece already on the executor may still finish
        done = tts.stats.pieces_synthesized
        await asyncio.sleep(0.6)
        assert tts.stats.pieces_synthesized == done
        assert done < 10, f"{done} of 40 sentences were synthesized for a client that left"
        assert tts.manager.queue_depth == 0


# ---- errors: an `error` event, and the connection keeps serving -------------------------------


async def test_unknown_voice_names_the_available_ones(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="xx_XX-nobody-low")).event())
        plain = await read_answer(client, "error")
        await send_stream(client, "Hello.", SynthesizeVoice(name="nobody"))
        streamed = await read_answer(client, "synthesize-stopped")
        await client.write_event(Synthesize(text="Still here.").event())
        ok = await read_answer(client, "audio-stop")
    assert plain.types == ["error"]
    assert plain.events[0].data["code"] == "model_not_found"
    assert "en_US-joe-medium" in plain.events[0].data["text"]
    assert "--local-files-only" in plain.events[0].data["text"]
    assert streamed.types == ["error", "synthesize-stopped"]
    assert "en_US-joe-medium" in streamed.events[0].data["text"]
    assert ok.types[0] == "audio-start"


async def test_unknown_speaker_is_an_error_not_a_fallback(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        voice = SynthesizeVoice(name="en_US-joe-medium", speaker="alice")
        await client.write_event(Synthesize(text="Hello.", voice=voice).event())
        answer = await read_answer(client, "error")
    assert answer.events[0].data["code"] == "unknown_speaker"
    assert "single speaker" in answer.events[0].data["text"]


async def test_language_picks_a_voice(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(language="en")).event())
        english = await read_answer(client, "audio-stop")
        await client.write_event(Synthesize(text="Hallo.", voice=SynthesizeVoice(language="de_DE")).event())
        german = await read_answer(client, "error")
    assert english.types[0] == "audio-start"
    assert german.events[0].data["code"] == "model_not_found" and "en_US" in german.events[0].data["text"]


async def test_empty_and_unspeakable_text_are_errors(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        codes = []
        for text in ("", "   \n ", "```\ncode only\n```"):
            await client.write_event(Synthesize(text=text).event())
            codes.append((await read_answer(client, "error")).events[0].data["code"])
        await send_stream(client, "  ")
        streamed = await read_answer(client, "synthesize-stopped")
    assert codes == ["empty_text"] * 3
    assert streamed.types == ["error", "synthesize-stopped"]


async def test_text_over_the_cap_is_refused_plain_and_cut_off_streamed(joe: PiperSynthesizer) -> None:
    settings = TtsSettings(max_text_chars=60)
    async with tts_server(joe, settings) as (server, tts), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text="word " * 20).event())
        plain = await read_answer(client, "error")
        text = "A first short sentence. " + "Then many more words follow here. " * 10
        await send_stream(client, text)
        streamed = await read_answer(client, "synthesize-stopped")
    assert plain.types == ["error"] and plain.events[0].data["code"] == "text_too_long"
    assert "60" in plain.events[0].data["text"]
    # The first sentence was already spoken when the cap was passed; then an error, and the stream still ends.
    assert audio_events(streamed) == ["audio-start", "error", "audio-stop", "synthesize-stopped"]
    assert tts.stats.pieces_synthesized <= 2


async def test_ssml_tags_are_not_read_and_unknown_formats_are_refused(joe: PiperSynthesizer) -> None:
    ssml = '<speak>Hello <break time="300ms"/> there. <emphasis>Really</emphasis> &amp; truly.</speak>'
    async with tts_server(joe) as (server, tts), wyoming_client(server.port) as client:
        await client.write_event(Synthesize(text=ssml, text_format="ssml").event())
        spoken = await read_answer(client, "audio-stop")
        await client.write_event(Synthesize(text="Hello.", text_format="klingon").event())
        refused = await read_answer(client, "error")
    assert spoken.types[0] == "audio-start"
    assert tts.pieces(ssml, "ssml") == ["Hello there.", "Really & truly."]
    assert refused.events[0].data["code"] == "unsupported_text_format"


async def test_chunk_outside_a_stream_is_an_error_and_the_connection_stays(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(SynthesizeChunk(text="stray").event())
        stray = await read_answer(client, "error", timeout=5)
        await client.write_event(SynthesizeStop().event())  # a stray stop is ignored
        await client.write_event(Describe().event())
        after = await read_answer(client, "info", timeout=5)
    assert stray.events[0].data["code"] == "bad_request"
    assert after.types == ["info"]


async def test_app_serves_tts_and_refuses_to_start_with_a_missing_voice(tmp_path: Path) -> None:
    def settings(**tts: object) -> Settings:
        return Settings(
            tts_uri=ListenUri("tcp", "127.0.0.1", 0),
            data_dirs=(tmp_path,),
            local_files_only=True,
            discovery=DiscoverySettings(enabled=False),
            tts=TtsSettings(**tts),  # type: ignore[arg-type]
        )

    app = App(settings())
    await app.start()
    try:
        assert app.engines.tts is not None
        async with wyoming_client(app.port(Service.TTS)) as client:
            await send_stream(client, "Hello from the app.")
            answer = await read_answer(client, "synthesize-stopped")
        assert answer.types[0] == "audio-start"
    finally:
        await app.stop()
    for bad in ({"voice": "xx_XX-missing-low"}, {"speaker": "nobody"}):
        with pytest.raises(MinervaError):
            await App(settings(**bad)).start()


async def test_a_new_stream_ends_one_left_open_and_each_gets_its_stopped(joe: PiperSynthesizer) -> None:
    async with tts_server(joe) as (server, _), wyoming_client(server.port) as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="The first answer.").event())
        await send_stream(client, "The second answer.")  # no synthesize-stop for the first one
        first = await read_answer(client, "synthesize-stopped")
        second = await read_answer(client, "synthesize-stopped")
    assert audio_events(first) == audio_events(second) == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert first.seconds() > 0.5 and second.seconds() > 0.5
