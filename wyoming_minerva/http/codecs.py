"""Audio in and out of the HTTP API with PyAV, all in memory.

- Uploads (any common container/codec) → 16 kHz mono float32, decoded frame by frame into one buffer sized
  by the duration cap, so a small file that decodes to hours of audio costs no more than the cap. Only real
  audio/video demuxers are allowed (no playlists or concat lists that would make FFmpeg open other files or URLs).
- Speech PCM → wav/pcm/mp3/opus/aac/flac, encoded piece by piece so each sentence can be sent as it is made.
Both are blocking: call them on the inference executor / a thread, never on the event loop.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from ..audio import float_to_pcm16
from ..errors import AudioFormatError, AudioTooLongError, BadRequestError
from ..stt.endpointing import FRAME_BYTES, WebRtcVad

STT_RATE = 16000
SPEECH_START_FRAMES = 3  # 90 ms of speech in a row: the file has speech (not just noise or silence)
ALLOWED_DEMUXERS = (
    "wav,w64,mp3,ogg,matroska,webm,flac,mov,mp4,m4a,aac,aiff,caf,amr,au,asf,avi,wv,mpeg,mpegts,voc,ape,tta,dsf"
)


class InvalidAudioError(BadRequestError):
    """An upload that looked like audio but could not be decoded."""

    code = "invalid_audio"


class EmptyUploadError(BadRequestError):
    code = "empty_file"


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, 16 kHz
    heard_speech: bool  # webrtcvad heard speech somewhere (for the hallucination filter)

    @property
    def seconds(self) -> float:
        return len(self.samples) / STT_RATE


def decode_upload(data: bytes, max_seconds: float, vad_aggressiveness: int = 2) -> DecodedAudio:
    """Blocking. AudioFormatError (not audio), InvalidAudioError (corrupt), AudioTooLongError (over the cap).

    Frames are decoded and resampled one at a time straight into one float32 buffer of the cap's size: a tiny
    file that decodes to minutes holds that buffer and a frame, never a list of pieces plus their concatenation.
    The buffer is allocated, not written: only the pages the audio really fills become resident.
    """
    if not data:
        raise EmptyUploadError("the uploaded file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r", container_options={"format_whitelist": ALLOWED_DEMUXERS})
    except (av.FFmpegError, ValueError, OSError) as err:
        raise AudioFormatError(
            "the upload is not a supported audio file (wav, mp3, ogg/opus, webm, flac, m4a, aac, …)"
        ) from err
    limit = int(max_seconds * STT_RATE)
    audio = np.empty(limit, dtype=np.float32)
    total = 0
    with container:
        if not container.streams.audio:
            raise AudioFormatError("the upload has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=STT_RATE)
        try:
            for frame in _frames_then_flush(container, stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    if total + len(samples) > limit:
                        raise AudioTooLongError(f"the audio is longer than the limit of {max_seconds:g} s")
                    audio[total : total + len(samples)] = samples
                    total += len(samples)
        except (av.FFmpegError, ValueError) as err:
            raise InvalidAudioError(f"the audio could not be decoded: {err}") from err
    if total == 0:
        raise InvalidAudioError("the upload contains no audio samples")
    audio = audio[:total]
    return DecodedAudio(audio, has_speech(audio, vad_aggressiveness))


def _frames_then_flush(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames one at a time (so the cap stops decoding early), then None to flush the resampler."""
    yield from container.decode(stream)
    yield None


VAD_BLOCK_FRAMES = 100  # 3 s of audio converted to 16-bit at a time: memory stays small for any length


def has_speech(audio: np.ndarray, aggressiveness: int = 2) -> bool:
    """True as soon as webrtcvad hears SPEECH_START_FRAMES speech frames in a row (read block by block)."""
    vad = WebRtcVad(aggressiveness)
    frame_samples = FRAME_BYTES // 2
    block = frame_samples * VAD_BLOCK_FRAMES
    run = 0
    for start in range(0, len(audio) - frame_samples + 1, block):
        pcm = float_to_pcm16(audio[start : start + block])
        for offset in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            run = run + 1 if vad.is_speech(pcm[offset : offset + FRAME_BYTES]) else 0
            if run >= SPEECH_START_FRAMES:
                return True
    return False


# ---- speech output -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechFormat:
    media_type: str
    container: str | None = None  # None: written by hand (wav header, raw pcm)
    codec: str | None = None
    options: dict[str, str] = field(default_factory=dict)


SPEECH_FORMATS: dict[str, SpeechFormat] = {
    "mp3": SpeechFormat("audio/mpeg", "mp3", "libmp3lame"),
    # Ogg pages every 20 ms instead of every second: each sentence leaves the server when it is encoded.
    "opus": SpeechFormat("audio/ogg; codecs=opus", "ogg", "libopus", {"page_duration": "20000"}),
    "aac": SpeechFormat("audio/aac", "adts", "aac"),
    "flac": SpeechFormat("audio/flac", "flac", "flac"),
    "wav": SpeechFormat("audio/wav"),
    "pcm": SpeechFormat("audio/pcm"),
}


def wav_stream_header(rate: int, channels: int = 1, width: int = 2) -> bytes:
    """A WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as OpenAI's streamed wav)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * width, channels * width, width * 8)
        + b"data"
        + struct.pack("<I", unknown)
    )


class _Sink:
    """A write-only file for PyAV: no seek, so muxers write a streamable file and never go back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class SpeechEncoder:
    """16-bit mono PCM pieces → one stream in `fmt`; `encode` returns the bytes ready so far.

    Encoding runs on a worker thread; the lock keeps `close` (a disconnect, on the loop) from freeing the
    FFmpeg context under an encode still running there.
    """

    def __init__(self, fmt: str, rate: int) -> None:
        self.format = SPEECH_FORMATS[fmt]
        self.rate = rate
        self._sink = _Sink()
        self._header = wav_stream_header(rate) if fmt == "wav" else b""
        self._pts = 0
        self._container: Any = None
        self._stream: Any = None
        self._lock = threading.Lock()
        if self.format.container is not None:
            self._container = av.open(self._sink, mode="w", format=self.format.container, options=self.format.options)
            self._stream = self._container.add_stream(self.format.codec, rate=rate, layout="mono")

    def encode(self, pcm: bytes) -> bytes:
        with self._lock:
            return self._encode(pcm)

    def _encode(self, pcm: bytes) -> bytes:
        if self._stream is None:  # wav / pcm: the samples as they are, after the header
            header, self._header = self._header, b""
            return header + pcm
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        if len(samples):
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self._pts
            self._pts += len(samples)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        with self._lock:
            if self._stream is None:
                header, self._header = self._header, b""
                return header
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._close()
            return self._sink.take()

    def close(self) -> None:
        """Idempotent; also frees the encoder when a stream ends early (a disconnect)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            try:
                container.close()
            except av.FFmpegError:
                pass
