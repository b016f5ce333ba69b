"""G.711 μ-law and A-law (8 kHz telephony audio, OpenAI's `audio/pcmu` / `audio/pcma`) → 16-bit PCM, by table."""

from __future__ import annotations

import numpy as np

G711_RATE = 8000


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    magnitude = ((((codes & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = (codes & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype("<i2")


_TABLES = {"audio/pcmu": _ulaw_table(), "audio/pcma": _alaw_table()}
CODECS = tuple(_TABLES)


def g711_to_pcm16(data: bytes, codec: str) -> bytes:
    """One byte per sample in → little-endian 16-bit PCM out (same rate)."""
    return bytes(_TABLES[codec][np.frombuffer(data, dtype=np.uint8)].tobytes())
