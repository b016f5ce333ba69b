"""Which speech-to-text program serves a request (pure functions, no models).

A program is one configured model (`--stt-model`, repeatable, in order). Routing:
- a name (Wyoming `transcribe.name` or `select-program`, the HTTP `model`) picks that program;
- else a language picks the first program that has it (`en` → the English model when it comes first, `de` → the
  multilingual one), forced to that language;
- else (no language) the language is detected with the first multilingual program, then routed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ModelNotFoundError

DEFAULT_ENGINE = "faster-whisper"

# Codes clients send that Whisper spells differently.
_LANGUAGE_ALIASES = {"nb": "no", "iw": "he", "jv": "jw", "fil": "tl", "zh-hans": "zh", "zh-hant": "zh"}


@dataclass(frozen=True)
class ProgramSpec:
    """One `--stt-model` value: `NAME` (faster-whisper) or `ENGINE:NAME` for another registered engine."""

    engine: str
    model: str

    @staticmethod
    def parse(value: str) -> ProgramSpec:
        engine, sep, model = value.partition(":")
        if sep and engine and "/" not in engine and model and not model.startswith("//"):
            return ProgramSpec(engine, model)
        return ProgramSpec(DEFAULT_ENGINE, value)

    @property
    def name(self) -> str:
        """What clients see and send: a path the operator gave shows as its folder's name, never the path."""
        shown = self.model.rstrip("/").rsplit("/", 1)[-1] if self.model.startswith(("/", ".", "~")) else self.model
        return shown if self.engine == DEFAULT_ENGINE else f"{self.engine}:{shown}"


@dataclass(frozen=True)
class Program:
    name: str
    engine: str
    model: str
    languages: tuple[str, ...]

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1


@dataclass(frozen=True)
class Route:
    program: Program
    language: str | None  # None: detect it first


def normalise_language(code: str | None) -> str | None:
    """`en-US` → `en`, `zh-Hant` → `zh`, `nb` → `no`; empty or `auto` → None."""
    if code is None:
        return None
    code = code.strip().lower().replace("_", "-")
    if code in ("", "auto"):
        return None
    if code in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[code]
    base = code.split("-", 1)[0]
    return _LANGUAGE_ALIASES.get(base, base)


def find_program(programs: Sequence[Program], name: str) -> Program | None:
    wanted = name.strip().lower()
    for program in programs:
        if wanted in (program.name.lower(), program.model.lower()):
            return program
    return None


def route(programs: Sequence[Program], language: str | None, name: str | None = None) -> Route:
    """The program and the language a request runs with. `programs` is non-empty, the default first."""
    language = normalise_language(language)
    if name:
        program = find_program(programs, name)
        if program is None:
            known = ", ".join(p.name for p in programs)
            raise ModelNotFoundError(f"no speech-to-text program {name!r} (this server has: {known})")
        return Route(program, _language_for(program, language))
    if language is not None:
        for program in programs:
            if language in program.languages:
                return Route(program, language)
    multilingual = next((p for p in programs if p.multilingual), None)
    if multilingual is not None:
        return Route(multilingual, None)  # unknown or unsupported language: detect it
    return Route(programs[0], _language_for(programs[0], language))


def _language_for(program: Program, language: str | None) -> str | None:
    if not program.multilingual:
        return program.languages[0]
    return language if language in program.languages else None


def detector(programs: Sequence[Program]) -> Program | None:
    """The program that detects languages (the first multilingual one), if any."""
    return next((p for p in programs if p.multilingual), None)
