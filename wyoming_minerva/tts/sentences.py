"""Sentence splitting for streaming text-to-speech: speak each sentence the moment it is complete.

Text arrives as token-sized deltas (an LLM answer) or all at once. `SentenceSplitter` turns it into pieces a
voice can say: whole sentences, the first one cut at a clause when it is long (first audio comes sooner), no
piece longer than a bound. Markdown is read as a person would read it aloud: emphasis marks, link targets,
list bullets and headings' hashes vanish, code blocks are skipped. Pure functions and plain state, no I/O.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Abbreviations whose period never ends a sentence in practice (titles before names, "e.g.", ...).
NEVER_FINAL = _words(
    "mr mrs ms dr prof st mt sr jr capt gen lt col sgt rev hon sen rep gov pres vs e.g i.e cf approx ca esp dept"
)
# Abbreviations that may end a sentence: a boundary only when the next word is not lower case.
MAYBE_FINAL = _words("etc inc ltd co corp bros a.m p.m u.s u.k e.u jan feb mar apr jun jul aug sep sept oct nov dec")
# Abbreviations that precede a number ("No. 5", "Vol. 2"): a boundary unless a digit follows.
BEFORE_NUMBER = _words("no nr vol ch sec art pg pp p op tel ext")
# Words before which a long piece with no better boundary may be cut (English).
ENGLISH_PREPOSITIONS = _words(
    "in on at with for to from of by about after before during into over under near without within between through"
)
# Words before which a long first sentence may be cut when it has no clause punctuation (English).
ENGLISH_CONJUNCTIONS = _words("and but or so because which while although though whereas unless until since then")

_TERMINATOR = re.compile(r"(?:\.{2,}|…|[.!?‼⁇⁈⁉]+)[\"'”’»)\]]*")
_CJK_TERMINATOR = re.compile(r"[。！？｡।॥؟۔][\"'”’」』）)\]]*")
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[—–-]\s|[，、；：]")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_SPEAKABLE = re.compile(r"[^\W_]")
_ENDS_WITH_PUNCT = re.compile(r"[.!?…。！？｡।॥؟۔,;:，、；：][\"'”’»」』）)\]]*$")

_FENCE = re.compile(r"^\s*(```|~~~)")
_ORDERED = re.compile(r"^\s*\d{1,9}[.)](\s|$)")
_ORDERED_PREFIX = re.compile(r"^\s*\d{1,9}[.)]?$")
_HEADING = re.compile(r"^\s*#{1,6}(\s|$)")
_RULE = re.compile(r"^\s*([-*_=])(\s*\1){2,}\s*$")

# Inline markdown, applied to a complete piece.
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)(]|\([^)]*\))*\)")
_URL = re.compile(r"\b(?:https?://|www\.)([^\s/?#)]+)[^\s)]*")
_CODE = re.compile(r"`+([^`]*)`+")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_STRIKE = re.compile(r"~~(.+?)~~")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_STRAY_MARKS = re.compile(r"(?:(?<=\s)|^)[*_~`#]+(?=\s|$)|[*`~]{2,}|(?<=\w)\*+(?=\s|$)|(?:^|(?<=\s))\*+(?=\w)")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\U000e0020-\U000e007f]+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:](?:\s|$))")
_LEADING_JOINER = re.compile(r"^(?:[—–,;:，、；：]|-(?=\s))+\s*")


@dataclass(frozen=True)
class SplitterConfig:
    # The first piece decides how soon audio starts: a first sentence longer than `first_piece_chars` is cut
    # at its last clause punctuation so far ("Sure," "Okay, so"), else before a conjunction, and past
    # `first_piece_hard_chars` before a preposition or at a word.
    first_piece_chars: int = 24
    first_min_chars: int = 3
    first_piece_hard_chars: int = 60
    min_clause_chars: int = 12  # elsewhere a clause is cut off only when it is at least this long
    # No piece is longer: synthesis memory grows with the length of a piece (~20 MiB per second of speech).
    max_piece_chars: int = 110
    conjunctions: frozenset[str] = field(default=ENGLISH_CONJUNCTIONS)
    prepositions: frozenset[str] = field(default=ENGLISH_PREPOSITIONS)


DEFAULT_CONFIG = SplitterConfig()


def clean_inline(text: str) -> str:
    """Markdown/HTML inline markup → the words a person would read aloud; whitespace collapsed."""
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    for _ in range(2):  # nested emphasis: ***both***
        text = _STRONG.sub(r"\2", text)
        text = _EMPHASIS.sub(r"\2", text)
    text = _STRIKE.sub(r"\1", text)
    text = _HTML_TAG.sub(" ", text)
    text = _STRAY_MARKS.sub(" ", text)
    text = _EMOJI.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def is_speakable(text: str) -> bool:
    """True when the text has a letter or digit (a piece of only punctuation or symbols says nothing)."""
    return _SPEAKABLE.search(text) is not None


def _is_cjk(char: str) -> bool:
    return "\u3000" <= char <= "\u9fff" or "\uac00" <= char <= "\ud7af" or "\uff00" <= char <= "\uffef"


def finish_piece(text: str, clause: bool = False) -> str:
    """Clean a piece and give it final punctuation, so the voice ends it with the right intonation."""
    text = _LEADING_JOINER.sub("", clean_inline(text))
    if not text or _ENDS_WITH_PUNCT.search(text) or _is_cjk(text[-1]):
        return text
    return text + ("," if clause else ".")


class SentenceSplitter:
    """Incremental splitter: `feed(delta)` returns the pieces that became complete, `finish()` the rest.

    One instance per request. Block-level markdown is decided per line (a line's kind is known after its
    first few characters, so a long line still streams sentence by sentence); inline markup is cleaned
    per piece, when the piece is complete.
    """

    def __init__(self, config: SplitterConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.pieces_out = 0
        self._buf = ""  # raw text not yet assigned to a line
        self._at_line_start = True
        self._line_kind = "plain"
        self._prev_kind = "blank"
        self._in_fence = False
        self._sentence = ""  # raw content of the sentence being built
        self._table_row = ""
        self._out: list[str] = []

    # ---- public ----------------------------------------------------------------------------

    def feed(self, delta: str) -> list[str]:
        self._buf += delta.replace("\r\n", "\n").replace("\r", "\n")
        self._consume(final=False)
        return self._take()

    def finish(self) -> list[str]:
        self._consume(final=True)
        if not self._at_line_start:
            self._end_line()
        self._flush()
        return self._take()

    # ---- lines -----------------------------------------------------------------------------

    def _take(self) -> list[str]:
        out, self._out = self._out, []
        return out

    def _consume(self, final: bool) -> None:
        while self._buf:
            if self._at_line_start:
                kind = _line_kind(self._buf, final)
                if kind is None:
                    return  # the line's kind is not known yet: wait for more text
                self._start_line(kind)
            newline = self._buf.find("\n")
            if newline < 0:
                self._add(self._buf)
                self._buf = ""
                return
            self._add(self._buf[:newline])
            self._buf = self._buf[newline + 1 :]
            self._end_line()

    def _start_line(self, kind: str) -> None:
        self._at_line_start = False
        buf = self._buf
        if self._in_fence:
            if kind == "fence":
                self._in_fence = False
            self._line_kind = "skip"
            return
        if kind == "fence":
            self._flush()
            self._in_fence = True
            self._line_kind = "skip"
            return
        if kind == "plain" and self._prev_kind == "plain":
            self._sentence += " "  # a soft line break inside a paragraph
        else:
            self._flush()  # a new block: the sentence before it ends here
        if kind == "heading":
            buf = buf.lstrip().lstrip("#")
        elif kind == "bullet":
            buf = buf.lstrip()[1:]
        elif kind == "ordered":
            buf = re.sub(r"^\s*\d{1,9}[.)]", "", buf)
        elif kind == "quote":
            buf = buf.lstrip()[1:]
            kind = "plain"
        elif kind in ("rule", "blank"):
            kind = "skip" if kind == "rule" else "blank"
        self._buf = buf
        self._line_kind = kind

    def _add(self, content: str) -> None:
        kind = self._line_kind
        if kind in ("skip", "blank"):
            return
        if kind == "table":
            self._table_row += content  # a row is read when complete: its cells become a list
            return
        self._sentence += content
        self._scan()

    def _end_line(self) -> None:
        self._at_line_start = True
        kind = self._line_kind
        if kind == "table":
            cells = [c.strip() for c in self._table_row.strip().strip("|").split("|")]
            self._table_row = ""
            if not all(re.fullmatch(r":?-*:?", c) for c in cells):  # not the |---|---| separator row
                self._sentence = ", ".join(c for c in cells if c)
        if kind in ("heading", "bullet", "ordered", "table"):
            self._flush()  # each of these is a piece of its own
        self._prev_kind = "blank" if kind in ("skip", "blank") else kind

    # ---- sentences -------------------------------------------------------------------------

    def _emit(self, raw: str, clause: bool = False) -> None:
        piece = finish_piece(raw, clause)
        if piece and is_speakable(piece):
            self._out.append(piece)
            self.pieces_out += 1

    def _emit_sentence(self, raw: str) -> None:
        """A complete sentence: the first one may be cut at a clause, any one at the length bound."""
        raw = raw.strip()
        while True:
            cut = self._cut(raw)
            if cut is None:
                break
            self._emit(raw[:cut], clause=True)
            raw = raw[cut:].lstrip()
        self._emit(raw)

    def _flush(self) -> None:
        if self._sentence.strip():
            self._emit_sentence(self._sentence)
        self._sentence = ""

    def _scan(self) -> None:
        while True:
            end = _find_boundary(self._sentence)
            if end is None:
                break
            self._emit_sentence(self._sentence[:end])
            self._sentence = self._sentence[end:].lstrip()
        while True:  # a sentence still growing may already be long enough to cut
            cut = self._cut(self._sentence)
            if cut is None:
                break
            self._emit(self._sentence[:cut], clause=True)
            self._sentence = self._sentence[cut:].lstrip()

    def _cut(self, text: str) -> int | None:
        """Where to cut `text` (a prefix of a sentence) before its end, or None.

        Decided on the shortest prefix that allows a cut, so the answer is the same whether the text came
        whole or in deltas of any size.
        """
        cfg = self.config
        if self.pieces_out == 0:
            for length in range(cfg.first_piece_chars + 1, len(text) + 1):
                head = text[:length]
                cut = _punctuation_cut(head, cfg.first_min_chars) or _word_before(
                    head, cfg.conjunctions, cfg.min_clause_chars
                )
                if cut is None and length > cfg.first_piece_hard_chars:
                    cut = _phrase_cut(head, cfg.min_clause_chars, cfg.first_piece_hard_chars, cfg.prepositions)
                if cut is not None:
                    return cut
        if len(text) <= cfg.max_piece_chars:  # the bound holds for every piece, the first one too
            return None
        head = text[: cfg.max_piece_chars + 1]
        cut = _punctuation_cut(head, cfg.min_clause_chars) or _word_before(head, cfg.conjunctions, cfg.min_clause_chars)
        if cut is None:
            cut = _phrase_cut(text, cfg.min_clause_chars, cfg.max_piece_chars, cfg.prepositions) or cfg.max_piece_chars
        return cut


def _line_kind(buf: str, final: bool) -> str | None:
    """The markdown kind of the line that starts `buf`, or None while too little of it is known."""
    newline = buf.find("\n")
    line = buf if newline < 0 else buf[:newline]
    complete = newline >= 0 or final
    stripped = line.lstrip()
    if not stripped:
        return "blank" if complete else None
    first = stripped[0]
    if first in "`~":
        if _FENCE.match(line):
            return "fence"
        if len(stripped) < 3 and set(stripped) == {first} and not complete:
            return None
        return "plain"
    if first == "#":
        if _HEADING.match(line):
            return "heading"
        if set(stripped) == {"#"} and not complete:
            return None
        return "plain"
    if first in "-*_=+":
        if _RULE.match(line):
            return "rule" if complete else None
        if first in "-*+" and len(stripped) >= 2 and stripped[1] in " \t":
            if first != "+" and re.fullmatch(r"([-*]\s*)+", stripped) and not complete:
                return None  # "- -" may still become a rule
            return "bullet"
        if re.fullmatch(r"[-*_=+\s]*", stripped) and not complete:
            return None
        return "plain"
    if first.isdigit():
        if _ORDERED.match(line):
            return "ordered"
        if _ORDERED_PREFIX.match(line) and not complete:
            return None
        return "plain"
    if first == ">":
        return "quote"
    if first == "|":
        return "table"
    return "plain"


def _find_boundary(text: str) -> int | None:
    """Index just after the first confirmed sentence end in `text`, or None."""
    for match in _CJK_TERMINATOR.finditer(text):
        cjk_end: int | None = match.end()
        break
    else:
        cjk_end = None
    for match in _TERMINATOR.finditer(text):
        if cjk_end is not None and match.start() > cjk_end:
            break
        end = match.end()
        if end >= len(text):
            break  # "3." may become "3.5": wait for the next character
        if not text[end].isspace():
            continue  # "3.5", "e.g.", "example.com", "…and"
        rest = text[end:].lstrip()
        following = rest[0] if rest else ""
        verdict = _is_sentence_end(text[: match.start()], match.group(), following)
        if verdict is None:
            break  # decided by the next word, which has not arrived yet
        if verdict:
            return end
    return cjk_end


def _is_sentence_end(before: str, terminator: str, following: str) -> bool | None:
    """Whether `terminator` (followed by whitespace) ends a sentence; None when `following` must be known."""
    if "!" in terminator or "?" in terminator:
        # 'He said "Stop!" and left.' goes on; decided by the next word.
        return None if not following else not following.islower()
    if terminator.startswith("..") or terminator.startswith("…"):
        # An ellipsis is a pause unless a new sentence clearly starts.
        return None if not following else (following.isupper() or following.isdigit())
    match = _WORD_BEFORE.search(before)
    word = match.group(1).lower().strip(".") if match else ""
    if not word:
        return True
    if word in NEVER_FINAL:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. R. R. Tolkien"
    if word in BEFORE_NUMBER:
        return None if not following else not following.isdigit()
    if word in MAYBE_FINAL or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):
        return None if not following else not following.islower()
    return True


def _balanced(prefix: str) -> bool:
    """False when a cut here would split inline markup (a link, code span or emphasis) in two."""
    return (
        prefix.count("`") % 2 == 0
        and prefix.count("**") % 2 == 0
        and prefix.count("[") <= prefix.count("]")
        and prefix.count("(") <= prefix.count(")")
    )


def _punctuation_cut(text: str, min_chars: int) -> int | None:
    """The last clause punctuation in `text` with at least `min_chars` before it and some text after."""
    best: int | None = None
    for match in _CLAUSE.finditer(text):
        cut = match.start() if match.group()[0].isspace() else match.end()  # a dash goes with the next piece
        if cut >= min_chars and len(text) - cut >= 6 and _balanced(text[:cut]):
            best = cut
    return best


def _word_before(text: str, words: frozenset[str], min_chars: int, min_after: int | None = None) -> int | None:
    """The last position before one of `words` with at least `min_chars` before it (and `min_after` after)."""
    last = len(text) - (min_chars if min_after is None else min_after)
    best: int | None = None
    for match in re.finditer(r"\s(\w+)(?=\s)", text):
        cut = match.start() + 1
        if match.group(1).lower() in words and min_chars <= cut <= last and _balanced(text[:cut]):
            best = cut
    return best


def _phrase_cut(text: str, min_chars: int, limit: int, prepositions: frozenset[str]) -> int | None:
    """A cut at a word before `limit`: before a preposition when there is one, else at the last space."""
    cut = _word_before(text[: limit + 1], prepositions, min_chars, min_after=1)
    if cut is not None:
        return cut
    space = text.rfind(" ", min_chars, limit)
    while space > 0 and not _balanced(text[:space]):
        space = text.rfind(" ", min_chars, space)
    return space + 1 if space > 0 else None


def split_text(text: str, config: SplitterConfig = DEFAULT_CONFIG) -> list[str]:
    """All pieces of a complete text (the same pieces a stream of its deltas gives)."""
    splitter = SentenceSplitter(config)
    return splitter.feed(text) + splitter.finish()


class SsmlStripper:
    """Streaming SSML → plain text: tags removed (paragraph/sentence tags become line breaks), entities decoded."""

    _BREAK_TAGS = re.compile(r"^</?(?:p|s|speak|paragraph|sentence)\b", re.IGNORECASE)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        self._held = ""
        out: list[str] = []
        pos = 0
        while pos < len(text):
            lt = text.find("<", pos)
            amp = text.find("&", pos)
            nxt = min(i for i in (lt, amp, len(text)) if i >= 0)
            out.append(text[pos:nxt])
            if nxt == len(text):
                break
            if nxt == lt:
                gt = text.find(">", lt)
                if gt < 0:
                    self._held = text[lt:]
                    break
                tag = text[lt : gt + 1]
                out.append("\n" if self._BREAK_TAGS.match(tag) else " " if tag.startswith("<break") else "")
                pos = gt + 1
            else:
                semi = text.find(";", amp, amp + 12)
                if semi < 0:
                    if len(text) - amp < 12 and ";" not in text[amp:]:
                        self._held = text[amp:]
                        break
                    out.append("&")
                    pos = amp + 1
                    continue
                out.append(html.unescape(text[amp : semi + 1]))
                pos = semi + 1
        return "".join(out)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if held.startswith("<") else html.unescape(held)
