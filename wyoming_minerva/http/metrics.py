"""Prometheus metrics on a per-app CollectorRegistry (no global registry: two apps in one process never mix).

Requests and latencies by route template (never the raw path: unknown paths must not grow the label set),
errors by envelope code, requests in flight, and at scrape time the model manager's queue and models, and the
upstreams' backends (upstream/metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..runtime.manager import ModelManager
from ..upstream import UpstreamPool
from ..upstream.metrics import UpstreamCollector

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ManagerCollector(Collector):
    """Reads the shared model manager when scraped (queue depth, capacity, loaded models, loads)."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        stats = self.manager.stats()
        depth = GaugeMetricFamily("minerva_inference_queue_depth", "Inference jobs running or waiting")
        depth.add_metric([], stats.queue_depth)
        capacity = GaugeMetricFamily(
            "minerva_inference_queue_capacity", "Jobs running plus waiting before queue_full (workers + queue size)"
        )
        capacity.add_metric([], stats.capacity)
        workers = GaugeMetricFamily("minerva_inference_workers", "Inference threads")
        workers.add_metric([], stats.workers)
        loaded = GaugeMetricFamily("minerva_model_loaded", "1 while a model is loaded", labels=["model"])
        loads = CounterMetricFamily("minerva_model_loads", "Times a model was loaded", labels=["model"])
        for key, count in sorted(stats.load_counts.items()):
            loaded.add_metric([key], 1.0 if key in stats.loaded else 0.0)
            loads.add_metric([key], count)
        yield from (depth, capacity, workers, loaded, loads)


class Metrics:
    def __init__(self, manager: ModelManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "minerva_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "minerva_http_request_duration_seconds",
            "Time from request to the end of the response (streams included)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "minerva_http_time_to_first_byte_seconds",
            "Time from request to the first byte of the response body",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "minerva_http_errors", "HTTP error responses by error code", ["code"], registry=self.registry
        )
        self.in_flight = Gauge("minerva_http_requests_in_flight", "HTTP requests being served", registry=self.registry)
        self.registry.register(ManagerCollector(manager))

    def watch_upstreams(self, pools: Sequence[UpstreamPool[Any]]) -> None:
        """minerva_backend_* for each upstream pool and its local fallback, read at scrape time."""
        if pools:
            self.registry.register(UpstreamCollector(pools))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI (streams pass through untouched); counts every response, error codes from request.state."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = 500
        first_byte: float | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and first_byte is None and message.get("body"):
                first_byte = time.perf_counter() - started
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            metrics.in_flight.dec()
            route = route_label(scope)
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
            if first_byte is not None:
                metrics.first_byte.labels(route).observe(first_byte)
            if status >= 400:
                code = (scope.get("state") or {}).get("error_code") or f"http_{status}"
                metrics.errors.labels(code).inc()
