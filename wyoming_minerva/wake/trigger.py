"""Decision logic of a wake word stream, free of models: trigger level + refractory time, and the silence gate."""

from __future__ import annotations

import math

import numpy as np
import webrtcvad

from .catalog import Sensitivity

SAMPLE_RATE = 16000


class Trigger:
    """Turns a model's probabilities into detections.

    `trigger_level` probabilities at or above the threshold in a row make one detection; after it the
    model stays quiet for `refractory_seconds` of audio (not wall time, so a fast client gets the same
    answer as a real-time one), which is what keeps it at one detection per spoken wake word.
    """

    def __init__(self, sensitivity: Sensitivity, sample_rate: int = SAMPLE_RATE) -> None:
        self.threshold = sensitivity.threshold
        self.level = sensitivity.trigger_level
        self.refractory = round(sensitivity.refractory_seconds * sample_rate)
        self._run = 0
        self._quiet_until = -math.inf

    def update(self, probability: float, sample: int) -> bool:
        """`sample`: where in the stream (16 kHz samples since audio-start) this probability is known."""
        if sample < self._quiet_until:
            self._run = 0
            return False
        self._run = self._run + 1 if probability >= self.threshold else 0
        if self._run < self.level:
            return False
        self._run = 0
        self._quiet_until = sample + self.refractory
        return True


class SilenceGate:
    """Tells whether a piece of 16 kHz audio could hold speech, for a few microseconds per 20 ms.

    Quiet means: RMS below `floor_dbfs`, or webrtcvad (least aggressive mode by default, so it errs
    towards speech) hears no speech in any 20 ms frame. One per stream: webrtcvad keeps a little state.
    """

    FRAME = 320  # 20 ms

    def __init__(self, floor_dbfs: float = -60.0, vad_mode: int = 0) -> None:
        self.floor = 32768.0 * 10.0 ** (floor_dbfs / 20.0)
        self._vad = webrtcvad.Vad(vad_mode)

    def is_loud(self, samples: np.ndarray) -> bool:
        """`samples`: 16-bit (or int16-scale float) PCM, any length; a tail shorter than a frame is ignored."""
        if len(samples) == 0:
            return False
        if float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < self.floor:
            return False
        pcm = (samples if samples.dtype == np.int16 else np.clip(samples, -32768, 32767).astype("<i2")).tobytes()
        step = self.FRAME * 2
        # Every frame goes through the VAD (no short cut): its noise estimate adapts frame by frame.
        votes = [
            self._vad.is_speech(pcm[offset : offset + step], SAMPLE_RATE)
            for offset in range(0, len(pcm) - step + 1, step)
        ]
        return any(votes)
