"""Upstream speech servers: other minervas, OpenAI-compatible APIs, Wyoming servers — with health and failover.

urls.py parses operator URLs (keys never shown); config.py holds the settings and the client Protocols;
openai.py and wyoming.py are the two clients; health.py probes them and keeps the rotation; failover.py runs one
request across them and the local engine; metrics.py exports the counters; pools.py builds it all from settings.

This package root imports only the light modules (no client, no transport), so settings.py can import
UpstreamSettings from here without an import cycle; import the clients from .pools, .openai and .wyoming.
"""

from __future__ import annotations

from .config import SpeakingUpstream, TranscribingUpstream, UpstreamSettings
from .errors import ServiceUnavailableError, UpstreamConfigError, UpstreamError, UpstreamRejected, UpstreamUnavailable
from .failover import run_with_failover, stream_with_failover
from .health import BackendSnapshot, UpstreamPool
from .urls import UpstreamKind, UpstreamUrl, parse_upstream_url

__all__ = [
    "BackendSnapshot",
    "ServiceUnavailableError",
    "SpeakingUpstream",
    "TranscribingUpstream",
    "UpstreamConfigError",
    "UpstreamError",
    "UpstreamKind",
    "UpstreamPool",
    "UpstreamRejected",
    "UpstreamSettings",
    "UpstreamUnavailable",
    "UpstreamUrl",
    "parse_upstream_url",
    "run_with_failover",
    "stream_with_failover",
]
