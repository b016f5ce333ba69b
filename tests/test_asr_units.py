"""Pure ASR pieces: endpointing, hallucination filter, model lookup, audio conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import Speech

from wyoming_minerva.audio import AudioConverter, AudioFormat, convert_pcm, format_from_event, pcm16_to_float
from wyoming_minerva.errors import AudioFormatError, ModelNotFoundError
from wyoming_minerva.stt.bundled import english_model_path as bundled_model_path
from wyoming_minerva.stt.endpointing import EndpointConfig, Endpointer, EndpointEvent
from wyoming_minerva.stt.hallucinations import clean_transcript, is_hallucination
from wyoming_minerva.stt.whisper import is_english_only, repo_id_for, resolve_model

# ---- hallucination filter, both ways -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        " Thanks for watching!",
        "Thank you for watching.",
        "Subtitles by the Amara.org community",
        "ご視聴ありがとうございました",
    ],
)
def test_stock_hallucinations_are_dropped_even_with_speech(text: str) -> None:
    assert is_hallucination(text, heard_speech=True)
    assert clean_transcript(text, heard_speech=True) == ""


@pytest.mark.parametrize("text", [" you", "Thank you.", "Bye."])
def test_short_phrases_are_dropped_only_on_silence(text: str) -> None:
    assert clean_transcript(text, heard_speech=False) == ""
    assert clean_transcript(text, heard_speech=True) == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "Turn on the living room lamp.",
        "Schalte das Licht im Wohnzimmer ein.",
        "リビングの電気をつけて",
        "Включи свет на кухне",
        "打开客厅的灯",
        "أطفئ الأنوار",
        "Thanks for watching the kids tonight, set an alarm for six.",
    ],
)
def test_real_speech_passes_untouched(text: str) -> None:
    assert clean_transcript(f" {text} ", heard_speech=False) == text
    assert not is_hallucination(text, heard_speech=True)


# ---- endpointing -------------------------------------------------------------------------------


def _to16k(speech: Speech, pcm: bytes) -> bytes:
    return convert_pcm(pcm, AudioFormat(speech.rate, 2, 1))


def test_endpointer_marks_start_pause_and_end(speech: Speech) -> None:
    audio = _to16k(speech, speech.silence(0.5) + speech.say("Turn on the lights.") + speech.silence(1.5))
    endpointer = Endpointer(config=EndpointConfig(end_ms=600))
    marks = []
    for i in range(0, len(audio), 2048):
        marks += endpointer.feed(audio[i : i + 2048])
    events = [m.event for m in marks]
    assert events[0] is EndpointEvent.SPEECH_STARTED and events[-1] is EndpointEvent.ENDED
    assert EndpointEvent.PAUSED in events
    end = marks[-1].sample / 16000
    speech_seconds = len(_to16k(speech, speech.say("Turn on the lights."))) / 32000
    assert 0.5 + speech_seconds - 0.4 < end < 0.5 + speech_seconds + 0.2
    assert 0.3 < marks[0].sample / 16000 < 0.8


def test_endpointer_never_ends_on_silence_or_a_click() -> None:
    rng = np.random.default_rng(1)
    click = (rng.normal(0, 0.5, 800) * 32767).astype("<i2").tobytes()  # 50 ms of noise
    endpointer = Endpointer()
    marks = endpointer.feed(bytes(32000) + click + bytes(64000))
    assert EndpointEvent.ENDED not in [m.event for m in marks]


def test_endpointer_resumes_when_speech_continues(speech: Speech) -> None:
    audio = _to16k(speech, speech.say("Turn on") + speech.silence(0.35) + speech.say("the lights.") + speech.silence(1))
    marks = Endpointer(config=EndpointConfig(pause_ms=150, end_ms=600)).feed(audio)
    events = [m.event for m in marks]
    assert EndpointEvent.RESUMED in events
    assert events.count(EndpointEvent.ENDED) == 1 and events[-1] is EndpointEvent.ENDED


# ---- model lookup --------------------------------------------------------------------------------


def test_bundled_model_is_the_offline_default() -> None:
    bundled = bundled_model_path()
    assert bundled is not None
    assert resolve_model("tiny.en", (), local_files_only=True) == bundled


def test_models_in_data_dirs_are_found_by_name_and_folder(tmp_path: Path) -> None:
    bundled = bundled_model_path()
    assert bundled is not None
    local = tmp_path / "faster-whisper-small-int8"
    local.mkdir()
    for name in ("config.json", "model.bin"):
        (local / name).symlink_to(bundled / name)
    assert resolve_model("small-int8", (tmp_path / "empty", tmp_path), local_files_only=True) == local
    assert resolve_model(str(local), (), local_files_only=True) == local
    # A data-dir copy wins over the bundled one.
    shutil.copytree(local, tmp_path / "tiny.en", symlinks=True)
    assert resolve_model("tiny.en", (tmp_path,), local_files_only=True) == tmp_path / "tiny.en"


def test_missing_model_with_local_files_only_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="local-files-only"):
        resolve_model("base-int8", (tmp_path,), local_files_only=True)


def test_download_names_map_to_repositories() -> None:
    assert repo_id_for("base-int8") == "rhasspy/faster-whisper-base-int8"
    assert repo_id_for("small.en") == "Systran/faster-whisper-small.en"
    assert repo_id_for("someone/custom-ct2") == "someone/custom-ct2"
    with pytest.raises(ModelNotFoundError):
        repo_id_for("gigantic")
    assert is_english_only("tiny.en") and is_english_only("base.en-int8") and not is_english_only("small-int8")


# ---- audio conversion ----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_width_and_stereo_converts_to_16k_mono(width: int) -> None:
    rate, seconds = 44100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    ints = (tone * (2 ** (8 * width - 1) - 1)).astype(np.int64)
    if width == 1:
        ints = ints + 128
    frames = np.repeat(ints, 2)  # stereo
    raw = b"".join(int(v).to_bytes(width, "little", signed=width > 1) for v in frames)
    converter = AudioConverter(AudioFormat(rate, width, 2))
    out = b"".join(converter.convert(raw[i : i + 999]) for i in range(0, len(raw), 999)) + converter.flush()
    samples = pcm16_to_float(out)
    assert abs(len(samples) - 16000) <= 32
    assert 0.3 < np.sqrt(np.mean(samples[1000:-1000] ** 2)) < 0.4  # RMS of a 0.5 sine is 0.354


def test_bad_formats_are_refused() -> None:
    with pytest.raises(AudioFormatError):
        format_from_event({"rate": 16000, "width": 5, "channels": 1})
    with pytest.raises(AudioFormatError):
        format_from_event({"rate": "fast", "width": 2, "channels": 1})
    with pytest.raises(AudioFormatError):
        format_from_event({"rate": 16000, "width": 2, "channels": 0})
