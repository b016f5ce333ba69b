"""What clients send, made safe to use and to show (pure functions, shared by every front end).

- Names: a client names voices and models; a name is never opened as a path (only the operator's flags give
  paths), and error messages quote a client's name only when it is a plain name, never a path.
- Text to speak: control characters and code points that are not characters (lone surrogates, noncharacters)
  are cleaned before synthesis, so no text a client sends makes synthesis fail.
"""

from __future__ import annotations

import re

MAX_NAME_CHARS = 100
_PLAIN_NAME = re.compile(rf"\w[\w .+@:-]{{0,{MAX_NAME_CHARS - 1}}}")  # no separators, dots first, controls
# C0 controls but tab/newline/carriage return, DEL and C1 controls: read as a word break.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]+")
# Lone surrogates (what broken UTF-16 or surrogateescape leaves) and noncharacters: not text at all.
_NOT_CHARACTERS = re.compile("[\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]+")


def is_plain_name(name: str) -> bool:
    """A name that cannot be a path: letters, digits and ``_ . + @ : -`` (and spaces), not starting with a dot."""
    return _PLAIN_NAME.fullmatch(name) is not None


def looks_like_path(value: str) -> bool:
    """How an operator's setting says "a file" rather than "a name" (--voice /voices/x.onnx)."""
    return "/" in value or "\\" in value or value.startswith("~") or value.endswith(".onnx")


def quote_name(name: str) -> str:
    """`name` quoted for an error message when it is a plain name; a stand-in otherwise (messages never
    echo a path, or control characters, back)."""
    return repr(name) if is_plain_name(name) else "(not a name)"


def clean_text(text: str) -> str:
    """Text with control characters turned into spaces and non-characters removed (both count as nothing to
    say: a text of only those is empty)."""
    return _NOT_CHARACTERS.sub("", _CONTROLS.sub(" ", text))
