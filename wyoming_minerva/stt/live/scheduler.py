"""Which live decode runs next on the shared inference executor, and what happens when it is full.

Two kinds of work:
- finals (one per utterance): queued in a bounded FIFO in front of the ModelManager; at most `workers` of them
  sit in the manager at once, so the overflow policy acts here, not in the manager's own queue. When the FIFO is
  full the policy refuses the new final (`reject`) or the oldest waiting one (`drop_oldest`) with queue_full.
  A refused final is reported to its session, never dropped silently.
- opportunistic decodes (interims, and the speculative decode at a pause): started only when a worker is idle
  and no final waits; a refresh that never finds capacity is simply skipped. They are dropped first under load.

The pump runs only while something waits, so an idle server has no task here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...errors import QueueFullError
from ...runtime.manager import ModelManager
from .types import LiveStats, OverflowPolicy

_LOGGER = logging.getLogger(__name__)

POLL_SECONDS = 0.02  # while work waits: how often to look again (other services free workers silently)


@dataclass(eq=False)
class FinalJob:
    """A final decode waiting for a worker: `run` does the work; `refuse` tells its session why it never will."""

    run: Callable[[], Awaitable[None]]
    refuse: Callable[[QueueFullError], None]
    done: bool = field(default=False)  # left the queue (started or refused)
    task: asyncio.Task[None] | None = field(default=None)


class LiveScheduler:
    def __init__(self, manager: ModelManager, queue_size: int, policy: OverflowPolicy, stats: LiveStats) -> None:
        self.manager = manager
        self.queue_size = queue_size
        self.policy = policy
        self.stats = stats
        self._finals: deque[FinalJob] = deque()
        self._wants: OrderedDict[object, Callable[[], None]] = OrderedDict()
        self._running_finals = 0
        self._running_other = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    # ---- finals ------------------------------------------------------------------------------

    def submit(self, job: FinalJob) -> None:
        """Queue a final; when the queue is full the policy refuses one (this one or the oldest waiting)."""
        self._dispatch_finals()  # a free worker takes the waiting ones first: only real waiting counts
        if len(self._finals) >= self.queue_size:
            victim = job if self.policy is OverflowPolicy.REJECT else self._finals.popleft()
            victim.done = True
            victim.refuse(
                QueueFullError(f"live transcription queue is full ({self.queue_size} utterances wait); try later")
            )
            if victim is job:
                return
        self._finals.append(job)
        self._dispatch_finals()
        self._kick()

    def withdraw(self, job: FinalJob) -> None:
        """A session closed: forget its final if it waits, cancel it if it runs."""
        with contextlib.suppress(ValueError):
            self._finals.remove(job)
        self.stats.queued = len(self._finals)
        if job.task is not None:
            job.task.cancel()

    # ---- opportunistic work ------------------------------------------------------------------

    def want(self, key: object, start: Callable[[], None], urgent: bool = False) -> None:
        """Ask for `start()` to be called when a worker is idle; a newer wish for `key` replaces the older."""
        self._wants[key] = start
        self._wants.move_to_end(key, last=not urgent)
        self._kick()

    def unwant(self, key: object) -> bool:
        """Give up a wish that never ran (counted as a skipped interim); False when there was none."""
        if self._wants.pop(key, None) is None:
            return False
        self.stats.interims_skipped += 1
        return True

    def track(self, task: asyncio.Task[None]) -> None:
        """Count an opportunistic decode until it finishes, so the next one waits for a free worker."""
        self._running_other += 1
        task.add_done_callback(self._other_done)

    def _other_done(self, _: asyncio.Task[None]) -> None:
        self._running_other -= 1
        self._kick()

    # ---- the pump ----------------------------------------------------------------------------

    @property
    def _busy(self) -> int:
        # Our jobs may not have reached the manager yet; never count fewer than we started.
        return max(self.manager.queue_depth, self._running_finals + self._running_other)

    def dispatch(self) -> None:
        self._dispatch_finals()
        if self._finals:
            return  # finals first: no interim while one waits
        while self._wants and self._busy < self.manager.workers:
            _, start = self._wants.popitem(last=False)
            start()

    def _dispatch_finals(self) -> None:
        manager = self.manager
        while self._finals and self._running_finals < manager.workers and self._busy < manager.capacity:
            job = self._finals.popleft()
            job.done = True
            self._running_finals += 1
            task = job.task = asyncio.create_task(self._run_final(job), name="live-final")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.stats.queued = len(self._finals)

    async def _run_final(self, job: FinalJob) -> None:
        try:
            await job.run()
        finally:
            self._running_finals -= 1
            self._kick()

    def _kick(self) -> None:
        self._changed.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._loop(), name="live-scheduler")

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            self.dispatch()
            if not self._finals and not self._wants:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), POLL_SECONDS)

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        tasks = [t for t in (pump, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finals.clear()
        self._wants.clear()
