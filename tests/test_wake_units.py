"""Wake word decision logic without models: names and aliases, custom folders, options, triggers, the gate, flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pymicro_wakeword
import pyopen_wakeword
import pytest
import soxr
from conftest import Speech
from test_wake_support import SteadySpeech

from wyoming_minerva.cli import parse_settings
from wyoming_minerva.errors import ModelNotFoundError
from wyoming_minerva.settings import ConfigError, WakeSettings
from wyoming_minerva.wake.catalog import (
    Engine,
    Sensitivity,
    WakeCatalog,
    builtin_models,
    custom_models,
    normalise_name,
    parse_model_options,
    phrase_from_name,
    sensitivity,
)
from wyoming_minerva.wake.trigger import SilenceGate, Trigger

pytestmark = pytest.mark.timeout(60)

OWW_DIR = Path(pyopen_wakeword.__file__).parent / "models"
MICRO_DIR = Path(pymicro_wakeword.__file__).parent / "models"


@pytest.fixture(scope="module")
def catalog() -> WakeCatalog:
    return WakeCatalog.build(builtin_models())


# ---- names ----------------------------------------------------------------------------------------


def test_builtin_names_are_unique_across_engines(catalog: WakeCatalog) -> None:
    assert sorted(catalog.models) == [
        "alexa",
        "alexa_micro",
        "hey_jarvis",
        "hey_jarvis_micro",
        "hey_mycroft",
        "hey_mycroft_micro",
        "hey_rhasspy",
        "okay_nabu",
        "okay_nabu_micro",
    ]
    assert catalog.default == "okay_nabu" and catalog.models["okay_nabu"].engine is Engine.OPENWAKEWORD
    assert catalog.models["okay_nabu_micro"].engine is Engine.MICROWAKEWORD
    assert catalog.models["okay_nabu_micro"].threshold == 0.85  # the cutoff from its JSON
    assert catalog.models["okay_nabu_micro"].sliding_window == 5


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("okay_nabu", "okay_nabu"),
        ("Okay Nabu", "okay_nabu"),
        ("ok_nabu", "okay_nabu"),
        ("ok_nabu_v0.1", "okay_nabu"),
        ("hey-jarvis", "hey_jarvis"),
        ("hey_jarvis_v0.1", "hey_jarvis"),
        ("okay_nabu_micro", "okay_nabu_micro"),
        ("microwakeword:okay_nabu", "okay_nabu_micro"),
        ("OpenWakeWord:Alexa", "alexa"),
    ],
)
def test_lookup_accepts_aliases(catalog: WakeCatalog, asked: str, found: str) -> None:
    assert catalog.lookup(asked).name == found


def test_unknown_names_raise_listing_the_known_ones(catalog: WakeCatalog) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        catalog.resolve(["okay_nabu", "hey_siri", "computer"])
    text = str(caught.value)
    assert "'hey_siri'" in text and "'computer'" in text and "known: alexa, alexa_micro" in text
    assert caught.value.code == "model_not_found"
    with pytest.raises(ModelNotFoundError):
        catalog.lookup("microwakeword:hey_rhasspy")  # no such microWakeWord model


def test_resolve_keeps_the_client_spelling_and_drops_duplicates(catalog: WakeCatalog) -> None:
    resolved = catalog.resolve(["ok_nabu", "okay_nabu", "Hey Jarvis"])
    assert [(label, info.name) for label, info in resolved] == [("ok_nabu", "okay_nabu"), ("Hey Jarvis", "hey_jarvis")]
    assert [(label, info.name) for label, info in catalog.resolve(None)] == [("okay_nabu", "okay_nabu")]
    assert [label for label, _ in catalog.resolve([])] == ["okay_nabu"]


def test_name_helpers() -> None:
    assert normalise_name(" Hey  Jarvis-v0.1 ") == "hey_jarvis"
    assert phrase_from_name("hey_jarvis_v0.1") == "Hey Jarvis"


def test_offered_models_and_default_are_checked() -> None:
    available = builtin_models()
    catalog = WakeCatalog.build(available, offered=("hey_jarvis", "alexa_micro"), default="hey jarvis")
    assert list(catalog.models) == ["alexa_micro", "hey_jarvis"] and catalog.default == "hey_jarvis"
    with pytest.raises(ConfigError, match="--default-wake-model"):
        WakeCatalog.build(available, offered=("hey_jarvis",))  # okay_nabu is not offered
    with pytest.raises(ConfigError, match="--wake-model"):
        WakeCatalog.build(available, offered=("hey_siri",))


# ---- custom folders -----------------------------------------------------------------------------


def test_custom_folder_models_and_shadowing(tmp_path: Path) -> None:
    shutil.copy(OWW_DIR / "alexa.tflite", tmp_path / "my_word.tflite")
    shutil.copy(OWW_DIR / "hey_jarvis.tflite", tmp_path / "alexa.tflite")  # replaces the built-in alexa
    shutil.copy(MICRO_DIR / "hey_mycroft.tflite", tmp_path / "mine.tflite")
    config = json.loads((MICRO_DIR / "hey_mycroft.json").read_text()) | {
        "model": "mine.tflite",
        "wake_word": "Hey Mine",
    }
    (tmp_path / "mine.json").write_text(json.dumps(config))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "melspectrogram.tflite").write_bytes(b"")  # feature models are not wake words
    found = {info.name: info for info in custom_models(tmp_path)}
    assert set(found) == {"my_word", "alexa", "mine_micro"}
    assert found["mine_micro"].phrase == "Hey Mine" and found["mine_micro"].model_path == tmp_path / "mine.tflite"
    catalog = WakeCatalog.discover(WakeSettings(custom_model_dirs=(tmp_path,)))
    assert catalog.models["alexa"].model_path == tmp_path / "alexa.tflite"
    assert not catalog.models["alexa"].builtin and catalog.models["alexa_micro"].builtin
    assert custom_models(tmp_path / "missing") == []


# ---- sensitivity --------------------------------------------------------------------------------


def test_model_options_flag_and_comma_split_env_forms(catalog: WakeCatalog) -> None:
    flag = parse_model_options(["okay_nabu:threshold=0.6,trigger_level=2", "alexa_micro:refractory-seconds=3"], catalog)
    env = parse_model_options(
        ["okay_nabu:threshold=0.6", "trigger_level=2", "alexa_micro:refractory_seconds=3"], catalog
    )
    assert (
        flag == env == {"okay_nabu": {"threshold": 0.6, "trigger_level": 2}, "alexa_micro": {"refractory_seconds": 3.0}}
    )
    assert parse_model_options(["Ok Nabu:threshold=0.7"], catalog) == {"okay_nabu": {"threshold": 0.7}}
    for bad in ["threshold=0.5", "okay_nabu:gain=2", "okay_nabu:threshold=high", "siri:threshold=0.5"]:
        with pytest.raises(ConfigError):
            parse_model_options([bad], catalog)


def test_sensitivity_precedence(catalog: WakeCatalog) -> None:
    settings = WakeSettings(threshold=0.4, trigger_level=2, refractory_seconds=1.5)
    assert sensitivity(catalog.models["okay_nabu"], settings) == Sensitivity(0.4, 2, 1.5)
    assert sensitivity(catalog.models["okay_nabu_micro"], settings).threshold == 0.85  # its own cutoff
    override = sensitivity(catalog.models["okay_nabu_micro"], settings, {"threshold": 0.9, "trigger_level": 1})
    assert override == Sensitivity(0.9, 1, 1.5)
    with pytest.raises(ConfigError):
        sensitivity(catalog.models["alexa"], settings, {"threshold": 1.5})
    with pytest.raises(ConfigError):
        sensitivity(catalog.models["alexa"], settings, {"trigger_level": 0})


# ---- trigger ------------------------------------------------------------------------------------


def test_trigger_level_needs_activations_in_a_row() -> None:
    trigger = Trigger(Sensitivity(threshold=0.5, trigger_level=3, refractory_seconds=0))
    fired = [trigger.update(p, i * 1280) for i, p in enumerate([0.9, 0.9, 0.1, 0.9, 0.6, 0.5, 0.9])]
    assert fired == [False, False, False, False, False, True, False]


def test_refractory_is_audio_time() -> None:
    trigger = Trigger(Sensitivity(threshold=0.5, trigger_level=1, refractory_seconds=2.0))
    assert trigger.update(0.9, 16000)
    assert not trigger.update(0.99, 16000 + 31999)  # 1.99 s of audio later
    assert trigger.update(0.9, 16000 + 32000)


# ---- the silence gate ---------------------------------------------------------------------------


def test_silence_gate_tells_speech_from_silence_and_steady_noise(speech: Speech) -> None:
    steady = SteadySpeech(speech)
    gate = SilenceGate()
    assert not gate.is_loud(np.zeros(1280, np.float32))
    quiet = np.random.default_rng(0).normal(0, 10, 1280).astype(np.float32)  # about -70 dBFS
    assert not gate.is_loud(quiet)
    words = np.frombuffer(steady.say("Okay Nabu."), dtype="<i2").astype(np.float32)
    words = soxr.resample(words, steady.rate, 16000).astype(np.float32)
    chunks = [words[i : i + 1280] for i in range(0, len(words) - 1280, 1280)]
    assert any(gate.is_loud(chunk) for chunk in chunks)
    fan = np.random.default_rng(1).normal(0, 300, 16000 * 3).astype(np.float32)  # about -40 dBFS, steady
    gate = SilenceGate()  # one per stream
    noisy = [gate.is_loud(fan[i : i + 1280]) for i in range(0, len(fan), 1280)]
    assert not any(noisy[5:])  # webrtcvad adapts within the first 100 ms


# ---- flags ----------------------------------------------------------------------------------------


def test_wake_flags_and_environment() -> None:
    settings = parse_settings(
        ["--wake-uri", "tcp://127.0.0.1:0", "--wake-threads", "3", "--no-wake-silence-gate", "--wake-model", "alexa"],
        env={"MINERVA_WAKE_MODEL_OPTION": "okay_nabu:threshold=0.6,trigger_level=2", "MINERVA_REFRACTORY_SECONDS": "3"},
    )
    wake = settings.wake
    assert wake.threads == 3 and wake.silence_gate is False and wake.models == ("alexa",)
    assert wake.model_options == ("okay_nabu:threshold=0.6", "trigger_level=2") and wake.refractory_seconds == 3.0
    assert parse_settings(["--wake-uri", "tcp://127.0.0.1:0"], env={}).wake == WakeSettings()
    with pytest.raises(ConfigError):
        parse_settings(["--wake-uri", "tcp://127.0.0.1:0", "--wake-threads", "-1"], env={})
