"""microWakeWord: streaming models with internal state, so each stream owns its interpreters.

What is shared per stream is the feature front end (pymicro-features, 40 features per 10 ms): computed
once and fed to every microWakeWord model the stream asked for. The numbers match pymicro-wakeword's
`MicroWakeWord` (same quantisation, stride and sliding-window mean).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pymicro_features import MicroFrontend  # type: ignore[import-untyped]

from .catalog import WakeModelInfo
from .openwakeword import Hit
from .tflite import Interpreter, SharedModel, TfLite
from .trigger import Trigger

SAMPLES_PER_STEP = 160  # 10 ms
BYTES_PER_STEP = SAMPLES_PER_STEP * 2


class MicroModel:
    """A loaded microWakeWord model (what the ModelManager holds)."""

    def __init__(self, tflite: TfLite, info: WakeModelInfo) -> None:
        self.info = info
        self.shared = SharedModel(tflite, info.model_path)
        probe = self.interpreter()
        try:
            shape = probe.input.shape
        finally:
            probe.close()
        if len(shape) != 3:
            self.shared.close()
            raise ValueError(f"{info.model_path.name} is not a streaming microWakeWord model (input {shape})")
        self.stride = int(shape[1])

    def interpreter(self) -> Interpreter:
        # TFLite's reference int8 kernels, not XNNPACK: XNNPACK would save ~0.6 ms per audio second but
        # rounds differently (probabilities off by up to 0.015); these keep pymicro-wakeword's numbers.
        return self.shared.interpreter(xnnpack=False)

    @property
    def closed(self) -> bool:
        return self.shared.closed

    def close(self) -> None:
        self.shared.close()


@dataclass
class MicroDetector:
    label: str
    model: MicroModel
    trigger: Trigger
    interpreter: Interpreter = field(init=False)
    _features: list[np.ndarray] = field(default_factory=list)
    _probabilities: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.interpreter = self.model.interpreter()
        self._probabilities = deque(maxlen=self.model.info.sliding_window)
        spec = self.interpreter.input
        self._scale, self._zero = spec.scale, spec.zero_point
        info = np.iinfo(spec.dtype)  # type: ignore[type-var]
        self._lo, self._hi = info.min, info.max
        out = self.interpreter.output
        self._out_scale, self._out_zero = out.scale, out.zero_point

    def feed(self, features: np.ndarray) -> float | None:
        """One 10 ms feature vector; the sliding-window probability each `stride` vectors, else None."""
        self._features.append(features)
        if len(self._features) < self.model.stride:
            return None
        window = np.stack(self._features)[np.newaxis]
        self._features.clear()
        quantised = np.clip(np.round(window / self._scale + self._zero), self._lo, self._hi)
        raw = self.interpreter.run(quantised)
        self._probabilities.append(float((raw.astype(np.float32).item() - self._out_zero) * self._out_scale))
        if len(self._probabilities) < (self._probabilities.maxlen or 1):
            return 0.0
        return float(np.mean(self._probabilities))

    def close(self) -> None:
        self.interpreter.close()


class MicroStream:
    """The microWakeWord state of one stream: one front end, the stream's models. One worker thread."""

    def __init__(self, detectors: Sequence[MicroDetector]) -> None:
        self.detectors = list(detectors)
        self._frontend = MicroFrontend()
        self._pending = b""
        self.samples = 0  # samples the front end has consumed

    def push(self, pcm: bytes) -> list[Hit]:
        """16 kHz mono s16 PCM in, detections out (in order)."""
        hits: list[Hit] = []
        data = self._pending + pcm
        offset = 0
        while offset + BYTES_PER_STEP <= len(data):
            result = self._frontend.process_samples(data[offset : offset + BYTES_PER_STEP])
            offset += result.samples_read * 2
            self.samples += result.samples_read
            if not result.features:
                continue
            features = np.asarray(result.features, dtype=np.float64)  # as pymicro-wakeword quantises
            for detector in self.detectors:
                probability = detector.feed(features)
                if probability is not None and detector.trigger.update(probability, self.samples):
                    hits.append(Hit(detector.label, self.samples, probability))
        self._pending = data[offset:]
        return hits

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()
