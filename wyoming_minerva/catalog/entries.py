"""What the catalog lists: entries (a voice, a speech-to-text model, a wake word) and the files each installs.

An entry's id is `KIND:NAME` (`voice:en_US-lessac-medium`, `stt:small-int8`, `wake:hey_computer`). Clients
send ids, never paths or URLs: ids are checked against a strict pattern, and file names that come from an index
(written by someone else) are checked too before they become paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..errors import BadRequestError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]+$")


class Kind(StrEnum):
    VOICE = "voice"
    STT = "stt"
    WAKE = "wake"


class BadEntryIdError(BadRequestError):
    code = "invalid_catalog_id"


@dataclass(frozen=True)
class RemoteFile:
    """One file of an entry: where it is fetched from, the name it gets, and what it must be."""

    name: str  # a plain file name (never a path)
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not is_safe_name(self.name):
            raise ValueError(f"unsafe file name {self.name!r} in a catalog index")
        for digest, length in ((self.md5, 32), (self.sha256, 64)):
            if digest is not None and (len(digest) != length or not _HEX.match(digest)):
                raise ValueError(f"{self.name}: malformed digest {digest!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"{self.name}: negative size")


@dataclass(frozen=True)
class CatalogEntry:
    kind: Kind
    name: str
    description: str = ""
    languages: tuple[str, ...] = ()
    quality: str | None = None
    speakers: int | None = None
    files: tuple[RemoteFile, ...] = ()
    resolved: bool = True  # False: the files (and sizes) are known only after asking the source
    source: str = ""  # where it comes from (an index URL or a repository id), for people
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @property
    def size(self) -> int | None:
        if not self.resolved or any(f.size is None for f in self.files):
            return None
        return sum(f.size or 0 for f in self.files)


def is_safe_name(name: str) -> bool:
    """A file or model name that is one path component of ordinary characters (no `..`, no separators)."""
    return bool(_NAME.match(name)) and ".." not in name and Path(name).name == name


def parse_entry_id(entry_id: str) -> tuple[Kind, str]:
    """`KIND:NAME` → (kind, name); BadEntryIdError for anything else."""
    kind, sep, name = entry_id.partition(":")
    if not sep or kind not in Kind.__members__.values() or not is_safe_name(name):
        raise BadEntryIdError(
            f"{entry_id[:80]!r} is not a catalog id (voice:NAME, stt:NAME or wake:NAME, letters, digits, . _ -)"
        )
    return Kind(kind), name
