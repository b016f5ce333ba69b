"""Voice lookup, download and the TextToSpeech facade, with local files and a fake synthesizer (no ONNX)."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from wyoming_minerva.errors import BadRequestError
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.engine import SynthesisOptions, VoiceInfo
from wyoming_minerva.tts.piper import (
    CLAUSE_PAUSE,
    SENTENCE_PAUSE,
    AudioCache,
    EmptyTextError,
    SpeechOptions,
    TextTooLongError,
    TextToSpeech,
    trim_silence,
)
from wyoming_minerva.tts.voices import (
    UnknownSpeakerError,
    UnknownVoiceError,
    VoiceFiles,
    download_voice,
    match_voice,
    scan_voices,
    speaker_id_for,
    voice_for_language,
)

RATE = 22050
SECONDS_PER_CHAR = 0.01


def write_voice(folder: Path, name: str, language: str = "en_US", speakers: dict[str, int] | None = None) -> Path:
    """A voice's two files as Piper lays them out (the .onnx is a stand-in: the fake loader never reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "audio": {"sample_rate": RATE, "quality": "medium"},
        "espeak": {"voice": language.split("_")[0]},
        "language": {"code": language, "name_english": "Test", "country_english": "Land"},
        "num_symbols": 256,
        "num_speakers": len(speakers or {}) or 1,
        "speaker_id_map": speakers or {},
        "phoneme_id_map": {},
        "dataset": name.split("-")[1],
    }
    (folder / f"{name}.onnx.json").write_text(json.dumps(config))
    (folder / f"{name}.onnx").write_bytes(b"onnx")
    return folder / f"{name}.onnx"


class FakeSynth:
    """A Synthesizer that says a tone as long as the text, and remembers what it was asked."""

    def __init__(self, info: VoiceInfo, delay: float = 0.0) -> None:
        self.info = info
        self.delay = delay
        self.calls: list[tuple[str, SynthesisOptions]] = []

    def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        self.calls.append((text, options))
        time.sleep(self.delay)
        t = np.arange(int(len(text) * SECONDS_PER_CHAR * self.info.sample_rate)) / self.info.sample_rate
        return (np.sin(2 * np.pi * 440 * t) * 16000).astype("<i2").tobytes()


class FakeLoader:
    def __init__(self) -> None:
        self.loaded: dict[str, FakeSynth] = {}

    def __call__(self, files: VoiceFiles) -> FakeSynth:
        from wyoming_minerva.tts.voices import read_voice_config, voice_info

        config = read_voice_config(files.config)
        assert config is not None
        synth = self.loaded[files.name] = FakeSynth(voice_info(files.name, config))
        return synth


@asynccontextmanager
async def facade(
    data_dirs: tuple[Path, ...] = (), settings: TtsSettings | None = None, **kwargs: object
) -> AsyncIterator[tuple[TextToSpeech, FakeLoader]]:
    manager = ModelManager(workers=2, queue_size=8)
    loader = FakeLoader()
    options: dict[str, object] = {"local_files_only": True, **kwargs}
    tts = TextToSpeech(settings or TtsSettings(), manager, data_dirs, load_voice=loader, **options)  # type: ignore[arg-type]
    try:
        yield tts, loader
    finally:
        await manager.close()


# ---- lookup ------------------------------------------------------------------------------------


def test_scan_finds_voices_with_configs_in_data_dirs_and_one_folder_down(tmp_path: Path) -> None:
    write_voice(tmp_path / "a", "en_GB-alba-medium")
    write_voice(tmp_path / "a" / "piper", "de_DE-thorsten-low", "de_DE")
    (tmp_path / "a" / "silero_vad.onnx").write_bytes(b"not a voice")
    (tmp_path / "a" / "other.onnx").write_bytes(b"x")
    (tmp_path / "a" / "other.onnx.json").write_text('{"model": "not piper"}')
    write_voice(tmp_path / "b", "en_GB-alba-medium")  # the first data dir wins
    found = scan_voices([tmp_path / "a", tmp_path / "b", tmp_path / "missing"])
    assert sorted(found) == ["de_DE-thorsten-low", "en_GB-alba-medium"]
    assert found["en_GB-alba-medium"].model.parent == tmp_path / "a"


