"""The catalog's sources: each index fetched from the operator's URL, cached for `refresh_seconds` (a failure for
a few seconds only), and speech-to-text entries resolved to their files on demand.

Speech-to-text names are known without a network (faster-whisper's list); their files and sizes come from the hub.
A listing starts resolving the unresolved ones in the background (a few at a time), so sizes fill in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .entries import CatalogEntry, Kind, parse_entry_id
from .errors import NotInCatalogError, SourceUnreachableError
from .fetch import fetch_json
from .listing import SourceStatus
from .piper_index import voice_entries
from .settings import CatalogSettings
from .wake_index import wake_entries
from .whisper_index import resolved_entry, tree_url, unresolved_entries, whisper_names

ERROR_RETRY_SECONDS = 10.0  # a failed index is asked for again after this long, not on every request
RESOLVE_PARALLEL = 4

Parser = Callable[[Any, str], list[CatalogEntry]]


@dataclass
class Index:
    kind: Kind
    url: str | None
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    error: str | None = None
    fetched: float = field(default_factory=time.monotonic)

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(self.kind, self.url, self.error is None, len(self.entries), self.error)


class Sources:
    def __init__(self, settings: CatalogSettings, client: httpx.AsyncClient, local_files_only: bool) -> None:
        self.settings = settings
        self.client = client
        self.local_files_only = local_files_only
        self._indexes: dict[Kind, Index] = {}
        self._locks = {kind: asyncio.Lock() for kind in Kind}
        self._resolved: dict[str, CatalogEntry] = {}
        self._attempted: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._resolve_slots = asyncio.Semaphore(RESOLVE_PARALLEL)

    def url(self, kind: Kind) -> str | None:
        if kind is Kind.VOICE:
            return self.settings.voices_url
        if kind is Kind.STT:
            return self.settings.whisper_hub_url
        return self.settings.wake_catalog_url

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def index(self, kind: Kind) -> Index:
        cached = self._indexes.get(kind)
        if cached is not None and self._fresh(cached):
            return cached
        async with self._locks[kind]:
            cached = self._indexes.get(kind)
            if cached is None or not self._fresh(cached):
                cached = self._indexes[kind] = await self._fetch(kind)
        return cached

    def _fresh(self, index: Index) -> bool:
        age = time.monotonic() - index.fetched
        return age < (ERROR_RETRY_SECONDS if index.error else self.settings.refresh_seconds)

    async def _fetch(self, kind: Kind) -> Index:
        url = self.url(kind)
        if self.local_files_only:
            return Index(kind, url, error="downloads are off on this server (--local-files-only)")
        if kind is Kind.STT:
            entries = unresolved_entries(whisper_names())
            return Index(kind, url, {e.name: self._resolved.get(e.name, e) for e in entries})
        if url is None:
            return Index(kind, None)  # no source of this kind: only what is installed is listed
        parser: Parser = voice_entries if kind is Kind.VOICE else wake_entries
        try:
            data = await fetch_json(self.client, url, self.settings.max_index_bytes)
            entries = parser(data, url)
        except SourceUnreachableError as err:
            return Index(kind, url, error=str(err))
        except (ValueError, TypeError, AttributeError) as err:
            return Index(kind, url, error=f"{url} is not a {kind.value} index: {err}")
        return Index(kind, url, {e.name: e for e in entries})

    async def entry(self, entry_id: str) -> CatalogEntry:
        """The entry with its files; NotInCatalogError or SourceUnreachableError (saying why) otherwise."""
        kind, name = parse_entry_id(entry_id)
        index = await self.index(kind)
        entry = index.entries.get(name)
        if entry is None:
            if index.error:
                raise SourceUnreachableError(index.error)
            if index.url is None:
                raise NotInCatalogError(f"{entry_id}: this server has no source of {kind.value} models")
            raise NotInCatalogError(f"{entry_id} is not in the catalog at {index.url}")
        return entry if entry.resolved else await self.resolve(entry)

    async def resolve(self, entry: CatalogEntry) -> CatalogEntry:
        """A speech-to-text entry with its files and sizes, asked from the hub once."""
        cached = self._resolved.get(entry.name)
        if cached is not None:
            return cached
        hub = self.settings.whisper_hub_url
        data = await fetch_json(self.client, tree_url(hub, entry.source), self.settings.max_index_bytes)
        try:
            resolved = resolved_entry(entry, data, hub)
        except ValueError as err:
            raise SourceUnreachableError(f"{entry.id}: {err}") from err
        self._resolved[entry.name] = resolved
        index = self._indexes.get(entry.kind)
        if index is not None and entry.name in index.entries:
            index.entries[entry.name] = resolved
        return resolved

    def prefetch(self, index: Index) -> None:
        """Resolve the index's unresolved entries in the background (each once), so listings get sizes."""
        for entry in index.entries.values():
            if entry.resolved or entry.name in self._attempted:
                continue
            self._attempted.add(entry.name)
            task = asyncio.create_task(self._prefetch_one(entry), name=f"catalog-resolve-{entry.name}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _prefetch_one(self, entry: CatalogEntry) -> None:
        async with self._resolve_slots:
            with contextlib.suppress(SourceUnreachableError):
                await self.resolve(entry)
