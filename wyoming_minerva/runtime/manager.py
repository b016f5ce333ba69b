"""ModelManager: load each model once (single-flight), run inference on one bounded executor, unload when idle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import MinervaError, ModelLoadError, QueueFullError

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_END = object()


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    model: Any = None
    loaded: bool = False
    users: int = 0
    last_used: float = 0.0
    load_count: int = 0
    load_seconds: float = 0.0


@dataclass(frozen=True)
class ManagerStats:
    loaded: tuple[str, ...]
    load_counts: dict[str, int]
    queue_depth: int
    capacity: int
    workers: int


class CancelToken:
    """Set by the event loop when nobody waits for a streaming job any more; checked between items."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class ModelManager:
    """Shared by every service and the HTTP API; pass it explicitly, never as a global."""

    def __init__(self, workers: int = 2, queue_size: int = 16, idle_unload_seconds: float = 0.0) -> None:
        self.workers = workers
        self.capacity = workers + queue_size  # jobs running plus jobs waiting
        self.idle_unload_seconds = idle_unload_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minerva-infer")
        self._slots: dict[str, _Slot] = {}
        self._depth = 0
        self._sweeper: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.idle_unload_seconds > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_idle(), name="minerva-idle-unload")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        for key in list(self._slots):
            self._unload(key)

    # ---- models ----------------------------------------------------------------------------

    async def get(self, key: str, loader: Callable[[], T]) -> T:
        """The model for `key`, loading it once however many callers ask at the same time."""
        slot = self._slots.setdefault(key, _Slot())
        slot.last_used = time.monotonic()
        if slot.loaded:
            return slot.model  # type: ignore[no-any-return]
        async with slot.lock:
            if slot.loaded:
                return slot.model
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(loader)  # loading is slow: never on the event loop
            except MinervaError:
                raise
            except Exception as err:
                raise ModelLoadError(f"could not load {key}: {err}") from err
            slot.load_seconds = time.perf_counter() - started
            slot.model, slot.loaded = model, True
            slot.load_count += 1
            slot.last_used = time.monotonic()
            _LOGGER.info("Loaded %s in %.2f s", key, slot.load_seconds)
            return model

    @contextlib.asynccontextmanager
    async def use(self, key: str, loader: Callable[[], T]) -> AsyncIterator[T]:
        """Hold a model while using it: an idle sweep never unloads a model in use."""
        slot = self._slots.setdefault(key, _Slot())
        slot.users += 1
        try:
            yield await self.get(key, loader)
        finally:
            slot.users -= 1
            slot.last_used = time.monotonic()

    def is_loaded(self, key: str) -> bool:
        slot = self._slots.get(key)
        return bool(slot and slot.loaded)

    def load_count(self, key: str) -> int:
        slot = self._slots.get(key)
        return slot.load_count if slot else 0

    def peek(self, key: str) -> Any:
        """The loaded model or None, without loading (for info answered at once)."""
        slot = self._slots.get(key)
        return slot.model if slot and slot.loaded else None

    def unload(self, key: str) -> bool:
        slot = self._slots.get(key)
        if slot is None or not slot.loaded or slot.users > 0:
            return False
        self._unload(key)
        return True

    def _unload(self, key: str) -> None:
        slot = self._slots.get(key)
        if slot is None or not slot.loaded:
            return
        model, slot.model, slot.loaded = slot.model, None, False
        close = getattr(model, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                _LOGGER.exception("Error while closing %s", key)
        _LOGGER.info("Unloaded %s", key)

    async def _sweep_idle(self) -> None:
        interval = max(0.05, min(30.0, self.idle_unload_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for key, slot in list(self._slots.items()):
                if slot.loaded and slot.users == 0 and now - slot.last_used >= self.idle_unload_seconds:
                    self._unload(key)

    # ---- inference -------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._depth

    def stats(self) -> ManagerStats:
        return ManagerStats(
            loaded=tuple(k for k, s in self._slots.items() if s.loaded),
            load_counts={k: s.load_count for k, s in self._slots.items()},
            queue_depth=self._depth,
            capacity=self.capacity,
            workers=self.workers,
        )

    def _submit(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Queue a job, counting it until the worker really finishes (or it is cancelled unstarted)."""
        if self._depth >= self.capacity:
            raise QueueFullError(f"inference queue is full ({self._depth} jobs); try again shortly")
        loop = asyncio.get_running_loop()
        self._depth += 1
        job = self._executor.submit(fn, *args)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return asyncio.wrap_future(job, loop=loop)

    def _release(self) -> None:
        self._depth -= 1

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(*args)` on the inference executor; QueueFullError at once when the queue is full."""
        return await self._submit(fn, *args)

    async def iterate(self, produce: Callable[[CancelToken], Iterator[R]]) -> AsyncIterator[R]:
        """Run a generator on one executor slot and yield its items on the loop as they come.

        When the consumer stops early (break, cancel, disconnect), the token is set so the worker
        stops between items instead of finishing work nobody wants.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        token = CancelToken()

        def work() -> None:
            try:
                for item in produce(token):
                    if token.cancelled:
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as err:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, _Failure(err))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = self._submit(work)
        future.add_done_callback(_ignore_result)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            token.cancel()
            future.cancel()  # only takes effect when the job has not started yet


@dataclass
class _Failure:
    error: BaseException


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
