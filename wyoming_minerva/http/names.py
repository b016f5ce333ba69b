"""OpenAI model and voice names → the local models (pure functions, no engines)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..settings import ConfigError
from ..untrusted import is_plain_name, looks_like_path

# Clients hard-code these (SDK and pipecat defaults among them); each one means "route by language".
OPENAI_STT_MODELS = (
    "whisper-1",
    "gpt-transcribe",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
)
OPENAI_TTS_MODELS = (
    "tts-1",
    "tts-1-hd",
    "gpt-tts",
    "gpt-4o-mini-tts",
    "gpt-4o-mini-tts-2025-03-20",
    "gpt-4o-mini-tts-2025-12-15",
)
# Names that look like a local faster-whisper model: when none is installed under that name, 404 says so.
_LOCAL_STT_NAME = re.compile(
    r"^(tiny|base|small|medium|large|turbo|distil)([.-].*)?$|^[\w.-]+/[\w.-]+$|faster-whisper", re.IGNORECASE
)
LOCAL_TTS_MODEL = "piper"
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


@dataclass(frozen=True)
class VoiceChoice:
    """What a request's `voice` means locally: voice None = the server's default voice."""

    voice: str | None
    speaker: str | None = None


def parse_voice_map(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """--openai-voice alloy=en_US-lessac-medium or nova=en_US-libritts-high:p3922 → validated pairs."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, target = item.partition("=")
        name, target = name.strip().lower(), target.strip()
        if not sep or not target:
            raise ConfigError(f"--openai-voice {item!r}: expected OPENAI_NAME=VOICE[:SPEAKER]")
        if name not in OPENAI_VOICES:
            raise ConfigError(f"--openai-voice {item!r}: {name!r} is not an OpenAI voice ({', '.join(OPENAI_VOICES)})")
        if looks_like_path(split_voice_target(target).voice or ""):
            raise ConfigError(
                f"--openai-voice {item!r}: name an installed voice (put its files in a --data-dir), not a path"
            )
        pairs[name] = target
    return tuple(sorted(pairs.items()))


def split_voice_target(target: str) -> VoiceChoice:
    """ "VOICE:SPEAKER" → (VOICE, SPEAKER); a path or a plain name has no speaker part."""
    voice, sep, speaker = target.rpartition(":")
    if sep and voice and speaker and "/" not in speaker:
        return VoiceChoice(voice, speaker)
    return VoiceChoice(target)


def choose_voice(requested: str | None, voice_map: Iterable[tuple[str, str]]) -> VoiceChoice:
    """An OpenAI voice name → its configured local voice (default voice when unmapped); anything else
    is a local voice name, matched by the engine."""
    if not requested:
        return VoiceChoice(None)
    mapping = dict(voice_map)
    key = requested.strip().lower()
    if key in OPENAI_VOICES:
        target = mapping.get(key)
        return split_voice_target(target) if target else VoiceChoice(None)
    return VoiceChoice(requested.strip())


class UnknownSttModel(ValueError):
    """A local-looking model name that no configured program has."""


def stt_program_name(requested: str | None, programs: Iterable[str]) -> str | None:
    """The program a request's `model` picks: a configured program by name; None (route by language) for OpenAI's
    names and any other hosted-service name a client sends by default. A local-looking name that is not
    configured (`small-int8`, `org/model`) raises UnknownSttModel: the user meant a model we do not have."""
    if not requested or not requested.strip():
        return None
    name = requested.strip()
    for program in programs:
        if name.lower() == program.lower():
            return program
    if not is_plain_name(name) or _LOCAL_STT_NAME.search(name):  # a path, a hub id, a Whisper size
        raise UnknownSttModel(name)
    if name in OPENAI_STT_MODELS or name.lower().startswith(("whisper", "gpt-")):
        return None
    return None


def is_tts_model(name: str) -> bool:
    """Every TTS model name is served by the configured voices (the `voice` field picks one), so clients with
    hard-coded names (`tts-1`, `gpt-tts`, `kokoro`, …) work; only empty names are refused."""
    return bool(name.strip())
