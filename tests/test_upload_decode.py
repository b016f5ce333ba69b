"""Upload decoding holds one copy of the audio: a small file that decodes to minutes costs the buffer, no more.

Allocations are counted with tracemalloc (numpy reports its buffers there): a count, not a timing. The peak RSS
of the same attack, end to end, is a figure in script/bench_http.py.
"""

from __future__ import annotations

import io
import tracemalloc

import av
import numpy as np
import pytest

from wyoming_minerva.errors import AudioTooLongError
from wyoming_minerva.http.codecs import STT_RATE, decode_upload

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


def silent_flac(seconds: int, rate: int = 8000, layout: str = "stereo") -> bytes:
    """A FLAC of digital silence: a few hundred bytes a second that decode to `seconds` of audio."""
    channels = 2 if layout == "stereo" else 1
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout=layout)
        block = np.zeros((1, rate * channels), dtype="<i2")
        for second in range(seconds):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = second * rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def traced_peak(fn: object, *args: object) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn(*args)  # type: ignore[operator]
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_small_file_of_long_silence_costs_one_buffer_of_the_cap() -> None:
    data = silent_flac(590)
    assert len(data) < 400_000
    decoded, peak = traced_peak(decode_upload, data, 600.0)
    cap_bytes = 600 * STT_RATE * 4  # float32, 16 kHz mono: the most the decoder may ever hold
    assert abs(decoded.seconds - 590) < 0.1  # type: ignore[attr-defined]
    assert not decoded.heard_speech  # type: ignore[attr-defined]
    assert peak < cap_bytes + 4 * MiB, f"peak {peak / MiB:.0f} MiB for a {cap_bytes / MiB:.0f} MiB buffer"


def test_a_file_over_the_cap_is_refused_without_holding_more_than_the_cap() -> None:
    data = silent_flac(130)
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLongError):
            decode_upload(data, 120.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * STT_RATE * 4 + 4 * MiB


def test_decoded_audio_keeps_its_length_and_content() -> None:
    rate = 44100
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate * 3) / rate) * 12000).astype("<i2")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    decoded = decode_upload(buffer.getvalue(), 600.0)
    assert abs(decoded.seconds - 3.0) < 0.01
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous
    level = float(np.sqrt(np.mean(decoded.samples[1000:-1000] ** 2)))
    assert abs(level - 12000 / 32768 / np.sqrt(2)) < 0.02
