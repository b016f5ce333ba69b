"""The speaker-embedding seam: what an embedder is, and the window geometry diarization plans with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class WindowGeometry:
    """How many samples one embedding window reads: diarization cuts audio into pieces of this size."""

    samples: int  # audio one window embedding is computed from
    min_stride: int  # the finest stride the embedder's own recipe uses

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


class SpeakerEmbedder(Protocol):
    """Audio (float32 mono 16 kHz) → L2-normalised speaker vectors. Blocking: call it on the executor."""

    dimension: int
    window: WindowGeometry

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """One vector for a whole clip (an enrolment or a reference), shape (dimension,)."""
        ...

    def embed_windows(self, pieces: np.ndarray) -> np.ndarray:
        """One vector per piece of exactly `window.samples` samples: (n, samples) → (n, dimension)."""
        ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit
