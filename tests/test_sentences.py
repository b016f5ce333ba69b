"""Sentence splitting for streaming TTS: pure functions, no models."""

from __future__ import annotations

import pytest

from wyoming_minerva.tts.sentences import (
    SentenceSplitter,
    SplitterConfig,
    SsmlStripper,
    clean_inline,
    finish_piece,
    split_text,
)


def streamed(text: str, step: int) -> list[str]:
    splitter = SentenceSplitter()
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += splitter.feed(text[i : i + step])
    return pieces + splitter.finish()


CASES = {
    "plain sentences": (
        "Hello there. How are you? I'm fine!",
        ["Hello there.", "How are you?", "I'm fine!"],
    ),
    "abbreviations and numbers": (
        "Mr. Jones paid $3.50 for it. Dr. Smith saw 3.5 km, i.e. a lot. The end.",
        ["Mr. Jones paid $3.50 for it.", "Dr. Smith saw 3.5 km, i.e. a lot.", "The end."],
    ),
    "abbreviation that may end a sentence": (
        "I live in the U.S. It is big. We met at 5 p.m. and talked. Apples, pears etc. are fruit.",
        ["I live in the U.S.", "It is big.", "We met at 5 p.m. and talked.", "Apples, pears etc. are fruit."],
    ),
    "number after an abbreviation": (
        "See No. 5 for details. The answer is no. Fine.",
        ["See No. 5 for details.", "The answer is no.", "Fine."],
    ),
    "initials": ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
    "ellipses": (
        "Well... maybe. Let me think… Okay. Wait...",
        ["Well... maybe.", "Let me think…", "Okay.", "Wait..."],
    ),
    "CJK punctuation": ("你好。世界！这是测试？好的", ["你好。", "世界！", "这是测试？", "好的"]),
    "no final punctuation": ("The lights are on", ["The lights are on."]),
    "signs and decimals at line start": (
        "-5 degrees outside. +3 inside. 2024 was a year. 1.5 liters.",
        ["-5 degrees outside.", "+3 inside.", "2024 was a year.", "1.5 liters."],
    ),
    "quotes close the sentence": ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
    "exclamation inside a sentence": (
        'He shouted "Stop!" and left. Why? Because.',
        ['He shouted "Stop!" and left.', "Why?", "Because."],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_split(name: str) -> None:
    text, expected = CASES[name]
    assert split_text(text) == expected


MARKDOWN = """# Today's plan

Here is what I did:
1. Turned on the **kitchen** lights
2. Set the thermostat to *21.5* degrees
- Opened the [garage door](https://example.com/garage)
* Checked `sensor.door`

```python
print("never read aloud")
```

| Room | Temp |
|------|------|
| Kitchen | 21 |

---
That's all for now.
Have a nice
day!
"""


def test_markdown_is_read_as_a_person_would() -> None:
    assert split_text(MARKDOWN) == [
        "Today's plan.",
        "Here is what I did:",
        "Turned on the kitchen lights.",
        "Set the thermostat to 21.5 degrees.",
        "Opened the garage door.",
        "Checked sensor.door.",
        "Room, Temp.",
        "Kitchen, 21.",
        "That's all for now.",
        "Have a nice day!",
    ]


@pytest.mark.parametrize("text", [MARKDOWN, *(text for text, _ in CASES.values())])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 16])
def test_deltas_of_any_size_give_the_same_pieces(text: str, step: int) -> None:
    assert streamed(text, step) == split_text(text)


def test_a_sentence_is_given_out_as_soon_as_it_is_complete() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Turned on the lights") == []
    assert splitter.feed(".") == []  # "." could still become "3.5" or "e.g."
    assert splitter.feed(" ") == ["Turned on the lights."]
    assert splitter.feed("Anything") == []
    assert splitter.feed(" else?") == []
    assert splitter.feed(" Bye") == ["Anything else?"]
    assert splitter.finish() == ["Bye."]


