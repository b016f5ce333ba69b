"""Failover: the same request to each upstream in rotation, in the operator's order, then to the local engine.

The client gets exactly one answer. Any UpstreamError moves the request on to the next backend; an upstream that
leaves the rotation while answering (a failed probe) is abandoned at once. A request still unanswered after the
probe timeout has its upstream probed right away, so a hung upstream costs about two probe timeouts, not the
request timeout. When nothing can serve: the first rejection
(a 4xx about the request itself) if there was one, else ServiceUnavailableError with a Retry-After hint.

Streams (text-to-speech audio): failover only before the first item has been handed to the caller. Once audio has
gone to the client, another backend would restart the sentence in another voice and maybe another format, so a
failure after that point ends the stream with the error (the caller sends its usual error/stop events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from ..errors import BadRequestError
from .errors import ServiceUnavailableError, UpstreamError, UpstreamRejected, UpstreamUnavailable
from .health import Backend, C, Outcome, UpstreamPool

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
X = TypeVar("X")


def went_down(backend: Backend[C]) -> UpstreamUnavailable:
    return UpstreamUnavailable(backend.label, "left the rotation while answering")


async def _attempt(backend: Backend[C], work: Awaitable[T]) -> T:
    """`work`, abandoned (cancelled) when the backend goes down first; slow work makes the backend probed now."""
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(backend.went_down())
    try:
        done, _ = await asyncio.wait(
            {task, watch}, timeout=backend.settings.probe_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            backend.probe_soon()
            done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task in done:
        return task.result()
    raise went_down(backend)


class _Pump(Generic[X]):
    """Drives one upstream stream in its own task (one task owns the connection), items through a small queue."""

    _END = object()

    def __init__(self, backend: Backend[Any], stream: AsyncIterator[X]) -> None:
        self._backend: Backend[Any] = backend
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self._task = asyncio.create_task(self._produce(stream))

    async def _produce(self, stream: AsyncIterator[X]) -> None:
        try:
            async for item in stream:
                await self._queue.put(item)
            await self._queue.put(self._END)
        except Exception as err:
            await self._queue.put(err)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def next(self) -> X:
        """The next item; StopAsyncIteration at the end; the stream's error; went_down() if it went down."""
        item = await _attempt(self._backend, self._queue.get())
        if item is self._END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def _unavailable(pool: UpstreamPool[C], rejection: UpstreamRejected | None) -> Exception:
    if rejection is not None:
        return rejection
    names = ", ".join(b.label for b in pool.backends) or "none"
    local = "" if pool.local_fallback else "; the local engine is off (--no-local-fallback)"
    return ServiceUnavailableError(
        f"no {pool.service} backend can serve now (upstreams: {names}{local})", pool.retry_after()
    )


def _log_failover(pool: UpstreamPool[C], err: UpstreamError) -> None:
    _LOGGER.warning("%s request failed on %s (%s); trying the next backend", pool.service, err.backend, err.reason)


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[X]) -> AsyncIterator[AsyncIterator[X]]:
    """Close an async generator when the caller stops early (not only when it is garbage-collected)."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def _local_outcome(err: BaseException) -> Outcome:
    if isinstance(err, asyncio.CancelledError | GeneratorExit):
        return Outcome.CANCELLED
    return Outcome.REJECTED if isinstance(err, BadRequestError) else Outcome.FAILED


async def run_with_failover(
    pool: UpstreamPool[C], op: Callable[[C], Awaitable[T]], local: Callable[[], Awaitable[T]] | None = None
) -> T:
    """One answer: `op(client)` on each upstream in rotation, then `local()` (when the pool allows it)."""
    rejection: UpstreamRejected | None = None
    for backend in pool.backends:
        if not backend.in_rotation:
            continue
        started = time.perf_counter()
        try:
            result = await _attempt(backend, op(backend.client))
        except UpstreamError as err:
            backend.failed(err)
            _log_failover(pool, err)
            rejection = rejection or (err if isinstance(err, UpstreamRejected) else None)
            continue
        except asyncio.CancelledError:
            backend.cancelled()
            raise
        backend.succeeded(time.perf_counter() - started)
        return result
    if local is None or not pool.local_fallback:
        raise _unavailable(pool, rejection)
    started = time.perf_counter()
    try:
        result = await local()
    except BaseException as err:
        pool.local.record(_local_outcome(err))
        raise
    pool.local.record(Outcome.OK, time.perf_counter() - started)
    return result


async def stream_with_failover(
    pool: UpstreamPool[C],
    open_stream: Callable[[C], AsyncIterator[X]],
    local: Callable[[], AsyncIterator[X]] | None = None,
) -> AsyncIterator[X]:
    """Items of one stream; failover happens only before the first item (see the module docstring).

    Latency recorded: time to the first item. A failure after the first item is raised to the caller.
    """
    rejection: UpstreamRejected | None = None
    for backend in pool.backends:
        if not backend.in_rotation:
            continue
        started = time.perf_counter()
        pump: _Pump[X] = _Pump(backend, open_stream(backend.client))
        try:
            first = await pump.next()
        except StopAsyncIteration:
            first_error: UpstreamError | None = UpstreamUnavailable(backend.label, "answered nothing")
        except UpstreamError as err:
            first_error = err
        except BaseException:
            await pump.close()
            backend.cancelled()
            raise
        else:
            first_error = None
        if first_error is not None:
            await pump.close()
            backend.failed(first_error)
            _log_failover(pool, first_error)
            if isinstance(first_error, UpstreamRejected):
                rejection = rejection or first_error
            continue
        async with _closing(_committed(backend, pump, first, time.perf_counter() - started)) as rest:
            async for item in rest:
                yield item
        return
    if local is None or not pool.local_fallback:
        raise _unavailable(pool, rejection)
    started = time.perf_counter()
    first_at: float | None = None
    try:
        async with _closing(local()) as items:
            async for item in items:
                first_at = time.perf_counter() - started if first_at is None else first_at
                yield item
    except BaseException as err:
        pool.local.record(_local_outcome(err))
        raise
    pool.local.record(Outcome.OK, first_at)


async def _committed(backend: Backend[C], pump: _Pump[X], first: X, latency: float) -> AsyncIterator[X]:
    """The rest of a stream that has started: its outcome is counted when it ends."""
    try:
        yield first
        while True:
            try:
                item = await pump.next()
            except StopAsyncIteration:
                break
            yield item
    except UpstreamError as err:
        backend.failed(err)
        raise
    except BaseException:  # the client went away (GeneratorExit, CancelledError)
        backend.cancelled()
        raise
    finally:
        await pump.close()
    backend.succeeded(latency)
