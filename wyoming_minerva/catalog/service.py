"""CatalogService: the indexes (fetched from the operator's sources and cached), installs as jobs, removal.

Installs of one id share one job. A new install answers at once when it cannot start (downloads off, no data
dir, source unreachable, unknown id, already installed); after that its progress and end are on the job.
`on_change` hooks run after a model is installed (before the job reports done) or removed, so the engines can
re-scan and the new model is in `describe` and /v1/models when the client hears `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from .. import __version__
from . import placement
from .entries import CatalogEntry, Kind, parse_entry_id
from .errors import (
    AlreadyInstalledError,
    CancelledJobError,
    CatalogError,
    DefaultModelError,
    DownloadsDisabledError,
    IntegrityError,
    InUseError,
    NoDataDirError,
    NotInstalledError,
    NotRemovableError,
)
from .fetch import PartFile, download
from .installed import InstalledModel, scan_installed
from .jobs import Job, JobBoard, JobState, Phase
from .listing import Listed, SourceStatus, matches, merge
from .settings import CatalogSettings
from .sources import Sources
from .usage import ModelUsage

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogChange:
    action: Literal["installed", "removed"]
    kind: Kind
    name: str


ChangeHook = Callable[[CatalogChange], Awaitable[None] | None]


class CatalogService:
    def __init__(
        self,
        settings: CatalogSettings,
        data_dirs: tuple[Path, ...],
        local_files_only: bool,
        usage: ModelUsage,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.data_dirs = data_dirs
        self.local_files_only = local_files_only
        self.usage = usage
        self.on_change: list[ChangeHook] = []
        self.jobs = JobBoard()
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_seconds),
            follow_redirects=True,  # the hub redirects LFS files to its CDN
            headers={"User-Agent": f"wyoming-minerva/{__version__}"},
        )
        self.sources = Sources(settings, self._client, local_files_only)
        self._slots = asyncio.Semaphore(settings.max_parallel_jobs)

    async def aclose(self) -> None:
        """Stop running installs (their partial files stay, to be resumed) and close the HTTP client."""
        tasks = [job.task for job in self.jobs.active() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sources.aclose()
        await self._client.aclose()

    # ---- listing --------------------------------------------------------------------------------

    async def installed(self) -> list[InstalledModel]:
        return await asyncio.to_thread(scan_installed, self.data_dirs)

    async def listing(
        self, kinds: tuple[Kind, ...] = tuple(Kind), installed_only: bool = False, query: str = ""
    ) -> tuple[list[Listed], list[SourceStatus]]:
        indexes = await asyncio.gather(*(self.sources.index(kind) for kind in kinds))
        for index in indexes:
            if index.kind is Kind.STT and index.error is None:
                self.sources.prefetch(index)  # sizes for the next listing
        entries = [entry for index in indexes for entry in index.entries.values()]
        models = [m for m in await self.installed() if m.kind in kinds]
        jobs = {job.entry_id: job for job in self.jobs.active()}
        listed = merge(entries, models, self.usage, jobs)
        listed = [item for item in listed if (item.installed or not installed_only) and matches(item, query)]
        return listed, [index.status for index in indexes]

    async def find_installed(self, entry_id: str) -> InstalledModel | None:
        kind, name = parse_entry_id(entry_id)
        return next((m for m in await self.installed() if m.kind is kind and m.name == name), None)

    # ---- installing -----------------------------------------------------------------------------

    async def install(self, entry_id: str) -> tuple[Job, bool]:
        """(the job, whether this call started it); errors when it cannot start (see the module doc)."""
        parse_entry_id(entry_id)
        job = self.jobs.running(entry_id)
        created = job is None
        if job is None:
            if self.local_files_only:
                raise DownloadsDisabledError("downloads are off on this server (--local-files-only)")
            if not self.data_dirs:
                raise NoDataDirError("this server has no --data-dir to install into")
            job = Job(entry_id, phase=Phase.RESOLVING)
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            started.add_done_callback(lambda f: f.cancelled() or f.exception())  # read here if nobody waits
            self.jobs.add(job)
            job.task = asyncio.create_task(self._run(job, started), name=f"catalog-install-{job.id}")
            await asyncio.shield(started)
        return job, created

    async def _run(self, job: Job, started: asyncio.Future[None]) -> None:
        entry: CatalogEntry | None = None
        stage: Path | None = None
        try:
            entry = await self.sources.entry(job.entry_id)
            if await self.find_installed(entry.id) is not None:
                raise AlreadyInstalledError(f"{entry.id} is installed already")
            job.total = entry.size
            started.set_result(None)
            if self._slots.locked():
                job.set_phase(Phase.QUEUED)
            async with self._slots:
                data_dir = self.data_dirs[0]
                stage = placement.staging_dir(data_dir, entry)
                await asyncio.to_thread(placement.check_space, data_dir, stage, entry)
                job.set_phase(Phase.DOWNLOADING)
                parts = [await self._download(job, entry, stage, index) for index in range(len(entry.files))]
                job.set_phase(Phase.VERIFYING)
                for part in parts:
                    await asyncio.to_thread(part.verify)
                job.set_phase(Phase.INSTALLING)
                where = await asyncio.to_thread(placement.place, entry, stage, data_dir)
            _LOGGER.info("Installed %s in %s (%d bytes)", entry.id, where, job.bytes)
            await self._notify(CatalogChange("installed", entry.kind, entry.name))
            job.finish(JobState.DONE)
        except CatalogError as err:
            self._fail(started, err)
            if stage is not None and (isinstance(err, IntegrityError) or not placement.holds_bytes(stage)):
                await asyncio.to_thread(placement.discard, stage)  # a resumable part stays, a wrong one never
            _LOGGER.warning("Install of %s failed: %s", job.entry_id, err)
            job.finish(JobState.ERROR, err.code, str(err))
        except asyncio.CancelledError:
            self._fail(started, CancelledJobError("the install was cancelled"))
            if job.cancel_requested:
                if stage is not None:
                    await asyncio.to_thread(placement.discard, stage)
                job.finish(JobState.CANCELLED, CancelledJobError.code, "the install was cancelled")
                return
            job.finish(JobState.ERROR, "shutting_down", "the server stopped; installing again resumes the download")
            raise
        except Exception as err:
            _LOGGER.exception("Install of %s failed", job.entry_id)
            self._fail(started, CatalogError(f"internal error: {err}"))
            job.finish(JobState.ERROR, "internal_error", "internal error: see the server log")
        finally:
            self.jobs.ended(job)

    @staticmethod
    def _fail(started: asyncio.Future[None], err: CatalogError) -> None:
        if not started.done():
            started.set_exception(err)

    async def _download(self, job: Job, entry: CatalogEntry, stage: Path, index: int) -> PartFile:
        remote = entry.files[index]
        counted = 0

        def progress(file_bytes: int, fetched: int) -> None:
            nonlocal counted
            job.add_progress(file_bytes - counted, fetched)
            counted = file_bytes

        part = placement.part_path(stage, remote.name)
        settings = self.settings
        return await download(self._client, remote, part, progress, settings.retries, settings.max_file_bytes)

    async def cancel(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job.state is JobState.RUNNING and job.task is not None:
            job.cancel_requested = True
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
        return job

    # ---- removing -------------------------------------------------------------------------------

    async def remove(self, entry_id: str) -> InstalledModel:
        model = await self.find_installed(entry_id)
        if model is None:
            raise NotInstalledError(f"{entry_id} is not installed")
        if not model.removable:
            raise NotRemovableError(f"{entry_id} is bundled with the server and cannot be removed")
        if self.usage.is_default(model):
            raise DefaultModelError(f"{entry_id} is the server's configured default; choose another one first")
        if not self.usage.release(model):
            raise InUseError(f"{entry_id} is in use by a request right now; try again when it is done")
        await asyncio.to_thread(placement.remove, model)
        _LOGGER.info("Removed %s (%d bytes)", entry_id, model.size_on_disk)
        await self._notify(CatalogChange("removed", model.kind, model.name))
        return model

    async def _notify(self, change: CatalogChange) -> None:
        for hook in list(self.on_change):
            try:
                result = hook(change)
                if result is not None:
                    await result
            except Exception:
                _LOGGER.exception("A catalog hook failed for %s %s:%s", change.action, change.kind, change.name)