def test_match_voice_exact_aliases_and_short_names() -> None:
    names = ["en_US-joe-medium", "en_US-lessac-medium", "en_US-lessac-high", "de_DE-thorsten-low"]
    assert match_voice("en_US-joe-medium", names) == "en_US-joe-medium"
    assert match_voice("en-us-joe-medium", names) == "en_US-joe-medium"
    assert match_voice("EN_US_JOE_MEDIUM", names) == "en_US-joe-medium"
    assert match_voice("joe", names) == "en_US-joe-medium"
    assert match_voice("en_US-joe", names) == "en_US-joe-medium"
    assert match_voice("thorsten", names) == "de_DE-thorsten-low"
    assert match_voice("lessac", names) is None  # two qualities: ambiguous
    assert match_voice("alloy", names) is None


def test_voice_for_language_prefers_the_default_then_region_then_family() -> None:
    def voice(name: str, code: str) -> VoiceInfo:
        return VoiceInfo(name, (code,), RATE)

    voices = [voice("en_US-joe-medium", "en_US"), voice("en_GB-alba-medium", "en_GB"), voice("de_DE-x-low", "de_DE")]
    assert voice_for_language("en", voices, "en_US-joe-medium") == "en_US-joe-medium"
    assert voice_for_language("en-GB", voices, "en_US-joe-medium") == "en_GB-alba-medium"
    assert voice_for_language("en_AU", voices, "en_US-joe-medium") == "en_US-joe-medium"
    assert voice_for_language("de", voices, "en_US-joe-medium") == "de_DE-x-low"
    assert voice_for_language("fr", voices, "en_US-joe-medium") is None


def test_speaker_by_name_or_id_and_errors_name_the_speakers() -> None:
    many = VoiceInfo("en_US-libritts-high", ("en_US",), RATE, {"p1": 0, "p2": 1, "p3": 2}, num_speakers=3)
    one = VoiceInfo("en_US-joe-medium", ("en_US",), RATE)
    assert speaker_id_for("p2", many) == 1
    assert speaker_id_for("2", many) == 2
    assert speaker_id_for(None, many) is None
    with pytest.raises(UnknownSpeakerError, match="p1, p2, p3"):
        speaker_id_for("p9", many)
    assert speaker_id_for("0", one) is None
    with pytest.raises(UnknownSpeakerError, match="single speaker"):
        speaker_id_for("alice", one)


# ---- download (a local HTTP server stands in for the voice repository) -------------------------


