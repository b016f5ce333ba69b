"""Transcribed words → speakers → blocks of text (pure): the midpoint rule, breaks at speaker changes and at long
silences, and the text of a block joined the way people write it."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

UNKNOWN = "Speaker_unknown"
BLOCK_SILENCE_SECONDS = 1.5  # a pause longer than this starts a new block even for the same speaker
NO_SPACE_BEFORE = frozenset(".,!?;:…%)]}»、。，！？")


class TimedText(Protocol):
    """A word or a segment from a transcriber (stt.engine's Word and Segment have these fields)."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class SpeakerTurn:
    start: float  # seconds
    end: float
    speaker: str  # the label a client sees: an enrolled name, "Speaker_0", "A", …


@dataclass(frozen=True)
class Block:
    start: float
    end: float
    speaker: str
    text: str


def sequential_label(index: int) -> str:
    return f"Speaker_{index}"


def letter_label(index: int) -> str:
    """OpenAI's labels for unnamed speakers: A … Z, then AA, AB, …"""
    letters = string.ascii_uppercase
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = letters[rest] + label
    return label


def speaker_labels(
    speakers: Sequence[int], names: Mapping[int, str], label: Callable[[int], str] = sequential_label
) -> dict[int, str]:
    """A label per speaker index: its known name, else the next unnamed label in order of appearance."""
    labels: dict[int, str] = {}
    unnamed = 0
    for speaker in dict.fromkeys(speakers):
        if speaker in names:
            labels[speaker] = names[speaker]
        else:
            labels[speaker] = label(unnamed)
            unnamed += 1
    return labels


def speaker_at(start: float, end: float, turns: Sequence[SpeakerTurn]) -> str:
    """The turn holding the midpoint; else the turn overlapping most; else UNKNOWN."""
    middle = (start + end) / 2
    for turn in turns:
        if turn.start <= middle < turn.end:
            return turn.speaker
    best, best_overlap = UNKNOWN, 0.0
    for turn in turns:
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > best_overlap:
            best, best_overlap = turn.speaker, overlap
    return best


def join_tokens(tokens: Sequence[str]) -> str:
    """Tokens stripped and joined with single spaces, with no space before closing punctuation."""
    text = ""
    for token in tokens:
        piece = " ".join(token.split())
        if not piece:
            continue
        text += piece if not text or piece[0] in NO_SPACE_BEFORE else " " + piece
    return text


def speaker_blocks(
    items: Sequence[TimedText], turns: Sequence[SpeakerTurn], max_silence: float = BLOCK_SILENCE_SECONDS
) -> list[Block]:
    """Consecutive items (words, or segments without words) of one speaker form a block; a block also ends
    where the silence between two items is longer than `max_silence`."""
    blocks: list[Block] = []
    tokens: list[str] = []
    speaker, start, end = UNKNOWN, 0.0, 0.0
    for item in items:
        who = speaker_at(item.start, item.end, turns)
        if tokens and (who != speaker or item.start - end > max_silence):
            blocks.append(Block(start, end, speaker, join_tokens(tokens)))
            tokens = []
        if not tokens:
            speaker, start = who, item.start
        tokens.append(item.text)
        end = max(end, item.end) if len(tokens) > 1 else item.end
    if tokens:
        blocks.append(Block(start, end, speaker, join_tokens(tokens)))
    return [block for block in blocks if block.text]
