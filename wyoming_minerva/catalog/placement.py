"""Where installed files go, and moving them there so an engine never sees half a model. Blocking: use a thread.

Downloads land in `<data dir>/.minerva-downloads/<kind>-<name>/` (hidden from every scan). Then:
- a voice's .onnx and then its .onnx.json are renamed into the data dir (a voice exists once its config does);
- a speech-to-text folder is renamed whole to `<data dir>/<name>` (one rename: all or nothing);
- a wake word's .tflite and then its .json go to `<data dir>/wake/`.
Removal goes the other way: configs first, and a folder is renamed away before it is deleted.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from .entries import CatalogEntry, Kind
from .errors import AlreadyInstalledError, InsufficientStorageError
from .installed import STAGING_FOLDER, InstalledModel
from .wake_index import WAKE_FOLDER

PART_SUFFIX = ".part"


def staging_dir(data_dir: Path, entry: CatalogEntry) -> Path:
    return data_dir / STAGING_FOLDER / f"{entry.kind.value}-{entry.name}"


def part_path(stage: Path, file_name: str) -> Path:
    return stage / (file_name + PART_SUFFIX)


def holds_bytes(stage: Path) -> bool:
    try:
        return any(p.stat().st_size > 0 for p in stage.iterdir())
    except OSError:
        return False


def check_space(data_dir: Path, stage: Path, entry: CatalogEntry) -> None:
    """InsufficientStorageError when the data dir cannot hold what is left to download (when sizes are known)."""
    if entry.size is None:
        return
    have = sum(p.stat().st_size for p in stage.glob("*" + PART_SUFFIX)) if stage.is_dir() else 0
    data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_dir).free
    if entry.size - have > free:
        raise InsufficientStorageError(f"{entry.id} needs {entry.size - have} more bytes; {data_dir} has {free} free")


def discard(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)


def place(entry: CatalogEntry, stage: Path, data_dir: Path) -> Path:
    """Move a verified download into place; returns where it is."""
    if entry.kind is Kind.STT:
        target = data_dir / entry.name
        if target.exists():
            raise AlreadyInstalledError(f"{entry.id} is already installed in {data_dir}")
        for remote in entry.files:
            part_path(stage, remote.name).replace(stage / remote.name)
        stage.replace(target)
        return target
    target = data_dir / WAKE_FOLDER if entry.kind is Kind.WAKE else data_dir
    target.mkdir(parents=True, exist_ok=True)
    for remote in entry.files:  # in catalog order: the config last
        part_path(stage, remote.name).replace(target / remote.name)
    discard(stage)
    return target


def remove(model: InstalledModel) -> None:
    if model.kind is Kind.STT:
        folder = model.paths[0]
        trash = folder.parent / STAGING_FOLDER / f"removing-{folder.name}-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        folder.replace(trash)  # gone for every scan at once
        shutil.rmtree(trash, ignore_errors=True)
        return
    for path in sorted(model.paths, key=lambda p: not p.name.endswith(".json")):  # configs first
        path.unlink(missing_ok=True)