def test_a_long_first_sentence_is_cut_at_a_clause_while_it_streams() -> None:
    splitter = SentenceSplitter()
    text = "Sure, I turned on all of the kitchen lights, and then I set the thermostat to 21 degrees. Next."
    words = text.split(" ")
    first_piece_at = None
    pieces: list[str] = []
    for i, word in enumerate(words):
        pieces += splitter.feed(("" if i == 0 else " ") + word)
        if pieces and first_piece_at is None:
            first_piece_at = i
    pieces += splitter.finish()
    assert pieces == [
        "Sure,",
        "I turned on all of the kitchen lights, and then I set the thermostat to 21 degrees.",
        "Next.",
    ]
    assert first_piece_at is not None and first_piece_at < words.index("kitchen")  # long before the sentence ends


def test_short_first_sentences_and_later_sentences_are_not_cut() -> None:
    text = "Okay, all done now. " + "Then, later on, the second sentence is long but it is not the first one at all."
    assert split_text(text) == [
        "Okay, all done now.",
        "Then, later on, the second sentence is long but it is not the first one at all.",
    ]


def test_first_sentence_without_clause_punctuation_is_cut_before_a_conjunction_or_a_word() -> None:
    text = "I turned on the lights in the kitchen and the hallway because it was getting dark outside."
    assert split_text(text) == [
        "I turned on the lights in the kitchen,",
        "and the hallway because it was getting dark outside.",
    ]
    no_clauses = "The weather in Amsterdam today will be mostly cloudy with a chance of light rain later."
    assert split_text(no_clauses) == [
        "The weather in Amsterdam today will be mostly cloudy,",  # cut before a preposition, not mid-phrase
        "with a chance of light rain later.",
    ]
    run_on = "word " * 40
    pieces = split_text(run_on)
    assert len(pieces[0]) <= 61 and all(len(p) <= 111 for p in pieces)


def test_no_piece_is_longer_than_the_bound() -> None:
    config = SplitterConfig(max_piece_chars=80)
    text = "This sentence goes on " + "and on " * 60 + "until it ends."
    pieces = split_text(text, config)
    assert all(len(p) <= 82 for p in pieces)  # + the comma that closes a cut clause
    assert " ".join(p.rstrip(",") for p in pieces).split() == text.split()


def test_a_first_sentence_without_spaces_or_clauses_is_bounded_too() -> None:
    text = "这是一个没有任何标点符号的很长的句子" * 10 + "。"
    pieces = split_text(text)
    assert len(pieces) > 1 and all(len(p) <= 111 for p in pieces)
    assert "".join(p.rstrip(",") for p in pieces) == text


def test_cuts_never_split_a_link_or_code_span() -> None:
    text = "Please read [the long and detailed installation guide, part two](https://x.org/a) before you start."
    pieces = split_text(text)
    assert "the long and detailed installation guide, part two" in " ".join(pieces)
    assert all("](" not in p and "https" not in p for p in pieces)


def test_clean_inline() -> None:
    assert clean_inline("**Bold**, __strong__, *it*, _em_, ~~old~~ and `x_y`") == "Bold, strong, it, em, old and x_y"
    assert clean_inline("snake_case_name stays") == "snake_case_name stays"
    assert clean_inline("Visit https://www.home-assistant.io/docs/ today 🎉!") == "Visit www.home-assistant.io today!"
    assert clean_inline("![a cat](cat.png) <b>bold</b> 3 > 2") == "a cat bold 3 > 2"
    assert finish_piece("— and then it rained") == "and then it rained."
    assert finish_piece("**Note: an unclosed marker") == "Note: an unclosed marker."


def test_nothing_speakable_gives_no_pieces() -> None:
    assert split_text("```\nonly code\n```") == []
    assert split_text("  \n\n ") == []
    assert split_text("*** --- 🎉") == []


def test_ssml_tags_are_stripped_even_across_deltas() -> None:
    ssml = '<speak><p>Hello <break time="1s"/>world.</p><s>Tom &amp; Jerry &lt;3</s></speak>'
    stripper = SsmlStripper()
    text = "".join(stripper.feed(ssml[i : i + 3]) for i in range(0, len(ssml), 3)) + stripper.finish()
    assert split_text(text) == ["Hello world.", "Tom & Jerry <3."]
