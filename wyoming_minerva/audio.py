"""PCM helpers: format conversion to 16 kHz mono s16 with a real resampler (soxr), WAV bytes. No I/O."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from .errors import AudioFormatError

TARGET_RATE = 16000
TARGET_WIDTH = 2
TARGET_CHANNELS = 1
SUPPORTED_WIDTHS = (1, 2, 3, 4)


@dataclass(frozen=True)
class AudioFormat:
    rate: int = TARGET_RATE
    width: int = TARGET_WIDTH
    channels: int = TARGET_CHANNELS

    def validate(self) -> None:
        if self.width not in SUPPORTED_WIDTHS:
            raise AudioFormatError(f"unsupported sample width {self.width} (supported: 1, 2, 3, 4 bytes)")
        if not 1 <= self.channels <= 32:
            raise AudioFormatError(f"unsupported channel count {self.channels}")
        if not 1000 <= self.rate <= 384_000:
            raise AudioFormatError(f"unsupported sample rate {self.rate}")

    def bytes_per_second(self) -> int:
        return self.rate * self.width * self.channels


def pcm_to_float(pcm: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM → float32 mono in [-1, 1]. A trailing partial frame must be cut by the caller."""
    if width == 1:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(pcm, dtype=np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16)
        ints = np.where(ints & 0x800000, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(pcm, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioFormatError(f"unsupported sample width {width}")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def float_to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return bytes((clipped * 32767.0).astype("<i2").tobytes())


class AudioConverter:
    """Streaming conversion of any PCM format to 16 kHz mono s16 (or another rate).

    Keeps partial frames and the resampler's state between chunks, so chunk boundaries leave no clicks.
    """

    def __init__(self, source: AudioFormat, target_rate: int = TARGET_RATE) -> None:
        source.validate()
        self.source = source
        self.target_rate = target_rate
        self._frame_bytes = source.width * source.channels
        self._remainder = b""
        self._resampler = (
            soxr.ResampleStream(source.rate, target_rate, 1, dtype="float32", quality="HQ")
            if source.rate != target_rate
            else None
        )
        self._is_passthrough = source == AudioFormat(target_rate, TARGET_WIDTH, TARGET_CHANNELS)

    def convert(self, pcm: bytes, last: bool = False) -> bytes:
        data = self._remainder + pcm
        usable = len(data) - (len(data) % self._frame_bytes)
        self._remainder = data[usable:]
        data = data[:usable]
        if self._is_passthrough:
            return bytes(data)
        samples = pcm_to_float(data, self.source.width, self.source.channels)
        if self._resampler is not None:
            samples = np.asarray(self._resampler.resample_chunk(samples, last=last), dtype=np.float32)
        return float_to_pcm16(samples)

    def flush(self) -> bytes:
        """Ends the stream: whatever the resampler still holds."""
        return self.convert(b"", last=True) if self._resampler is not None else b""


def convert_pcm(pcm: bytes, source: AudioFormat, target_rate: int = TARGET_RATE) -> bytes:
    converter = AudioConverter(source, target_rate)
    return converter.convert(pcm) + converter.flush()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0


def wav_bytes(pcm: bytes, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setframerate(rate)
        wav.setsampwidth(width)
        wav.setnchannels(channels)
        wav.writeframes(pcm)
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[bytes, AudioFormat]:
    """WAV bytes → (PCM, format). Raises AudioFormatError for anything that is not a PCM WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            fmt = AudioFormat(wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
            return wav.readframes(wav.getnframes()), fmt
    except (wave.Error, EOFError) as err:
        raise AudioFormatError(f"not a PCM WAV file: {err}") from err


def format_from_event(data: dict[str, object], fallback: AudioFormat | None = None) -> AudioFormat:
    """rate/width/channels of an audio-start or audio-chunk event, validated; fallback for missing fields."""
    base = fallback or AudioFormat()
    values: dict[str, int] = {}
    for key, default in (("rate", base.rate), ("width", base.width), ("channels", base.channels)):
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise AudioFormatError(f"audio {key} must be an integer, got {value!r}")
        values[key] = value
    fmt = AudioFormat(**values)
    fmt.validate()
    return fmt
