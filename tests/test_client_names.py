"""Clients name voices and models, never files; and no text a client sends makes synthesis fail.

Every front end (Wyoming, HTTP, the speech WebSocket) asks the same TextToSpeech/SpeechToText, so each rule is
checked once in the engine and once through each front end. Voice files here are stand-ins: the recording loader
says which files the server would have loaded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import local_stt, wyoming_client, wyoming_server
from http_helpers import Engines as HttpEngines
from http_helpers import api
from tts_helpers import joe, read_answer, reuse_bundled  # noqa: F401 - joe is a fixture
from ws_helpers import Engines, connect, receive_json, served
from wyoming.event import async_read_event
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_minerva.handlers.tts import TtsHandler
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.engine import SynthesisOptions, Synthesizer, VoiceInfo
from wyoming_minerva.tts.piper import EmptyTextError, TextToSpeech
from wyoming_minerva.tts.voices import UnknownVoiceError, VoiceFiles, read_voice_config, voice_info

pytestmark = pytest.mark.timeout(120)


def write_voice(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "audio": {"sample_rate": 22050, "quality": "medium"},
        "espeak": {"voice": "en"},
        "language": {"code": "en_US"},
        "num_symbols": 256,
        "num_speakers": 1,
        "speaker_id_map": {},
        "phoneme_id_map": {},
    }
    (folder / f"{name}.onnx.json").write_text(json.dumps(config))
    (folder / f"{name}.onnx").write_bytes(b"onnx")
    return folder / f"{name}.onnx"


class Tone:
    def __init__(self, info: VoiceInfo) -> None:
        self.info = info

    def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        return (np.sin(np.arange(len(text) * 220) / 4) * 8000).astype("<i2").tobytes()


class RecordingLoader:
    """Loads nothing real: remembers every voice file the server asked for."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def __call__(self, files: VoiceFiles) -> Synthesizer:
        self.loaded.append(files.model)
        config = read_voice_config(files.config)
        assert config is not None
        return Tone(voice_info(files.name, config))


@contextmanager
def voice_repository() -> Iterator[tuple[str, list[str]]]:
    """A loopback voice host that answers 404 and remembers what was asked (a download must not be tried)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield url + "/{lang_code}-{voice_name}-{voice_quality}{extension}", asked
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def engine(
    data_dirs: tuple[Path, ...] = (), **kwargs: object
) -> AsyncIterator[tuple[TextToSpeech, RecordingLoader]]:
    manager = ModelManager(workers=1, queue_size=8)
    loader = RecordingLoader()
    options: dict[str, object] = {"local_files_only": True, **kwargs}
    tts = TextToSpeech(TtsSettings(), manager, data_dirs, load_voice=loader, **options)  # type: ignore[arg-type]
    try:
        yield tts, loader
    finally:
        await manager.close()


def elsewhere_voice(tmp_path: Path) -> Path:
    """A complete voice outside every data dir: only an operator's flag may point at it."""
    return write_voice(tmp_path / "elsewhere", "en_US-planted-medium")


# ---- item 7: names, never paths -----------------------------------------------------------------


async def test_a_client_cannot_make_the_engine_load_a_file_by_path(tmp_path: Path) -> None:
    planted = elsewhere_voice(tmp_path)
    data = tmp_path / "data"
    write_voice(data, "en_GB-alba-medium")
    async with engine((data,)) as (tts, loader):
        for requested in (str(planted), str(planted.with_suffix("")), f"{data}/en_GB-alba-medium.onnx", "~/x.onnx"):
            with pytest.raises(UnknownVoiceError) as refused:
                await tts.open(requested)
            assert str(tmp_path) not in str(refused.value) and "/" not in str(refused.value), str(refused.value)
        assert loader.loaded == []
        assert (await tts.open("alba")).voice.name == "en_GB-alba-medium"  # names still work


async def test_the_operator_may_still_give_a_path(tmp_path: Path) -> None:
    planted = elsewhere_voice(tmp_path)
    manager = ModelManager(workers=1, queue_size=8)
    loader = RecordingLoader()
    tts = TextToSpeech(TtsSettings(voice=str(planted)), manager, (), True, load_voice=loader)
    try:
        assert (await tts.open()).voice.name == "en_US-planted-medium"
        assert (await tts.open("planted")).voice.name == "en_US-planted-medium"  # by its name, once installed
        assert loader.loaded == [planted]
    finally:
        await manager.close()


async def test_download_names_that_are_paths_are_never_fetched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with voice_repository() as (url, asked):
        async with engine((data,), local_files_only=False, voice_url_format=url) as (tts, loader):
            for requested in ("en_US-x-medium/../../../evil", "../en_US-lessac-medium", "en_US-a/b-medium"):
                with pytest.raises(UnknownVoiceError) as refused:
                    await tts.open(requested)
                assert "/" not in str(refused.value), str(refused.value)
            assert asked == [] and loader.loaded == []
            with pytest.raises(UnknownVoiceError):  # a real name is tried (and 404s here)
                await tts.open("en_US-lessac-medium")
            assert len(asked) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data"]


