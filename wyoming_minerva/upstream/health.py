"""Health of upstreams: a background prober per upstream, request outcomes, and a pool in the operator's order.

State: `unknown` until the first probe (in rotation: optimistic), `up`, `down`. An upstream leaves the rotation
after a failed probe or `failures` consecutive failed requests (a 4xx about the request does not count), and comes
back only after a good probe. A healthy upstream is probed every `probe_interval`, and at once when a request to it
has waited longer than `probe_timeout` (failover.py); a down one after 1 s, 2, 4, … up to `backoff_max`.
Each transition logs one INFO line. Every number here is plain data (`snapshot()`): upstream/metrics.py exports
it to Prometheus and /ready can list it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .config import Upstream, UpstreamSettings
from .errors import UpstreamError

_LOGGER = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)  # as the HTTP metrics
LOCAL = "local"  # the backend label of the local engine


class State(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # refused, reset, timed out, 5xx…: counts against the upstream
    REJECTED = "rejected"  # a 4xx about the request: the upstream is fine
    CANCELLED = "cancelled"  # the client went away, or the upstream went down while answering


@dataclass
class BackendStats:
    """Requests by outcome and the latency of good answers (STT: the transcript; TTS: the first audio)."""

    requests: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # last: +Inf
    latency_sum: float = 0.0

    def record(self, outcome: Outcome, seconds: float | None = None) -> None:
        self.requests[outcome] += 1
        if seconds is not None:
            self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, count ≤ it) pairs, +Inf last: Prometheus' histogram shape."""
        total, result = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            result.append((bound, total))
        return tuple(result)


@dataclass(frozen=True)
class BackendSnapshot:
    service: str
    backend: str  # the redacted label, or "local"
    state: State
    reason: str  # why it is down (or the last failure); "" when fine
    consecutive_failures: int
    seconds_in_state: float
    last_probe_ms: float | None
    requests: dict[Outcome, int]
    latency: tuple[tuple[float, int], ...]
    latency_sum: float

    @property
    def up(self) -> bool:
        return self.state is not State.DOWN


C = TypeVar("C", bound=Upstream)


