"""Routing between speech-to-text programs, language codes, and the multilingual hallucination filter (pure)."""

from __future__ import annotations

import pytest

from wyoming_minerva.errors import ModelNotFoundError
from wyoming_minerva.stt.endpointing import silence_for_sensitivity
from wyoming_minerva.stt.hallucinations import is_hallucination
from wyoming_minerva.stt.languages import language_name
from wyoming_minerva.stt.programs import Program, ProgramSpec, Route, detector, normalise_language, route

ENGLISH = Program("tiny.en", "faster-whisper", "tiny.en", ("en",))
BASE = Program("base", "faster-whisper", "base", ("en", "de", "fr", "ja", "zh"))
DEFAULT = (ENGLISH, BASE)


def test_a_language_goes_to_the_first_program_that_has_it() -> None:
    assert route(DEFAULT, "en") == Route(ENGLISH, "en")
    assert route(DEFAULT, "en-US") == Route(ENGLISH, "en")
    assert route(DEFAULT, "de-DE") == Route(BASE, "de")
    assert route(DEFAULT, "zh_Hant") == Route(BASE, "zh")
    # The operator's order decides: multilingual first means it serves English too.
    assert route((BASE, ENGLISH), "en") == Route(BASE, "en")


def test_no_language_or_an_unknown_one_is_detected_by_the_multilingual_program() -> None:
    assert route(DEFAULT, None) == Route(BASE, None)
    assert route(DEFAULT, "auto") == Route(BASE, None)
    assert route(DEFAULT, "xx") == Route(BASE, None)
    assert detector(DEFAULT) == BASE and detector((ENGLISH,)) is None
    # With no multilingual program, everything is English.
    assert route((ENGLISH,), None) == Route(ENGLISH, "en")
    assert route((ENGLISH,), "de") == Route(ENGLISH, "en")


def test_a_name_picks_a_program_and_an_unknown_name_is_refused() -> None:
    assert route(DEFAULT, "de", "TINY.EN") == Route(ENGLISH, "en")
    assert route(DEFAULT, "de", "base") == Route(BASE, "de")
    assert route(DEFAULT, "xx", "base") == Route(BASE, None)
    with pytest.raises(ModelNotFoundError, match=r"tiny\.en, base"):
        route(DEFAULT, "en", "small")


def test_language_codes_and_names() -> None:
    assert [normalise_language(c) for c in ("nb", "NB-no", "iw", "fil", " ", None, "pt-BR")] == [
        "no",
        "no",
        "he",
        "tl",
        None,
        None,
        "pt",
    ]
    assert language_name("de") == "german" and language_name("ht") == "haitian creole"
    assert language_name("xx") == "xx"


def test_program_specs() -> None:
    assert ProgramSpec.parse("small-int8") == ProgramSpec("faster-whisper", "small-int8")
    assert ProgramSpec.parse("Systran/faster-whisper-small") == ProgramSpec(
        "faster-whisper", "Systran/faster-whisper-small"
    )
    assert ProgramSpec.parse("fake:base") == ProgramSpec("fake", "base")
    assert ProgramSpec.parse("fake:base").name == "fake:base"
    assert ProgramSpec.parse("/models/x:y").engine == "faster-whisper"  # a path is never an engine name


def test_vad_sensitivity_maps_to_the_endpoint_silence() -> None:
    assert silence_for_sensitivity("relaxed", 400) == 1000
    assert silence_for_sensitivity("aggressive", 400) == 250
    assert silence_for_sensitivity("default", 400) == 400
    assert silence_for_sensitivity(None, 400) == 400 and silence_for_sensitivity(5, 400) == 400
    assert silence_for_sensitivity("relaxed", 1500) == 1500  # never shorter than the operator's choice


@pytest.mark.parametrize(
    "phrase",
    [
        "ご視聴ありがとうございました",
        "Untertitel im Auftrag des ZDF, 2021",
        "Untertitel der Amara.org-Community",
        "Sous-titrage Société Radio-Canada",
        "Sous-titrage ST' 501",
        "字幕由Amara.org社区提供",
        "字幕：李宗盛",
        "Продолжение следует...",
        "Субтитры сделал DimaTorzok",
        "시청해 주셔서 감사합니다.",
        "Gracias por ver el video.",
    ],
)
def test_silence_phrases_of_other_languages_are_dropped(phrase: str) -> None:
    assert is_hallucination(phrase, heard_speech=True)


@pytest.mark.parametrize(
    "sentence",
    [
        "Ich lese die Untertitel im Auftrag des ZDF vor, weil sie fehlen.",
        "Schalte die Untertitel ein.",
        "字幕をオンにしてください",
        "Продолжение следует завтра в восемь часов вечера, не пропустите новую серию.",
        "Les sous-titres de ce film sont trop petits, peux-tu les agrandir ?",
        "ご視聴ありがとうございましたと彼は言った",
        "Gracias por ver el video de la cocina conmigo, mamá.",
    ],
)
def test_real_speech_with_those_words_passes(sentence: str) -> None:
    assert not is_hallucination(sentence, heard_speech=True)
