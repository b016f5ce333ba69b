"""What is installed: voices, speech-to-text folders and wake words found in the data dirs, and the bundled ones.

Plain file reads (call from a thread). The same lookups the engines use (tts.voices.scan_voices, the folder
names stt.whisper.resolve_model tries, wake.catalog.custom_models), so what is listed here is what they load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..stt.bundled import ENGLISH_MODEL, MULTILINGUAL_FOLDER, MULTILINGUAL_MODEL, english_model_path, multilingual_parts
from ..tts.voices import bundled_voice, scan_voices
from ..wake.catalog import Engine, builtin_models, custom_models
from .entries import Kind
from .wake_index import WAKE_FOLDER

STAGING_FOLDER = ".minerva-downloads"  # hidden: no scan looks inside it
WHISPER_PREFIX = "faster-whisper-"


@dataclass(frozen=True)
class InstalledModel:
    kind: Kind
    name: str  # the catalog name (`small-int8`, `en_US-lessac-medium`, `hey_computer`)
    paths: tuple[Path, ...]  # its files, or its folder (speech-to-text)
    size_on_disk: int
    removable: bool  # False for bundled models (inside a Python package)
    runtime_name: str = ""  # what its engine calls it
    engine: str = ""  # wake words: openwakeword or microwakeword

    @property
    def id(self) -> str:
        return f"{self.kind.value}:{self.name}"


def disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for item in path.rglob("*"):
        with contextlib.suppress(OSError):
            if item.is_file():
                total += item.stat().st_size
    return total


def scan_installed(data_dirs: Iterable[Path]) -> list[InstalledModel]:
    dirs = [Path(d) for d in data_dirs]
    found: dict[str, InstalledModel] = {}
    for model in (*_voices(dirs), *_whisper(dirs), *_wake(dirs)):
        found.setdefault(model.id, model)  # the first data dir wins, as in the engines
    return sorted(found.values(), key=lambda m: (m.kind.value, m.name))


def _voices(dirs: list[Path]) -> Iterator[InstalledModel]:
    for name, files in scan_voices(dirs).items():
        paths = (files.model, files.config)
        yield InstalledModel(Kind.VOICE, name, paths, sum(map(disk_size, paths)), True, name)
    bundled = bundled_voice()
    if bundled is not None:
        paths = (bundled.model, bundled.config)
        yield InstalledModel(Kind.VOICE, bundled.name, paths, sum(map(disk_size, paths)), False, bundled.name)


def whisper_folder_name(folder: Path) -> str:
    return folder.name.removeprefix(WHISPER_PREFIX)


def _whisper(dirs: list[Path]) -> Iterator[InstalledModel]:
    for data_dir in dirs:
        try:
            folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for folder in folders:
            if (folder / "model.bin").is_file() and (folder / "config.json").is_file():
                if folder.name == MULTILINGUAL_FOLDER:  # joined from the bundled parts: made again at need
                    yield InstalledModel(Kind.STT, MULTILINGUAL_MODEL, (folder,), disk_size(folder), False)
                    continue
                name = whisper_folder_name(folder)
                yield InstalledModel(Kind.STT, name, (folder,), disk_size(folder), True, name)
    english = english_model_path()
    if english is not None:
        yield InstalledModel(Kind.STT, ENGLISH_MODEL, (english,), disk_size(english), False, ENGLISH_MODEL)
    parts = multilingual_parts()
    if parts is not None:
        yield InstalledModel(Kind.STT, MULTILINGUAL_MODEL, parts.parts, parts.size, False, MULTILINGUAL_MODEL)


def _wake(dirs: list[Path]) -> Iterator[InstalledModel]:
    for data_dir in dirs:
        folder = data_dir / WAKE_FOLDER
        if not folder.is_dir():
            continue
        for info in custom_models(folder):
            paths: tuple[Path, ...] = (info.model_path,)
            if info.engine is Engine.MICROWAKEWORD:
                paths += tuple(p for p in folder.glob("*.json") if _names_model(p, info.model_path))
            size = sum(map(disk_size, paths))
            yield InstalledModel(Kind.WAKE, info.name, paths, size, True, info.name, info.engine.value)
    for info in builtin_models():
        size = disk_size(info.model_path)
        yield InstalledModel(Kind.WAKE, info.name, (info.model_path,), size, False, info.name, info.engine.value)


def _names_model(config: Path, model: Path) -> bool:
    try:
        return f'"{model.name}"' in config.read_text(encoding="utf-8")
    except OSError:
        return False