class Backend(Generic[C]):
    """One upstream: its client, state, counters and prober."""

    def __init__(self, service: str, client: C, settings: UpstreamSettings) -> None:
        self.service = service
        self.client = client
        self.label = client.label
        self.settings = settings
        self.state = State.UNKNOWN
        self.reason = ""
        self.failures = 0  # consecutive failed requests
        self.stats = BackendStats()
        self.last_probe_ms: float | None = None
        self._failed_probes = 0
        self._request_downs = 0  # times taken out by requests without a good request since: backs off the flapping
        self._changed_at = time.monotonic()
        self._next_probe_at = 0.0  # monotonic; 0 = now
        self._reschedule = asyncio.Event()
        self._down = asyncio.Event()  # set while down; replaced when it comes back

    @property
    def in_rotation(self) -> bool:
        return self.state is not State.DOWN

    # ---- requests ----------------------------------------------------------------------------

    def succeeded(self, seconds: float) -> None:
        self.stats.record(Outcome.OK, seconds)
        self.failures = 0
        self._request_downs = 0

    def failed(self, err: UpstreamError) -> None:
        if not err.counts_as_failure:
            self.stats.record(Outcome.REJECTED)
            return
        self.stats.record(Outcome.FAILED)
        self.failures += 1
        if self.failures >= self.settings.failures and self.in_rotation:
            self._request_downs += 1
            self._mark_down(f"{self.failures} requests failed in a row, the last: {err.reason}")
            self._schedule(self._backoff(self._request_downs))

    def cancelled(self) -> None:
        self.stats.record(Outcome.CANCELLED)

    async def went_down(self) -> None:
        """Returns when this upstream leaves the rotation (requests in flight then fail over at once)."""
        await self._down.wait()

    # ---- state -------------------------------------------------------------------------------

    def _mark_down(self, reason: str) -> None:
        self.reason = reason
        if self.state is State.DOWN:
            return
        self.state, self._changed_at = State.DOWN, time.monotonic()
        self._down.set()
        _LOGGER.info("Upstream %s %s is down: %s", self.service, self.label, reason)

    def _mark_up(self) -> None:
        self.reason = ""
        if self.state is State.UP:
            return
        self.state, self._changed_at = State.UP, time.monotonic()
        self.failures = 0
        self._down = asyncio.Event()
        _LOGGER.info("Upstream %s %s is up (probe answered in %.0f ms)", self.service, self.label, self.last_probe_ms)

    def _backoff(self, attempt: int) -> float:
        base = min(1.0, self.settings.probe_interval)
        cap = max(self.settings.backoff_max, base)
        return float(min(cap, base * 2 ** max(0, attempt - 1)))

    def _schedule(self, delay: float) -> None:
        self._next_probe_at = time.monotonic() + delay
        self._reschedule.set()

    def probe_soon(self) -> None:
        """A request is slower than a probe may take: probe now (a hung upstream then leaves at once)."""
        if self.in_rotation and self._next_probe_at > time.monotonic():
            self._schedule(0.0)

    def next_probe_in(self) -> float:
        return max(0.0, self._next_probe_at - time.monotonic())

    # ---- probing -----------------------------------------------------------------------------

    async def probe_once(self) -> bool:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                await self.client.probe()
        except TimeoutError:
            reason = f"no answer to the probe within {self.settings.probe_timeout:g} s"
        except UpstreamError as err:
            reason = err.reason
        except Exception as err:  # a client bug must not stop the prober
            _LOGGER.exception("Upstream %s %s: the probe failed unexpectedly", self.service, self.label)
            reason = f"probe failed: {type(err).__name__}"
        else:
            self.last_probe_ms = (time.perf_counter() - started) * 1000
            self._failed_probes = 0
            self._mark_up()
            self._next_probe_at = time.monotonic() + self.settings.probe_interval
            return True
        self.last_probe_ms = None
        self._failed_probes += 1
        self._mark_down(reason)
        self._next_probe_at = time.monotonic() + self._backoff(self._failed_probes)
        return False

    async def run_prober(self) -> None:
        """Forever: probe when due; a request failure that takes the upstream out reschedules the next probe."""
        while True:
            delay = self._next_probe_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._reschedule.wait()
                self._reschedule.clear()
                continue
            await self.probe_once()

    def snapshot(self) -> BackendSnapshot:
        return BackendSnapshot(
            service=self.service,
            backend=self.label,
            state=self.state,
            reason=self.reason,
            consecutive_failures=self.failures,
            seconds_in_state=time.monotonic() - self._changed_at,
            last_probe_ms=self.last_probe_ms,
            requests=dict(self.stats.requests),
            latency=self.stats.cumulative(),
            latency_sum=self.stats.latency_sum,
        )


class UpstreamPool(Generic[C]):
    """The upstreams of one service in the operator's order, their probers, and the local engine's counters."""

    def __init__(
        self, service: str, clients: Sequence[C], settings: UpstreamSettings, local_fallback: bool | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.backends = [Backend(service, client, settings) for client in clients]
        self.local_fallback = settings.local_fallback if local_fallback is None else local_fallback
        self.local = BackendStats()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """One prober task per upstream; the first probes start at once."""
        for backend in self.backends:
            name = f"probe {self.service} {backend.label}"
            self._tasks.append(asyncio.create_task(backend.run_prober(), name=name))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for backend in self.backends:
            with contextlib.suppress(Exception):
                await backend.client.aclose()

    def in_rotation(self) -> list[Backend[C]]:
        return [backend for backend in self.backends if backend.in_rotation]

    def retry_after(self) -> float:
        """Seconds until a backend may serve again: the next probe of a down upstream (1 s at least)."""
        waits = [b.next_probe_in() + self.settings.probe_timeout for b in self.backends if not b.in_rotation]
        return max(1.0, min(waits, default=1.0))

    def snapshot(self) -> list[BackendSnapshot]:
        snapshots = [backend.snapshot() for backend in self.backends]
        if self.local_fallback:
            snapshots.append(
                BackendSnapshot(
                    self.service,
                    LOCAL,
                    State.UP,
                    "",
                    0,
                    0.0,
                    None,
                    dict(self.local.requests),
                    self.local.cumulative(),
                    self.local.latency_sum,
                )
            )
        return snapshots
