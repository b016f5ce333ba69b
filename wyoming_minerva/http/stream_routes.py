"""The real-time routes (WebSocket speech-to-text, streaming text-to-speech, wake events) and their metrics.

`install(app)` is called by create_app after app.state.minerva exists: it takes the LiveHub the App made and closes
(`engines.live`; an app made without an App, as in tests, gets its own), registers the routes, and adds the live
statistics to the app's /metrics registry.
API keys: RequestGuard checks WebSocket handshakes and the SSE GET like every other route.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..stt.live.hub import LiveHub
from ..stt.live.types import LatencyHistogram
from . import realtime, stream_stt, stream_tts, wake_events
from .deps import HttpContext
from .stream_common import StreamContext


def install(app: FastAPI) -> StreamContext:
    http = app.state.minerva
    assert isinstance(http, HttpContext)
    settings = http.settings.realtime
    hub = getattr(http.engines, "live", None)  # EngineSet names only what every front end needs
    if not isinstance(hub, LiveHub):
        hub = LiveHub(http.engines.stt, settings) if http.engines.stt is not None else None
    ctx = StreamContext(http=http, hub=hub, settings=settings)
    app.state.minerva_streams = ctx
    for module in (realtime, stream_stt, stream_tts, wake_events):
        app.include_router(module.router, tags=["real-time"])
    http.metrics.registry.register(StreamCollector(ctx))
    return ctx


def _histogram(name: str, documentation: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.cumulative(), sum_value=histogram.total)


class StreamCollector(Collector):
    """Read at scrape time from the hub's statistics (nothing is copied while serving)."""

    def __init__(self, ctx: StreamContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        yield _histogram(
            "minerva_tts_stream_first_audio_seconds",
            "WS /v1/audio/speech/stream: request → first PCM frame",
            self.ctx.tts_first_audio,
        )
        hub = self.ctx.hub
        if hub is None:
            return
        stats = hub.stats
        yield _histogram(
            "minerva_realtime_final_latency_seconds",
            "Live speech-to-text: end of speech (or commit) → final transcript",
            stats.latency,
        )
        sessions = GaugeMetricFamily("minerva_realtime_sessions", "Live speech-to-text sessions open")
        sessions.add_metric([], stats.sessions)
        queued = GaugeMetricFamily("minerva_realtime_queued_finals", "Finals waiting for an inference worker")
        queued.add_metric([], stats.queued)
        yield from (sessions, queued)
        for name, doc, value in (
            ("minerva_realtime_sessions_opened", "Live sessions opened", stats.sessions_total),
            ("minerva_realtime_sessions_rejected", "Live sessions refused with session_limit", stats.sessions_rejected),
            ("minerva_realtime_finals", "Final transcripts decoded", stats.finals),
            (
                "minerva_realtime_finals_speculative",
                "Finals that reused the decode begun at a pause",
                stats.finals_reused,
            ),
            ("minerva_realtime_interims", "Interim decodes run", stats.interims),
            (
                "minerva_realtime_interims_skipped",
                "Interim refreshes skipped for lack of capacity",
                stats.interims_skipped,
            ),
            ("minerva_realtime_buffer_overflows", "buffer_overflow notices sent", stats.overflows),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter
        failed = CounterMetricFamily(
            "minerva_realtime_finals_failed", "Utterances without a final, by code", labels=["code"]
        )
        for code, count in sorted(stats.finals_failed.items()):
            failed.add_metric([code], count)
        yield failed
