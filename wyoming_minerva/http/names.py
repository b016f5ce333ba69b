"""OpenAI model and voice names → the local models (pure functions, no engines)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..settings import ConfigError
from ..untrusted import looks_like_path

# Clients hard-code these; each one means "the configured local model".
OPENAI_STT_MODELS = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
)
OPENAI_TTS_MODELS = (
    "tts-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "gpt-4o-mini-tts-2025-03-20",
    "gpt-4o-mini-tts-2025-12-15",
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


def is_stt_model(name: str, local_model: str) -> bool:
    return name in OPENAI_STT_MODELS or name == local_model or name == "whisper"


def is_tts_model(name: str) -> bool:
    return name in OPENAI_TTS_MODELS or name == LOCAL_TTS_MODEL
