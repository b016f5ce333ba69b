"""Health of upstreams: probes, backoff, leaving and returning to the rotation, log lines, counters.

The upstreams here are fakes behind the Upstream Protocol (their probe answers as the test says)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from upstream_helpers import FAST

from wyoming_minerva.upstream import UpstreamPool, UpstreamRejected, UpstreamUnavailable
from wyoming_minerva.upstream.health import Backend, Outcome, State
from wyoming_minerva.upstream.metrics import UpstreamCollector

pytestmark = pytest.mark.timeout(60)


@dataclass
class FakeUpstream:
    label: str = "http://gpu.test:10800/v1"
    healthy: bool = True
    hang: bool = False
    probes: list[float] = field(default_factory=list)  # monotonic times
    closed: bool = False

    async def probe(self) -> None:
        self.probes.append(time.monotonic())
        if self.hang:
            await asyncio.sleep(3600)
        if not self.healthy:
            raise UpstreamUnavailable(self.label, "cannot connect (Connection refused)")

    async def aclose(self) -> None:
        self.closed = True


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def pool(fake: FakeUpstream) -> AsyncIterator[UpstreamPool[FakeUpstream]]:
    served = UpstreamPool("stt", [fake], FAST)
    await served.start()
    yield served
    await served.close()
    assert fake.closed


def backend(pool: UpstreamPool[FakeUpstream]) -> Backend[FakeUpstream]:
    return pool.backends[0]


def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.get_records("setup") + caplog.get_records("call")  # the first probe may run during setup
    return [r.getMessage() for r in records if r.name.endswith("upstream.health") and r.levelno == logging.INFO]


async def test_a_good_first_probe_brings_it_up_with_one_line(
    pool: UpstreamPool[FakeUpstream], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await until(lambda: backend(pool).state is State.UP)
    await until(lambda: len(fake.probes) >= 3)  # and it keeps probing, every probe_interval
    assert fake.probes[2] - fake.probes[1] >= FAST.probe_interval * 0.9
    assert [line.split(" (")[0] for line in transitions(caplog)] == ["Upstream stt http://gpu.test:10800/v1 is up"]


async def test_a_failed_probe_takes_it_out_and_probes_back_off_until_it_returns(
    pool: UpstreamPool[FakeUpstream], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await until(lambda: backend(pool).state is State.UP)
    fake.healthy = False
    await until(lambda: backend(pool).state is State.DOWN)
    assert pool.in_rotation() == []
    assert "Connection refused" in backend(pool).reason
    start = len(fake.probes)
    await until(lambda: len(fake.probes) >= start + 4)
    gaps = [b - a for a, b in zip(fake.probes[start - 1 :], fake.probes[start:], strict=False)]
    # backoff from min(1 s, interval) = 0.3 s, doubling, capped at backoff_max = 1 s
    assert gaps[0] >= 0.3 * 0.9 and gaps[1] >= 0.6 * 0.9 and gaps[2] >= 1.0 * 0.9 and gaps[3] >= 1.0 * 0.9
    assert gaps[3] < 1.0 + 3.0  # capped (with room for a loaded machine)
    assert 1.0 <= pool.retry_after() <= FAST.backoff_max + FAST.probe_timeout
    fake.healthy = True
    await until(lambda: backend(pool).state is State.UP)
    lines = transitions(caplog)
    assert [re.sub(r" is (up|down)\b.*", r" is \1", line) for line in lines] == [
        "Upstream stt http://gpu.test:10800/v1 is up",
        "Upstream stt http://gpu.test:10800/v1 is down",
        "Upstream stt http://gpu.test:10800/v1 is up",
    ]


async def test_a_probe_that_hangs_is_a_failed_probe(pool: UpstreamPool[FakeUpstream], fake: FakeUpstream) -> None:
    await until(lambda: backend(pool).state is State.UP)
    fake.hang = True
    started = time.monotonic()
    await until(lambda: backend(pool).state is State.DOWN)
    assert time.monotonic() - started < FAST.probe_interval + FAST.probe_timeout + 3
    assert "within 1 s" in backend(pool).reason


async def test_consecutive_request_failures_take_it_out_rejections_do_not(
    pool: UpstreamPool[FakeUpstream], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await until(lambda: backend(pool).state is State.UP)
    b = backend(pool)
    failure = UpstreamUnavailable(b.label, "HTTP 500: boom")
    rejection = UpstreamRejected(b.label, "HTTP 400: bad audio")
    b.failed(failure)
    b.succeeded(0.05)  # a success in between: the count starts again
    b.failed(failure)
    for _ in range(5):
        b.failed(rejection)
    assert b.in_rotation
    down = asyncio.create_task(b.went_down())
    b.failed(failure)  # FAST.failures = 2 in a row
    assert b.state is State.DOWN
    assert "2 requests failed in a row, the last: HTTP 500: boom" in b.reason
    await asyncio.wait_for(down, 1)  # requests in flight learn at once
    assert b.stats.requests == {Outcome.OK: 1, Outcome.FAILED: 3, Outcome.REJECTED: 5, Outcome.CANCELLED: 0}
    await until(lambda: b.state is State.UP)  # the probe still answers: back after the first backoff step
    assert sum("is down" in line for line in transitions(caplog)) == 1


async def test_metrics_and_snapshot_are_plain_data(pool: UpstreamPool[FakeUpstream]) -> None:
    await until(lambda: backend(pool).state is State.UP)
    b = backend(pool)
    b.succeeded(0.04)
    b.succeeded(0.3)
    b.failed(UpstreamUnavailable(b.label, "HTTP 503"))
    pool.local.record(Outcome.OK, 1.5)
    snapshots = {s.backend: s for s in pool.snapshot()}
    assert set(snapshots) == {"http://gpu.test:10800/v1", "local"}
    assert snapshots["local"].up and snapshots["local"].requests[Outcome.OK] == 1
    remote = snapshots["http://gpu.test:10800/v1"]
    assert remote.up and remote.requests[Outcome.FAILED] == 1 and remote.latency_sum == pytest.approx(0.34)
    registry = CollectorRegistry()
    registry.register(UpstreamCollector([pool]))
    text = generate_latest(registry).decode()
    backend_label, service = 'backend="http://gpu.test:10800/v1"', 'service="stt"'  # labels print sorted
    assert f'minerva_backend_requests_total{{{backend_label},outcome="ok",{service}}} 2.0' in text
    assert f'minerva_backend_requests_total{{{backend_label},outcome="failed",{service}}} 1.0' in text
    assert f"minerva_backend_up{{{backend_label},{service}}} 1.0" in text
    assert f'minerva_backend_latency_seconds_bucket{{{backend_label},le="0.05",{service}}} 1.0' in text
    assert f'minerva_backend_latency_seconds_bucket{{{backend_label},le="+Inf",{service}}} 2.0' in text
    assert 'minerva_backend_latency_seconds_count{backend="local",service="stt"} 1.0' in text


async def test_a_pool_without_local_fallback_lists_only_upstreams(fake: FakeUpstream) -> None:
    pool = UpstreamPool("tts", [fake], FAST, local_fallback=False)
    assert [s.backend for s in pool.snapshot()] == [fake.label]
    assert pool.snapshot()[0].state is State.UNKNOWN and pool.in_rotation()  # in rotation before the first probe
