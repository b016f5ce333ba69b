"""ModelManager: single-flight loading, bounded queue, streaming jobs, idle unload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from wyoming_minerva.errors import ModelLoadError, QueueFullError
from wyoming_minerva.runtime.manager import CancelToken, ModelManager


class Model:
    closed = False

    def close(self) -> None:
        self.closed = True


async def test_concurrent_first_requests_load_once() -> None:
    manager = ModelManager(workers=2, queue_size=4)
    loads = 0

    def loader() -> Model:
        nonlocal loads
        loads += 1
        time.sleep(0.2)
        return Model()

    try:
        models = await asyncio.gather(*(manager.get("m", loader) for _ in range(5)))
        assert loads == 1 and manager.load_count("m") == 1
        assert all(m is models[0] for m in models)
    finally:
        await manager.close()


async def test_load_failure_is_a_model_load_error_and_can_be_retried() -> None:
    manager = ModelManager()
    attempts = 0

    def flaky() -> Model:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("disk hiccup")
        return Model()

    try:
        with pytest.raises(ModelLoadError, match="disk hiccup"):
            await manager.get("m", flaky)
        assert isinstance(await manager.get("m", flaky), Model)
    finally:
        await manager.close()


async def test_inference_runs_off_the_event_loop_and_the_queue_is_bounded() -> None:
    manager = ModelManager(workers=1, queue_size=1)
    gate = threading.Event()
    try:
        loop_thread = threading.get_ident()
        first = asyncio.ensure_future(manager.run(lambda: (gate.wait(5), threading.get_ident())[1]))
        second = asyncio.ensure_future(manager.run(lambda: threading.get_ident()))
        await asyncio.sleep(0.05)
        assert manager.queue_depth == 2
        with pytest.raises(QueueFullError):
            await manager.run(lambda: None)
        gate.set()
        assert loop_thread not in (await first, await second)
        await asyncio.sleep(0.05)
        assert manager.queue_depth == 0
    finally:
        gate.set()
        await manager.close()


async def test_iterate_streams_items_and_stops_the_worker_when_the_consumer_leaves() -> None:
    manager = ModelManager(workers=1, queue_size=1)
    produced: list[int] = []

    def produce(token: CancelToken) -> Iterator[int]:
        for i in range(1000):
            if token.cancelled:
                return
            produced.append(i)
            time.sleep(0.01)
            yield i

    try:
        got = []
        async for item in manager.iterate(produce):
            got.append(item)
            if len(got) == 3:
                break
        assert got == [0, 1, 2]
        await asyncio.sleep(0.3)
        settled = len(produced)
        await asyncio.sleep(0.3)
        assert len(produced) == settled < 50, "the worker kept producing after the consumer left"
        assert manager.queue_depth == 0
    finally:
        await manager.close()


async def test_iterate_hands_errors_to_the_consumer() -> None:
    manager = ModelManager()

    def produce(token: CancelToken) -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            async for _ in manager.iterate(produce):
                pass
        assert manager.queue_depth == 0
    finally:
        await manager.close()


async def test_idle_models_are_unloaded_but_not_while_in_use() -> None:
    manager = ModelManager(idle_unload_seconds=0.2)
    await manager.start()
    try:
        async with manager.use("busy", Model) as busy:
            idle = await manager.get("idle", Model)
            await asyncio.sleep(0.6)
            assert idle.closed and not manager.is_loaded("idle")
            assert manager.is_loaded("busy") and not busy.closed
        await asyncio.sleep(0.6)
        assert busy.closed
        # and a later request loads it again
        await manager.get("idle", Model)
        assert manager.load_count("idle") == 2
    finally:
        await manager.close()
