"""The README (and docs/) agree with the command line: every flag is documented, with the default it really has."""

from __future__ import annotations

import re
from pathlib import Path

from wyoming_minerva.cli import build_parser
from wyoming_minerva.settings import default_threads

ROOT = Path(__file__).resolve().parents[1]
# Defaults computed on the machine (or shown in other units) are written in words in the tables.
IN_WORDS = {
    "--workers": "CPU count, at most 4",
    "--stt-cpu-threads": "CPU count, at most 4",
    "--wake-threads": "CPU count, at most 2",
    "--realtime-max-frame-bytes": "1 MiB",
}


def documentation() -> str:
    return (ROOT / "README.md").read_text() + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))


def table_rows(text: str) -> dict[str, str]:
    """The first table row that names each flag (its default is in the row)."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("|"):
            for flag in re.findall(r"`(--[a-z0-9-]+)", line):
                rows.setdefault(flag, line)
    return rows


def test_every_flag_is_documented_with_its_default() -> None:
    text = documentation()
    rows = table_rows(text)
    undocumented, wrong = [], []
    for action in build_parser()._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "version"):
            continue
        flag = longs[0]
        if f"`{flag}" not in text:
            undocumented.append(flag)
            continue
        default = action.default
        row = rows.get(flag, "")
        if flag in IN_WORDS:
            if IN_WORDS[flag] not in row:
                wrong.append((flag, IN_WORDS[flag]))
        elif isinstance(default, int | float) and not isinstance(default, bool) and row and f"{default:g}" not in row:
            wrong.append((flag, default))
    assert undocumented == [], f"flags missing from README.md/docs: {undocumented}"
    assert wrong == [], f"documented defaults that differ from the code: {wrong}"


def test_computed_defaults_are_what_the_words_say() -> None:
    parser = build_parser()
    defaults = {a.option_strings[0]: a.default for a in parser._actions if a.option_strings}
    assert defaults["--workers"] == defaults["--stt-cpu-threads"] == default_threads() <= 4
