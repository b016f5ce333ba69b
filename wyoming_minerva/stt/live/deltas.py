"""Append-only text deltas from transcripts that may still change.

An interim transcript is a guess that the next one may revise; OpenAI's `...input_audio_transcription.delta`
events can only append. So a word is sent once two guesses in a row agree on it and it is not the last word
of the latest guess (which may be cut off mid-word) — "local agreement". The final sends whatever extends
what was sent. When the final disagrees with words already sent, nothing more is appended: the `.completed`
event always carries the whole final transcript, and clients should prefer it.
"""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _key(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


def _agreeing(a: list[str], b: list[str]) -> int:
    """How many leading words two word lists share (compared without case and punctuation)."""
    count = 0
    for left, right in zip(a, b, strict=False):
        if _key(left) != _key(right):
            break
        count += 1
    return count


class DeltaTracker:
    def __init__(self) -> None:
        self.sent: list[str] = []  # words sent so far, as sent
        self._previous: list[str] = []

    @property
    def text(self) -> str:
        return " ".join(self.sent)

    def interim(self, text: str) -> str:
        """The delta to send for a new interim guess ("" when nothing new is stable yet)."""
        words = text.split()
        stable = min(_agreeing(words, self._previous), max(0, len(words) - 1))
        self._previous = words
        return self._extend(words[:stable])

    def final(self, text: str) -> str:
        """The delta that completes the final transcript (as far as it agrees with what was sent)."""
        return self._extend(text.split())

    def _extend(self, words: list[str]) -> str:
        done = len(self.sent)
        if len(words) <= done or _agreeing(words, self.sent) < done:
            return ""
        new = words[done:]
        self.sent += new
        return (" " if done else "") + " ".join(new)
