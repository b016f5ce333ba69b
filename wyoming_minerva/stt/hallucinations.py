"""Text helpers for speech-to-text: the Whisper hallucination filter.

Whisper trained on subtitles invents a few stock phrases on silence and noise. Two small, explicit lists:
- phrases nobody says to a voice assistant (subtitle credits, "thanks for watching"): always dropped;
- short phrases people do say ("you", "thank you", "bye"): dropped only when the VAD heard no speech.
Anything else, in any language or script, passes untouched.
"""

from __future__ import annotations

import re
import unicodedata

ALWAYS_HALLUCINATED = frozenset(
    {
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and see you next time",
        "thank you so much for watching",
        "please subscribe",
        "please like and subscribe",
        "like and subscribe",
        "subtitles by the amara org community",
        "subtitles by the amaraorg community",
        "untertitel der amara org community",
        "untertitel im auftrag des zdf",
        "sous titres réalisés para la communauté d amara org",
        "sous titrage st 501",
        "ご視聴ありがとうございました",
        "продолжение следует",
        "字幕由amara org社区提供",
        "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目",
    }
)

HALLUCINATED_ON_SILENCE = frozenset(
    {"you", "thank you", "thanks", "bye", "bye bye", "so", "okay", "oh", "uh", "um", "hmm"}
)


def normalise_phrase(text: str) -> str:
    """Lower case, punctuation and symbols turned into spaces, spaces collapsed (letters of every script kept)."""
    cleaned = "".join(
        " " if unicodedata.category(ch)[0] in "PSZ" else ch for ch in unicodedata.normalize("NFKC", text.lower())
    )
    return re.sub(r"\s+", " ", cleaned).strip()


def is_hallucination(text: str, heard_speech: bool) -> bool:
    phrase = normalise_phrase(text)
    if not phrase:
        return False
    if phrase in ALWAYS_HALLUCINATED:
        return True
    return not heard_speech and phrase in HALLUCINATED_ON_SILENCE


def clean_transcript(text: str, heard_speech: bool) -> str:
    """The transcript to send: stripped, or empty when it is a known hallucination."""
    text = text.strip()
    return "" if is_hallucination(text, heard_speech) else text
