"""Clients and pools from the settings: one pool per service that has upstreams."""

from __future__ import annotations

from .config import SpeakingUpstream, TranscribingUpstream, UpstreamSettings
from .health import UpstreamPool
from .openai import OpenAIUpstream
from .urls import UpstreamKind, UpstreamUrl
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
