"""The catalog as clients see it: what can be installed merged with what is installed (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .entries import CatalogEntry, Kind, RemoteFile
from .installed import InstalledModel
from .jobs import Job
from .usage import ModelUsage


@dataclass(frozen=True)
class SourceStatus:
    kind: Kind
    url: str | None
    ok: bool
    entries: int
    error: str | None = None


@dataclass(frozen=True)
class Listed:
    id: str
    kind: Kind
    name: str
    description: str
    languages: tuple[str, ...]
    quality: str | None
    speakers: int | None
    size: int | None  # bytes to download (None: not known yet)
    files: tuple[RemoteFile, ...]
    available: bool  # in a catalog: can be installed
    installed: bool
    size_on_disk: int | None
    removable: bool
    loaded: bool
    in_use: bool | None
    default: bool
    job: Job | None


def merge(
    entries: Iterable[CatalogEntry],
    installed: Iterable[InstalledModel],
    usage: ModelUsage,
    jobs: Mapping[str, Job],
) -> list[Listed]:
    by_id: dict[str, tuple[CatalogEntry | None, InstalledModel | None]] = {e.id: (e, None) for e in entries}
    for model in installed:
        by_id[model.id] = (by_id.get(model.id, (None, None))[0], model)
    listed = [_listed(entry_id, entry, model, usage, jobs.get(entry_id)) for entry_id, (entry, model) in by_id.items()]
    return sorted(listed, key=lambda item: (item.kind.value, not item.installed, item.name))


def _listed(
    entry_id: str, entry: CatalogEntry | None, model: InstalledModel | None, usage: ModelUsage, job: Job | None
) -> Listed:
    source = entry or CatalogEntry(kind=model.kind if model else Kind.VOICE, name=model.name if model else entry_id)
    return Listed(
        id=entry_id,
        kind=source.kind,
        name=source.name,
        description=source.description,
        languages=source.languages,
        quality=source.quality,
        speakers=source.speakers,
        size=source.size if entry else None,
        files=source.files if entry else (),
        available=entry is not None,
        installed=model is not None,
        size_on_disk=model.size_on_disk if model else None,
        removable=bool(model and model.removable),
        loaded=bool(model and usage.loaded(model)),
        in_use=usage.in_use(model) if model else False,
        default=bool(model and usage.is_default(model)),
        job=job,
    )


def matches(item: Listed, query: str) -> bool:
    """A case-insensitive search over name, description and languages."""
    text = " ".join((item.name, item.description, *item.languages)).lower()
    return all(word in text for word in query.lower().split())