async def test_every_front_end_refuses_paths_without_echoing_them(tmp_path: Path) -> None:
    planted = str(elsewhere_voice(tmp_path))
    async with engine() as (tts, loader):
        manager = tts.manager
        stt = local_stt(manager)
        async with api(HttpEngines(stt=stt, tts=tts), manager) as client:
            answer = await client.raw.post("/v1/audio/speech", json={"input": "Hello.", "voice": planted})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "voice_not_found"
            assert str(tmp_path) not in answer.text
            answer = await client.raw.post("/v1/audio/speech", json={"input": "Hello.", "model": planted})
            assert answer.status_code == 404 and str(tmp_path) not in answer.text
            answer = await client.raw.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")}, data={"model": planted}
            )
            assert answer.status_code == 404 and str(tmp_path) not in answer.text
        async with served(Engines(tts=tts), manager) as srv, connect(srv.url("/v1/audio/speech/stream")) as ws:
            await ws.send(json.dumps({"type": "speak", "text": "Hello.", "voice": planted}))
            error = await receive_json(ws)
            assert error["type"] == "error" and error["code"] == "voice_not_found"
            assert str(tmp_path) not in error["message"]
        async with (
            wyoming_server("tts", lambda sink: TtsHandler(sink, tts)) as server,
            wyoming_client(server.port) as client,
        ):
            await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name=planted)).event())
            wyoming_answer = await read_answer(client, "audio-stop")
            assert wyoming_answer.types[-1] == "error"
            assert str(tmp_path) not in str(wyoming_answer.events[-1].data)
        assert loader.loaded == []


# ---- item 8: control characters and invalid code points ----------------------------------------

NASTY = [
    "Turn on\u0000 the lamp.",
    "Turn on the \udcff lamp.",
    "Lamp\x1b[31m on\x7f\x85 now.",
    "Open the\ufffe door\ufdd0.",
]
NOTHING = ["\u0000", "\udcff", "\x00\x01\x02 \ud800"]


async def test_control_characters_and_lone_surrogates_are_cleaned_before_synthesis(joe: Synthesizer) -> None:  # noqa: F811
    manager = ModelManager(workers=1, queue_size=8)
    tts = TextToSpeech(TtsSettings(), manager, (), True, load_voice=reuse_bundled(joe))
    try:
        for text in NASTY:
            pcm, fmt = await tts.synthesize(text)
            assert len(pcm) / 2 / fmt.rate > 0.5, repr(text)
        for text in NOTHING:
            with pytest.raises(EmptyTextError):
                await tts.synthesize(text)
        speech = await tts.open()

        async def deltas() -> AsyncIterator[str]:
            for part in ("Turn on", "\u0000 the", " lamp\udcff", ".\x00"):
                yield part

        streamed = b"".join([pcm async for pcm in speech.stream(deltas())])
        assert len(streamed) / 2 / speech.format.rate > 0.5
        async with api(HttpEngines(stt=None, tts=tts), manager) as client:
            answer = await client.raw.post("/v1/audio/speech", json={"input": NASTY[0], "response_format": "pcm"})
            assert answer.status_code == 200 and len(answer.content) > 24000, answer.text[:200]
            answer = await client.raw.post("/v1/audio/speech", json={"input": "\u0000"})
            assert answer.status_code == 400, answer.text
        async with wyoming_server("tts", lambda sink: TtsHandler(sink, tts)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                for text in NASTY[:2]:  # written by hand: the wyoming client cannot encode a lone surrogate
                    writer.write(json.dumps({"type": "synthesize", "data": {"text": text}}).encode() + b"\n")
                    types: list[str] = []
                    async with asyncio.timeout(30):
                        while not types or types[-1] not in ("audio-stop", "error"):
                            event = await async_read_event(reader)
                            assert event is not None
                            types.append(event.type)
                    assert types[-1] == "audio-stop" and "audio-chunk" in types, (repr(text), types)
            finally:
                writer.close()
    finally:
        await manager.close()


def test_openai_voice_mappings_name_voices_and_never_paths() -> None:
    from wyoming_minerva.http.names import parse_voice_map
    from wyoming_minerva.settings import ConfigError

    assert parse_voice_map(["nova=en_US-lessac-medium:p1"]) == (("nova", "en_US-lessac-medium:p1"),)
    for bad in ("nova=/voices/x.onnx", "nova=~/x.onnx", "alloy=x.onnx:2"):
        with pytest.raises(ConfigError, match="not a path"):
            parse_voice_map([bad])
