"""CLI flags and MINERVA_* environment variables into one frozen Settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from wyoming_minerva.cli import parse_settings
from wyoming_minerva.settings import ConfigError, ListenUri, Service


def test_no_service_flag_runs_everything_on_standard_ports() -> None:
    settings = parse_settings([], env={})
    assert {s: str(u) for s, u in settings.services.items()} == {
        Service.ASR: "tcp://0.0.0.0:10300",
        Service.TTS: "tcp://0.0.0.0:10200",
        Service.WAKE: "tcp://0.0.0.0:10400",
    }
    assert settings.http is not None and settings.http.port == 10800
    assert settings.asr.models == ("tiny.en", "base") and settings.asr.endpointing
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.debug = True  # type: ignore[misc]


def test_one_service_flag_runs_only_that_service() -> None:
    settings = parse_settings(["--asr-uri", "unix:///tmp/asr.sock"], env={})
    assert settings.services == {Service.ASR: ListenUri("unix", path="/tmp/asr.sock")}
    assert settings.http is None


def test_environment_sets_flags_and_the_command_line_wins() -> None:
    env = {
        "MINERVA_STT_MODEL": "base-int8",
        "MINERVA_ASR_URI": "tcp://127.0.0.1:1234",
        "MINERVA_ENDPOINTING": "false",
        "MINERVA_DEBUG": "1",
        "MINERVA_DATA_DIR": "/a,/b",
        "MINERVA_STT_BEAM_SIZE": "5",
    }
    settings = parse_settings(["--stt-beam-size", "2"], env=env)
    assert settings.asr.models == ("base-int8",) and settings.asr.beam_size == 2
    assert not settings.asr.endpointing and settings.debug
    assert settings.data_dirs == (Path("/a"), Path("/b"))
    assert str(settings.asr_uri) == "tcp://127.0.0.1:1234"


def test_stdio_needs_exactly_one_service() -> None:
    assert parse_settings(["--asr-uri", "stdio://"], env={}).asr_uri == ListenUri("stdio")
    with pytest.raises(ConfigError, match="stdio"):
        parse_settings(["--asr-uri", "stdio://", "--tts-uri", "tcp://0.0.0.0:10200"], env={})


@pytest.mark.parametrize("uri", ["http://x:1", "tcp://nohost", "unix://"])
def test_bad_uris_are_config_errors(uri: str) -> None:
    with pytest.raises(ConfigError):
        parse_settings(["--asr-uri", uri], env={})


def test_bad_boolean_in_environment_is_reported() -> None:
    with pytest.raises(ConfigError, match="MINERVA_DEBUG"):
        parse_settings([], env={"MINERVA_DEBUG": "maybe"})


def test_language_auto_means_detect() -> None:
    assert parse_settings(["--stt-language", "auto"], env={}).asr.language is None
    assert parse_settings(["--stt-language", "de"], env={}).asr.language == "de"
