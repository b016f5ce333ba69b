"""Enrolled household voices: name → speaker embeddings, in one JSON file in the first data dir.

Only embeddings are kept, never audio. Every change rewrites the file atomically (a temporary file in the same
folder, flushed, then renamed over the old one), so a crash leaves the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadRequestError
from .engine import l2_normalise

_LOGGER = logging.getLogger(__name__)

FILE_NAME = "speakers.json"
MAX_NAME_LENGTH = 64
MAX_SPEAKERS = 32
MAX_EMBEDDINGS_PER_NAME = 10  # the newest are kept: a voice can be re-enrolled as it changes
_NAME = re.compile(r"^[^\W_][\w .'-]*$")  # starts with a letter or digit; then letters, digits, space, _ . ' -
_RESERVED = re.compile(r"^speaker_(\d+|unknown)$", re.IGNORECASE)  # the labels of unnamed speakers


class InvalidSpeakerNameError(BadRequestError):
    code = "invalid_speaker_name"


class SpeakerStoreFullError(BadRequestError):
    code = "too_many_speakers"


@dataclass(frozen=True)
class EnrolledSpeaker:
    name: str
    embeddings: tuple[tuple[float, ...], ...]
    created: int  # unix seconds
    updated: int
    speech_seconds: float  # speech heard over all enrolment clips

    @property
    def centroid(self) -> np.ndarray:
        return l2_normalise(np.mean(np.asarray(self.embeddings, dtype=np.float32), axis=0))


def validate_name(name: str) -> str:
    """A display name, never a path: letters, digits, spaces and _ . ' - ; at most 64 characters."""
    cleaned = " ".join(name.split())
    if not name.isprintable() or not cleaned or len(cleaned) > MAX_NAME_LENGTH or not _NAME.match(cleaned):
        raise InvalidSpeakerNameError(
            f"speaker name {name!r} is not valid: 1–{MAX_NAME_LENGTH} characters, starting with a letter or digit, "
            "then letters, digits, spaces, _ . ' or -"
        )
    if _RESERVED.match(cleaned):
        raise InvalidSpeakerNameError(f"speaker name {name!r} is reserved for unnamed speakers")
    return cleaned


class SpeakerStore:
    """Thread-safe; each instance reads the file once, so a new instance on the same folder sees saved voices."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME
        self._lock = threading.Lock()
        self._speakers = self._read()

    def names(self) -> list[str]:
        with self._lock:
            return sorted((speaker.name for speaker in self._speakers.values()), key=str.casefold)

    def get(self, name: str) -> EnrolledSpeaker | None:
        with self._lock:
            return self._speakers.get(self._key(name))

    def all(self) -> list[EnrolledSpeaker]:
        with self._lock:
            return [self._speakers[key] for key in sorted(self._speakers, key=str.casefold)]

    def centroids(self) -> dict[str, np.ndarray]:
        """Name → one L2-normalised voice vector: what diarization compares clusters with."""
        with self._lock:
            return {speaker.name: speaker.centroid for speaker in self._speakers.values()}

    def enrol(
        self, name: str, embeddings: list[np.ndarray], speech_seconds: float, replace: bool = False
    ) -> EnrolledSpeaker:
        name = validate_name(name)
        now = int(time.time())
        with self._lock:
            old = self._speakers.get(self._key(name))
            if old is None and len(self._speakers) >= MAX_SPEAKERS:
                raise SpeakerStoreFullError(f"at most {MAX_SPEAKERS} voices can be enrolled; delete one first")
            rows = tuple(tuple(round(float(x), 6) for x in vector) for vector in embeddings)
            if old is not None and not replace:
                rows, speech_seconds, name = old.embeddings + rows, speech_seconds + old.speech_seconds, old.name
            speaker = EnrolledSpeaker(
                name=name,
                embeddings=rows[-MAX_EMBEDDINGS_PER_NAME:],
                created=old.created if old is not None else now,
                updated=now,
                speech_seconds=round(speech_seconds, 2),
            )
            changed = {**self._speakers, self._key(name): speaker}
            self._write(changed)
            self._speakers = changed
            return speaker

    def delete(self, name: str) -> bool:
        with self._lock:
            key = self._key(name)
            if key not in self._speakers:
                return False
            changed = {k: v for k, v in self._speakers.items() if k != key}
            self._write(changed)
            self._speakers = changed
            return True

    @staticmethod
    def _key(name: str) -> str:
        return " ".join(name.split()).casefold()

    def _read(self) -> dict[str, EnrolledSpeaker]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            speakers = {}
            for entry in raw["speakers"]:
                speaker = EnrolledSpeaker(
                    name=str(entry["name"]),
                    embeddings=tuple(tuple(float(x) for x in row) for row in entry["embeddings"]),
                    created=int(entry["created"]),
                    updated=int(entry["updated"]),
                    speech_seconds=float(entry.get("speech_seconds", 0.0)),
                )
                if speaker.embeddings:
                    speakers[self._key(speaker.name)] = speaker
            return speakers
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as err:
            aside = self.path.with_name(f"{FILE_NAME}.unreadable-{int(time.time())}")
            _LOGGER.error("Enrolled voices in %s are unreadable (%s); moved aside to %s", self.path, err, aside.name)
            try:
                self.path.replace(aside)
            except OSError:
                pass
            return {}

    def _write(self, speakers: dict[str, EnrolledSpeaker]) -> None:
        document = {
            "version": 1,
            "speakers": [
                {
                    "name": s.name,
                    "created": s.created,
                    "updated": s.updated,
                    "speech_seconds": s.speech_seconds,
                    "embeddings": [list(row) for row in s.embeddings],
                }
                for s in speakers.values()
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(document, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(self.path)  # os.replace: atomic on one file system
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
