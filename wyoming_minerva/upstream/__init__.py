"""Upstream speech servers: other minervas, OpenAI-compatible APIs, Wyoming servers — with health and failover.

urls.py parses operator URLs (keys never shown); openai.py and wyoming.py are the two clients (same Protocols,
config.py); health.py probes them and keeps the rotation; failover.py runs one request across them and the local
engine; metrics.py exports the counters. `build_pools` makes the pools from the settings.
"""

from __future__ import annotations

from .config import SpeakingUpstream, TranscribingUpstream, UpstreamSettings
from .errors import ServiceUnavailableError, UpstreamError, UpstreamRejected, UpstreamUnavailable
from .failover import run_with_failover, stream_with_failover
from .health import BackendSnapshot, UpstreamPool
from .openai import OpenAIUpstream
from .urls import UpstreamKind, UpstreamUrl, parse_upstream_url
from .wyoming import WyomingUpstream


def stt_client(url: UpstreamUrl, settings: UpstreamSettings) -> TranscribingUpstream:
    if url.kind is UpstreamKind.OPENAI:
        return OpenAIUpstream(url, settings)
    return WyomingUpstream(url, settings, expect="asr")


def tts_client(url: UpstreamUrl, settings: UpstreamSettings) -> SpeakingUpstream:
    if url.kind is UpstreamKind.OPENAI:
        return OpenAIUpstream(url, settings)
    return WyomingUpstream(url, settings, expect="tts")


def build_pools(
    settings: UpstreamSettings,
) -> tuple[UpstreamPool[TranscribingUpstream] | None, UpstreamPool[SpeakingUpstream] | None]:
    """One pool per service that has upstreams (None otherwise); call `start()` in the loop, `close()` at the end."""
    stt = UpstreamPool("stt", [stt_client(u, settings) for u in settings.stt], settings) if settings.stt else None
    tts = UpstreamPool("tts", [tts_client(u, settings) for u in settings.tts], settings) if settings.tts else None
    return stt, tts


__all__ = [
    "BackendSnapshot",
    "OpenAIUpstream",
    "ServiceUnavailableError",
    "SpeakingUpstream",
    "TranscribingUpstream",
    "UpstreamError",
    "UpstreamKind",
    "UpstreamPool",
    "UpstreamRejected",
    "UpstreamSettings",
    "UpstreamUnavailable",
    "UpstreamUrl",
    "WyomingUpstream",
    "build_pools",
    "parse_upstream_url",
    "run_with_failover",
    "stream_with_failover",
    "stt_client",
    "tts_client",
]
