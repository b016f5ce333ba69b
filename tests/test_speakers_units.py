"""Speaker decisions without a model: regions, windows, clustering, turns, words → blocks, the voice store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soxr
from conftest import Speech

from wyoming_minerva.speakers import diarize as d
from wyoming_minerva.speakers.attribution import (
    UNKNOWN,
    SpeakerTurn,
    join_tokens,
    letter_label,
    speaker_at,
    speaker_blocks,
    speaker_labels,
)
from wyoming_minerva.speakers.evaluation import LabelledSpan, attribution_share, stitch
from wyoming_minerva.speakers.service import openai_segments, timed_items
from wyoming_minerva.speakers.store import InvalidSpeakerNameError, SpeakerStore, validate_name
from wyoming_minerva.stt.engine import Segment, Word

CONFIG = d.DiarizationConfig()
FRAME = d.VAD_FRAME  # samples per VAD flag


def voices(count: int, dimension: int = 32, seed: int = 0) -> np.ndarray:
    """`count` orthogonal unit vectors: perfectly distinct voices."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dimension, dimension)))
    return q[:count].astype(np.float32)


def noisy(voice: np.ndarray, count: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return d.l2_normalise(voice[None, :] + spread * rng.normal(size=(count, len(voice))) / np.sqrt(len(voice)))


# ---- regions, windows ----------------------------------------------------------------------------


def test_speech_regions_bridge_short_gaps_and_drop_clicks() -> None:
    flags = [False] * 5 + [True] * 40 + [False] * 5 + [True] * 20 + [False] * 30 + [True] * 3 + [False] * 40
    flags += [True] * 30
    regions = d.speech_regions(flags, CONFIG)
    # 5 silent frames (0.15 s) are bridged, 30 (0.9 s) are not; 3 frames (90 ms) are a click
    assert regions == [d.Span(5 * FRAME, 70 * FRAME), d.Span(143 * FRAME, 173 * FRAME)]


def test_plan_windows_cover_long_regions_and_centre_short_ones() -> None:
    size, hop, total = 1000, 1000, 100_000
    planned = d.plan_windows([d.Span(0, 3500), d.Span(10_000, 10_400), d.Span(99_900, 100_000)], total, size, hop)
    assert planned[:4] == [(0, 0), (0, 833), (0, 1667), (0, 2500)]  # evenly spread, the last flush with the end
    assert planned[4] == (1, 10_200 - 500)  # centred on a short region
    assert planned[5] == (2, total - size)  # never past the end of the audio


def test_sub_windows_stay_inside_a_region() -> None:
    assert d.sub_windows([0, 0, 0, 1, 2, 2], 2) == [[0, 1], [1, 2], [3], [4, 5]]


# ---- clustering ------------------------------------------------------------------------------------


def test_agglomerate_finds_distinct_voices_and_keeps_one_voice_together() -> None:
    base = voices(3)
    rows = np.concatenate([noisy(base[i % 3], 1, 0.6, seed=i) for i in range(30)])
    labels = d.agglomerate(rows, np.ones(len(rows)), CONFIG.cluster_threshold)
    assert len(set(labels)) == 3
    assert all(labels[i] == labels[i % 3] for i in range(30))
    one = noisy(base[0], 20, 0.6, seed=99)
    assert len(set(d.agglomerate(one, np.ones(20), CONFIG.cluster_threshold))) == 1


def test_label_windows_folds_a_stray_window_but_keeps_a_brief_distinct_speaker() -> None:
    base = voices(4)
    a, b = noisy(base[0], 40, 0.6, 1), noisy(base[1], 40, 0.6, 2)
    stray = d.l2_normalise(base[0] + 1.8 * base[3])  # too odd to join A's windows, too like A to be anyone
    brief = noisy(base[2], 2, 0.3, 3)  # a different voice, only two windows long
    rows = np.concatenate([a, b, stray[None, :], brief])
    regions = [0] * 40 + [1] * 40 + [2] + [3, 3]
    found = d.label_windows(rows, regions, CONFIG)
    assert len(found.centres) == 3
    assert set(found.labels[:40]) == {0} and set(found.labels[40:80]) == {1}
    assert found.labels[80] == 0
    assert set(found.labels[81:]) == {2}


def test_known_names_go_to_the_best_cluster_once() -> None:
    base = voices(3)
    centres = base[:2]
    known = {"Ana": d.l2_normalise(base[0] + 0.2 * base[2]), "Ben": base[2], "Ana's twin": base[0]}
    named = d.name_clusters(centres, known, CONFIG.known_threshold)
    assert named[0][0] == "Ana's twin" and named[0][1] == pytest.approx(1.0)
    assert 1 not in named  # Ben's voice is nobody here; Ana lost cluster 0 to a better match


def test_window_turns_split_at_window_midpoints_merge_and_pad() -> None:
    size = 16000  # 1 s windows for round numbers
    regions = [d.Span(0, 48000), d.Span(80000, 96000)]
    windows = [(0, 0), (0, 16000), (0, 32000), (1, 80000)]
    turns = d.window_turns(regions, windows, [0, 0, 1, 0], size, CONFIG)
    assert [(t.start, t.end, t.speaker) for t in turns] == [(0.0, 2.0, 0), (2.0, 3.25, 1), (4.75, 6.25, 0)]


# ---- words → speakers → blocks ---------------------------------------------------------------------


TURNS = [SpeakerTurn(0.0, 2.0, "A"), SpeakerTurn(2.0, 4.0, "B"), SpeakerTurn(10.0, 14.0, "A")]


def test_speaker_at_midpoint_then_overlap_then_unknown() -> None:
    assert speaker_at(1.5, 2.3, TURNS) == "A"  # midpoint 1.9
    assert speaker_at(1.9, 2.3, TURNS) == "B"  # midpoint 2.1
    assert speaker_at(3.0, 5.5, TURNS) == "B"  # midpoint 4.25 in no turn; overlaps B by 1 s
    assert speaker_at(5.0, 6.0, TURNS) == UNKNOWN


def test_join_tokens() -> None:
    assert join_tokens([" Hello", ",", " world", " !", "  how ", "are\tyou", "?"]) == "Hello, world! how are you?"
    assert join_tokens([]) == ""
    assert join_tokens([" ", "Hi", " ."]) == "Hi."


def test_blocks_break_at_speaker_change_and_long_silence() -> None:
    words = [
        Word(0.1, 0.5, " Hello"),
        Word(0.5, 0.9, " there"),
        Word(0.9, 1.0, "."),
        Word(2.2, 2.6, " Hi"),
        Word(2.6, 3.0, "!"),
        Word(10.2, 10.6, " Back"),
        Word(12.3, 12.8, " again"),  # 1.7 s after "Back": same speaker, new block
        Word(20.0, 20.5, " who"),
    ]
    blocks = speaker_blocks(words, TURNS)
    assert [(b.speaker, b.text) for b in blocks] == [
        ("A", "Hello there."),
        ("B", "Hi!"),
        ("A", "Back"),
        ("A", "again"),
        (UNKNOWN, "who"),
    ]
    assert [(b.start, b.end) for b in blocks[:2]] == [(0.1, 1.0), (2.2, 3.0)]


def test_segments_without_words_go_whole() -> None:
    segments = [Segment(0.0, 1.8, " One two."), Segment(2.1, 3.9, " Three.", words=(Word(2.1, 3.9, " Three."),))]
    items = timed_items(segments)
    assert [i.text for i in items] == [" One two.", " Three."]
    answer = openai_segments(speaker_blocks(items, TURNS))
    assert answer == [
        {
            "type": "transcript.text.segment",
            "id": "seg_0",
            "speaker": "A",
            "start": 0.0,
            "end": 1.8,
            "text": "One two.",
        },
        {"type": "transcript.text.segment", "id": "seg_1", "speaker": "B", "start": 2.1, "end": 3.9, "text": "Three."},
    ]


def test_labels_known_names_first_then_in_order_of_appearance() -> None:
    assert [letter_label(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
    assert speaker_labels([2, 0, 2, 1], {0: "Ana"}) == {2: "Speaker_0", 0: "Ana", 1: "Speaker_1"}
    assert speaker_labels([2, 0, 1], {}, letter_label) == {2: "A", 0: "B", 1: "C"}


# ---- scoring helper ----------------------------------------------------------------------------------


def test_attribution_share_pairs_labels_by_shared_time(speech: Speech) -> None:
    first, second = (speech_16k(speech, text) for text in ("The garage door is open.", "Lock it at nine, please."))
    audio, truth = stitch([("x", first), ("y", second)], [1.0])
    middle = truth[0].end + 0.5
    assert truth[1].start == pytest.approx(middle + 0.5)
    assert attribution_share(audio, truth, [LabelledSpan(0, middle, "B"), LabelledSpan(middle, 99, "A")]) == 1.0
    one_label = attribution_share(audio, truth, [LabelledSpan(0, 99, "A")])
    length = [t.end - t.start for t in truth]
    assert one_label == pytest.approx(length[0] / sum(length), abs=0.1)
    assert attribution_share(audio, truth, []) == 0.0


def speech_16k(speech: Speech, text: str) -> np.ndarray:
    return soxr.resample(np.frombuffer(speech.say(text), "<i2") / 32768.0, speech.rate, 16000).astype(np.float32)


# ---- the store ----------------------------------------------------------------------------------------


def test_names_are_display_names_never_paths() -> None:
    assert validate_name("  Ana  María ") == "Ana María"
    assert validate_name("O'Neil-2") == "O'Neil-2"
    for bad in ("", " ", "../etc/passwd", "a/b", "a\\b", ".hidden", "x" * 65, "Speaker_0", "speaker_unknown", "a\nb"):
        with pytest.raises(InvalidSpeakerNameError):
            validate_name(bad)


def test_store_survives_a_restart_and_writes_atomically(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SpeakerStore(tmp_path)
    one, two = voices(2, 256)
    store.enrol("Ana", [one], 3.0)
    store.enrol("ana", [one * 0.9 + two * 0.1], 2.0)  # same person, case-insensitively: a second clip
    store.enrol("Ben", [two], 4.0)
    assert not list(tmp_path.glob(".speakers.json.*")), "no temporary file left behind"
    again = SpeakerStore(tmp_path)
    assert again.names() == ["Ana", "Ben"]
    ana = again.get("ANA")
    assert ana is not None and len(ana.embeddings) == 2 and ana.speech_seconds == 5.0
    assert float(again.centroids()["Ben"] @ two) == pytest.approx(1.0, abs=1e-5)
    assert again.delete("ben") and not again.delete("ben")
    assert SpeakerStore(tmp_path).names() == ["Ana"]
    document = json.loads((tmp_path / "speakers.json").read_text())
    assert "audio" not in json.dumps(document) and len(document["speakers"][0]["embeddings"][0]) == 256
    replaced = again.enrol("Ana", [two], 1.0, replace=True)
    assert len(replaced.embeddings) == 1 and replaced.speech_seconds == 1.0


def test_an_unreadable_store_is_moved_aside_not_lost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "speakers.json").write_text("{not json")
    store = SpeakerStore(tmp_path)
    assert store.names() == []
    assert len(list(tmp_path.glob("speakers.json.unreadable-*"))) == 1
