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
        "谢谢观看",
        "感谢观看",
        "チャンネル登録お願いします",
        "チャンネル登録をお願いします",
        "시청해 주셔서 감사합니다",
        "구독과 좋아요 부탁드립니다",
        "gracias por ver el video",
        "subtítulos realizados por la comunidad de amara org",
        "sottotitoli creati dalla comunità amara org",
        "sottotitoli a cura di qtss",
        "merci d avoir regardé cette vidéo",
        "legendas pela comunidade amara org",
        "ondertiteling door de amara org gemeenschap",
        "napisy wykonane przez społeczność amara org",
    }
)

# Subtitle credit lines, whole phrase only: the channel or translator name after them varies ("Sous-titrage
# Société Radio-Canada", "Untertitel im Auftrag des ZDF, 2021", "字幕：…", "Субтитры сделал DimaTorzok"). Anchored
# at both ends and short, so a sentence that merely contains the words ("Schalte die Untertitel ein") passes.
_CREDIT_LINES = tuple(
    re.compile(pattern)
    for pattern in (
        r"^untertitel (im auftrag des|der|von|des) [\w ]{1,40}$",
        r"^sous titr(age|es)( \S+){0,6}$",
        r"^字幕( |由|制作|提供).{0,30}$",  # the colon after it is a space once normalised
        r"^(продолжение следует|субтитры (сделал|создавал|подготовил)[\w ]{0,30})$",
        r"^(ご視聴ありがとうございました|ご覧いただきありがとうございます)$",
    )
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
    if phrase in ALWAYS_HALLUCINATED or any(line.match(phrase) for line in _CREDIT_LINES):
        return True
    return not heard_speech and phrase in HALLUCINATED_ON_SILENCE


def clean_transcript(text: str, heard_speech: bool) -> str:
    """The transcript to send: stripped, or empty when it is a known hallucination."""
    text = text.strip()
    return "" if is_hallucination(text, heard_speech) else text
