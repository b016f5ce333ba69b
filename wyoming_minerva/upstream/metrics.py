"""Prometheus families from the pools' snapshots, read at scrape time (register on the app's own registry).

minerva_backend_requests_total{service,backend,outcome}, minerva_backend_up{service,backend} and
minerva_backend_latency_seconds{service,backend} (STT: time to the transcript; TTS: time to the first audio).
`backend` is the redacted upstream label or "local"; `service` is "stt" or "tts". Labels are bounded by the
operator's flags, never by clients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .health import UpstreamPool


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class UpstreamCollector(Collector):
    def __init__(self, pools: Sequence[UpstreamPool[Any]]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "backend"]
        requests = CounterMetricFamily(
            "minerva_backend_requests", "Requests per backend by outcome", labels=[*labels, "outcome"]
        )
        up = GaugeMetricFamily("minerva_backend_up", "1 while a backend is in rotation", labels=labels)
        latency = HistogramMetricFamily(
            "minerva_backend_latency_seconds",
            "Time to a backend's answer (STT: transcript; TTS: first audio), good answers only",
            labels=labels,
        )
        for pool in self.pools:
            for snap in pool.snapshot():
                names = [snap.service, snap.backend]
                for outcome, count in snap.requests.items():
                    requests.add_metric([*names, outcome.value], count)
                up.add_metric(names, 1.0 if snap.up else 0.0)
                latency.add_metric(
                    names, [(_bound(bound), count) for bound, count in snap.latency], sum_value=snap.latency_sum
                )
        yield from (requests, up, latency)