@contextmanager
def voice_repository(root: Path) -> Iterator[str]:
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined, method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield (
            f"http://127.0.0.1:{port}/{{lang_family}}/{{lang_code}}/{{voice_name}}/{{voice_quality}}/"
            "{lang_code}-{voice_name}-{voice_quality}{extension}"
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_is_atomic_and_a_missing_voice_leaves_nothing(tmp_path: Path) -> None:
    write_voice(tmp_path / "repo" / "en" / "en_GB" / "alba" / "medium", "en_GB-alba-medium", "en_GB")
    dest = tmp_path / "data"
    with voice_repository(tmp_path / "repo") as url:
        files = download_voice("en_GB-alba-medium", dest, url)
        with pytest.raises(UnknownVoiceError, match="could not be downloaded"):
            download_voice("en_GB-nobody-low", dest, url)
    assert files.model.read_bytes() == b"onnx" and files.config.is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["en_GB-alba-medium.onnx", "en_GB-alba-medium.onnx.json"]
    with pytest.raises(UnknownVoiceError, match="downloadable name"):
        download_voice("alba", dest, url)


async def test_a_named_voice_is_downloaded_only_when_allowed(tmp_path: Path) -> None:
    write_voice(tmp_path / "repo" / "en" / "en_GB" / "alba" / "medium", "en_GB-alba-medium", "en_GB")
    data = tmp_path / "data"
    data.mkdir()
    with voice_repository(tmp_path / "repo") as url:
        async with facade((data,), voice_url_format=url) as (offline, _):
            with pytest.raises(UnknownVoiceError, match="--local-files-only"):
                await offline.open("en_GB-alba-medium")
            assert not any(data.iterdir())
        async with facade((data,), voice_url_format=url, local_files_only=False) as (online, _):
            speech = await online.open("en_GB-alba-medium")
            assert speech.voice.languages == ("en_GB",)
            assert "en_GB-alba-medium" in [v.name for v in online.voices()]
            assert (data / "en_GB-alba-medium.onnx").is_file()
            # Once there, a second open uses the loaded model: same manager key as a data-dir voice.
            await online.open("alba")
            assert online.manager.load_count(speech.key) == 1


# ---- the facade -------------------------------------------------------------------------------


async def test_voices_list_bundled_and_data_dir_voices_and_several_stay_loaded(tmp_path: Path) -> None:
    write_voice(tmp_path, "en_GB-alba-medium", "en_GB", {"anna": 0, "bob": 1})
    async with facade((tmp_path,)) as (tts, _):
        voices = {v.name: v for v in tts.voices()}
        assert set(voices) == {"en_US-joe-medium", "en_GB-alba-medium"}
        assert voices["en_GB-alba-medium"].speakers == {"anna": 0, "bob": 1}
        us = await tts.open()
        gb = await tts.open(language="en-GB", speaker="bob")
        assert (us.voice.name, gb.voice.name) == ("en_US-joe-medium", "en_GB-alba-medium")
        assert gb.synthesis.speaker_id == 1
        assert tts.manager.is_loaded(us.key) and tts.manager.is_loaded(gb.key)
        with pytest.raises(UnknownSpeakerError, match="anna, bob"):
            await tts.open("alba", speaker="carol")
        with pytest.raises(UnknownVoiceError, match="en_GB-alba-medium, en_US-joe-medium"):
            await tts.open("nobody")


async def test_a_voice_given_as_a_path(tmp_path: Path) -> None:
    model = write_voice(tmp_path / "custom", "my-voice", "nl_NL")
    async with facade(settings=TtsSettings(voice=str(model))) as (tts, _):
        assert tts.default_voice == "my-voice"
        speech = await tts.open()
        assert speech.voice.languages == ("nl_NL",)
        assert (await tts.open("my-voice")).voice.name == "my-voice"  # clients name it
        with pytest.raises(UnknownVoiceError, match="chosen by name"):  # and never give paths
            await tts.open(str(model))
    async with facade(settings=TtsSettings(voice=str(tmp_path / "missing.onnx"))) as (tts, _):
        with pytest.raises(UnknownVoiceError, match=r"--voice file is missing \(it needs the \.onnx"):
            tts.check_defaults()


async def test_default_speaker_applies_to_the_default_voice_only(tmp_path: Path) -> None:
    write_voice(tmp_path, "en_GB-alba-medium", "en_GB", {"anna": 0, "bob": 1})
    write_voice(tmp_path, "en_GB-cori-medium", "en_GB", {"x": 0, "y": 1})
    async with facade((tmp_path,), TtsSettings(voice="en_GB-alba-medium", speaker="bob")) as (tts, _):
        assert (await tts.open()).synthesis.speaker_id == 1
        assert (await tts.open("cori")).synthesis.speaker_id is None


async def test_options_reach_the_engine_and_are_checked() -> None:
    settings = TtsSettings(length_scale=1.2, noise_scale=0.5, volume=0.8)
    async with facade(settings=settings) as (tts, loader):
        speech = await tts.open(options=SpeechOptions(length_scale=0.9, noise_w=0.3))
        _ = [pcm async for pcm in speech.stream("Hello there.")]
        options = loader.loaded["en_US-joe-medium"].calls[0][1]
        assert (options.length_scale, options.noise_scale, options.noise_w, options.volume) == (0.9, 0.5, 0.3, 0.8)
        for bad in (SpeechOptions(length_scale=0), SpeechOptions(volume=-1), SpeechOptions(sample_rate=100)):
            with pytest.raises(BadRequestError):
                await tts.open(options=bad)


async def test_pieces_pauses_and_resampling() -> None:
    async with facade(settings=TtsSettings(sentence_silence=0.5)) as (tts, loader):
        text = "This first sentence is rather long, so it gets cut at its clause. Hi. End."
        speech = await tts.open(options=SpeechOptions(sample_rate=16000))
        chunks = [pcm async for pcm in speech.stream(text)]
    said = [call[0] for call in loader.loaded["en_US-joe-medium"].calls]
    assert said == ["This first sentence is rather long,", "so it gets cut at its clause.", "Hi.", "End."]
    assert speech.format.rate == 16000
    speech_seconds = [len(text) * SECONDS_PER_CHAR for text in said]
    pauses = [0.0, CLAUSE_PAUSE, SENTENCE_PAUSE + 0.5, SENTENCE_PAUSE + 0.5]
    for pcm, spoken, pause in zip(chunks, speech_seconds, pauses, strict=True):
        assert abs(len(pcm) / 2 / 16000 - (spoken + pause)) < 0.02


async def test_streamed_deltas_are_checked_as_they_come() -> None:
    async def deltas(*items: str) -> AsyncIterator[str]:
        for item in items:
            yield item

    async with facade(settings=TtsSettings(max_text_chars=30)) as (tts, _):
        speech = await tts.open()
        pieces = [pcm async for pcm in speech.stream(deltas("One", ". Two", "."))]
        assert len(pieces) == 2
        with pytest.raises(EmptyTextError):
            _ = [pcm async for pcm in speech.stream(deltas(" ", "\n"))]
        spoken: list[bytes] = []
        with pytest.raises(TextTooLongError):
            async for pcm in speech.stream(deltas("Short one. ", "x" * 10, "y" * 20)):
                spoken.append(pcm)
        assert len(spoken) == 1  # what was complete before the cap was passed was spoken
        with pytest.raises(TextTooLongError):
            tts.check_text("z" * 31)


def test_audio_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = AudioCache(max_bytes=40_000)
    cache.put("a", bytes(9_000))
    cache.put("b", bytes(9_000))
    cache.put("c", bytes(9_000))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", bytes(9_000))
    cache.put("e", bytes(9_000))
    assert cache.get("b") is None and cache.get("a") is not None and cache.size_bytes <= 40_000
    cache.put("huge", bytes(10_000))  # over a quarter of the cache with its overhead: not kept
    assert cache.get("huge") is None
    assert AudioCache(0).get("x") is None


def test_audio_cache_counts_what_it_really_holds() -> None:
    """Many small pieces with long keys: the memory the entries really take stays under the limit."""
    limit = 2_000_000
    cache = AudioCache(max_bytes=limit)
    options = SynthesisOptions()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(5_000):
            text = f"Sentence number {number} about the living room lamp, which is on again."
            cache.put(("piper:/voices/en_US-joe-medium.onnx", options, 22050, text), bytes(range(256)) * 4)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) < 5_000  # the limit was reached
    assert cache.size_bytes <= limit
    assert held <= limit  # counting only the PCM length, the entries would hold ~1.5x the limit


def test_trim_silence_keeps_the_speech_and_a_short_margin() -> None:
    tone = (np.sin(np.arange(RATE) / 5) * 10000).astype("<i2").tobytes()  # one second
    padded = bytes(RATE) + tone + bytes(RATE * 2)  # 0.5 s before, 1 s after
    trimmed = trim_silence(padded, RATE)
    assert 1.0 <= len(trimmed) / 2 / RATE <= 1.06
    assert trim_silence(bytes(RATE * 2), RATE) == b""
