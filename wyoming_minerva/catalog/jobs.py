"""Install jobs: their state, progress figures, and a feed of snapshots for each watcher.

A job changes from its own task on the event loop; each change bumps `version` and wakes every watcher, which
then reads the newest snapshot: a slow watcher skips intermediate figures, never a phase, the order or the end.
Progress is announced at most every PROGRESS_INTERVAL seconds, phase changes and the end always.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import JobNotFoundError

PROGRESS_INTERVAL = 0.1
KEEP_FINISHED = 64  # finished jobs kept for GET /v1/jobs/{id}


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    QUEUED = "queued"  # waiting for a download slot
    RESOLVING = "resolving"  # asking the source for the files and sizes
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"  # moving the files into the data dir
    FINISHED = "finished"


@dataclass
class Job:
    entry_id: str
    id: str = field(default_factory=lambda: "job_" + secrets.token_hex(8))
    state: JobState = JobState.RUNNING
    phase: Phase = Phase.QUEUED
    bytes: int = 0
    total: int | None = None
    error: str | None = None
    code: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    version: int = 0
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    _fetched: int = 0  # bytes that came over the network in this job (not resumed ones): for the rate
    _fetch_started: float | None = None
    _announced: float = 0.0
    _milestones: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (version, snapshot) per phase
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def percent(self) -> float | None:
        if self.state is JobState.DONE:
            return 100.0
        if not self.total:
            return None
        return round(min(100.0, 100.0 * self.bytes / self.total), 1)

    @property
    def rate(self) -> float:
        """Bytes per second over this job's download so far."""
        if self._fetch_started is None:
            return 0.0
        elapsed = time.monotonic() - self._fetch_started
        return self._fetched / elapsed if elapsed > 0 else 0.0

    @property
    def is_over(self) -> bool:
        return self.state is not JobState.RUNNING

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "catalog.job",
            "entry": self.entry_id,
            "state": self.state.value,
            "phase": self.phase.value,
            "bytes": self.bytes,
            "total": self.total,
            "percent": self.percent,
            "rate": round(self.rate),
            "error": {"code": self.code, "message": self.error} if self.error else None,
            "created": round(self.created, 3),
            "finished": round(self.finished, 3) if self.finished else None,
        }

    # ---- changes (called by the job's task) -----------------------------------------------------

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self._announce()
        self._milestones.append((self.version, self.snapshot()))

    def add_progress(self, delta_bytes: int, fetched: int) -> None:
        if self._fetch_started is None:
            self._fetch_started = time.monotonic()
        self.bytes += delta_bytes
        self._fetched += fetched
        now = time.monotonic()
        if now - self._announced >= PROGRESS_INTERVAL or (self.total and self.bytes >= self.total):
            self._announce()

    def finish(self, state: JobState, code: str | None = None, message: str | None = None) -> None:
        self.state, self.code, self.error = state, code, message
        self.phase = Phase.FINISHED
        self.finished = time.time()
        self._announce()

    def _announce(self) -> None:
        self._announced = time.monotonic()
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # ---- watching -------------------------------------------------------------------------------

    async def updates(self, keepalive: float | None = None) -> AsyncIterator[dict[str, Any] | None]:
        """The current snapshot, then one per change until the job ends; None after `keepalive` s of quiet."""
        seen: int | None = None
        while True:
            changed = self._changed
            if self.version != seen:
                if seen is not None:  # phases passed while this watcher was away, in order
                    for version, milestone in list(self._milestones):
                        if seen < version < self.version:
                            yield milestone
                seen = self.version
                snapshot = self.snapshot()
                yield snapshot
                if snapshot["state"] != JobState.RUNNING.value:
                    return
                continue
            try:
                await asyncio.wait_for(changed.wait(), keepalive)
            except TimeoutError:
                yield None


class JobBoard:
    """Jobs by id; the running one of each entry, so two installs of one id share it."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: dict[str, Job] = {}

    def running(self, entry_id: str) -> Job | None:
        return self._running.get(entry_id)

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._running[job.entry_id] = job
        finished = [j for j in self._jobs.values() if j.is_over]
        for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.pop(old.id, None)

    def ended(self, job: Job) -> None:
        if self._running.get(job.entry_id) is job:
            del self._running[job.entry_id]

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id[:40]!r} (finished jobs are kept for a while only)")
        return job

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def active(self) -> list[Job]:
        return list(self._running.values())
