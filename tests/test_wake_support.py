"""Helpers for the wake word tests (no tests here): the bundled Piper voice rendered without sampling noise.

Piper samples noise on every synthesis, so each test run would hear a slightly different wake word and a
marginal rendering ("Hey Mycroft." is detected in ~5 of 6) would make tests flaky. With noise_scale and
noise_w at 0 a phrase is the same audio every time.
"""

from __future__ import annotations

import numpy as np
import soxr
from conftest import Speech
from piper import SynthesisConfig

RATE = 16000


_RENDERED: dict[str, bytes] = {}  # text → PCM: the same every time, so kept for the session


class SteadySpeech:
    """`SteadySpeech(speech)` over conftest's session-wide voice."""

    def __init__(self, speech: Speech) -> None:
        self.voice = speech.voice
        self.rate = speech.rate
        self._config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self._cache = _RENDERED

    def say(self, text: str) -> bytes:
        """16-bit mono PCM at the voice's rate (22050 Hz)."""
        if text not in self._cache:
            chunks = self.voice.synthesize(text, syn_config=self._config)
            self._cache[text] = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        return self._cache[text]

    def say16k(self, text: str) -> bytes:
        samples = np.frombuffer(self.say(text), dtype="<i2").astype(np.float32)
        return soxr.resample(samples, self.rate, RATE).astype("<i2").tobytes()

    def silence(self, seconds: float) -> bytes:
        return bytes(int(self.rate * seconds) * 2)
