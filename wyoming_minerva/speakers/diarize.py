"""Who spoke when, as pure functions: speech regions, embedding windows, clustering, turns, known names.

Measured on real voices with the bundled encoder: one voice scores 0.79–0.88 cosine between clips of 2 s or
more, different voices 0.0–0.57; a single 0.8 s window is much noisier (one voice 0.3–0.8). So turns are cut
into sub-windows of two windows (1.6 s), those are clustered bottom-up by average cosine, and every window is
then relabelled by the cluster centroid it is nearest to, which finds speaker changes inside one stretch of
speech to within one window.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .engine import SAMPLE_RATE, l2_normalise

VAD_FRAME = 480  # 30 ms at 16 kHz, one webrtcvad frame
VAD_BLOCK_FRAMES = 2000  # PCM converted one minute at a time, never the whole file at once


@dataclass(frozen=True)
class DiarizationConfig:
    vad_aggressiveness: int = 2
    min_region_seconds: float = 0.25  # shorter bursts of "speech" are clicks and breaths
    bridge_seconds: float = 0.3  # silence shorter than this does not split a region
    window_hop_samples: int = 13_152  # diarization windows side by side (one window each 0.82 s)
    segment_windows: int = 2  # windows averaged into one sub-window for clustering (1.6 s)
    cluster_threshold: float = 0.48  # stop merging below this average cosine (measured: one voice ≥ 0.54, two ≤ 0.44)
    max_cluster_items: int = 800  # more sub-windows: cluster an even sample, assign the rest (bounded cost)
    min_cluster_share: float = 0.04  # a cluster with less speech than this is folded into its nearest one…
    keep_distinct_below: float = 0.35  # …unless it is this unlike every other (a real, brief speaker)
    known_threshold: float = 0.62  # centroid ↔ enrolled voice cosine that names a speaker
    pad_seconds: float = 0.25  # turns reach this far into the silence around them (VAD trims word edges)


@dataclass(frozen=True)
class Span:
    start: int  # samples at 16 kHz
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Turn:
    start: float  # seconds
    end: float
    speaker: int  # cluster index, in order of first appearance


# ---- speech regions ----------------------------------------------------------------------------------


def vad_flags(audio: np.ndarray, aggressiveness: int) -> Iterator[bool]:
    """webrtcvad's verdict for each 30 ms frame of float32 16 kHz audio, converted a block at a time."""
    vad = webrtcvad.Vad(aggressiveness)
    frames = len(audio) // VAD_FRAME
    for first in range(0, frames, VAD_BLOCK_FRAMES):
        last = min(frames, first + VAD_BLOCK_FRAMES)
        block = np.clip(audio[first * VAD_FRAME : last * VAD_FRAME], -1.0, 1.0)
        pcm = (block * 32767.0).astype("<i2").tobytes()
        step = VAD_FRAME * 2
        for offset in range(0, len(pcm), step):
            yield bool(vad.is_speech(pcm[offset : offset + step], SAMPLE_RATE))


def speech_regions(flags: Sequence[bool], config: DiarizationConfig) -> list[Span]:
    """Runs of speech frames, bridged over short silences, without the too-short ones."""
    bridge = round(config.bridge_seconds * SAMPLE_RATE / VAD_FRAME)
    regions: list[list[int]] = []
    for index, speech in enumerate(flags):
        if not speech:
            continue
        if regions and index - regions[-1][1] <= bridge:
            regions[-1][1] = index + 1
        else:
            regions.append([index, index + 1])
    shortest = config.min_region_seconds * SAMPLE_RATE
    spans = (Span(first * VAD_FRAME, last * VAD_FRAME) for first, last in regions)
    return [span for span in spans if span.length >= shortest]


# ---- windows and sub-windows -------------------------------------------------------------------------


def plan_windows(regions: Sequence[Span], total: int, size: int, hop: int) -> list[tuple[int, int]]:
    """(region index, first sample) of each embedding window: evenly over a region, the last one flush with its
    end; a region shorter than a window gets one window centred on it, reaching into the audio around it."""
    planned: list[tuple[int, int]] = []
    for index, region in enumerate(regions):
        if region.length <= size or total <= size:
            centre = (region.start + region.end) // 2
            planned.append((index, max(0, min(total - size, centre - size // 2))))
            continue
        count = -(-(region.length - size) // hop) + 1
        starts = np.linspace(region.start, region.end - size, count).round().astype(int)
        planned.extend((index, int(start)) for start in starts)
    return planned


def sub_windows(region_of: Sequence[int], per_segment: int) -> list[list[int]]:
    """Groups of `per_segment` consecutive windows of one region (sliding by one); a short region is one group."""
    groups: list[list[int]] = []
    first = 0
    while first < len(region_of):
        last = first
        while last < len(region_of) and region_of[last] == region_of[first]:
            last += 1
        indices = list(range(first, last))
        if len(indices) <= per_segment:
            groups.append(indices)
        else:
            groups.extend(indices[i : i + per_segment] for i in range(len(indices) - per_segment + 1))
        first = last
    return groups


# ---- clustering --------------------------------------------------------------------------------------


def agglomerate(vectors: np.ndarray, weights: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage clustering on cosine similarity: merge the most similar pair until none reaches
    `threshold`. Returns a cluster index per row. O(n²) memory: callers keep n bounded."""
    count = len(vectors)
    if count <= 1:
        return np.zeros(count, dtype=int)
    unit = l2_normalise(vectors).astype(np.float64)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    sizes = weights.astype(np.float64).copy()
    members = np.arange(count)
    alive = np.ones(count, dtype=bool)
    while alive.sum() > 1:
        best = int(np.argmax(similarity))
        a, b = divmod(best, count)
        if similarity[a, b] < threshold:
            break
        merged = (sizes[a] * similarity[a] + sizes[b] * similarity[b]) / (sizes[a] + sizes[b])
        similarity[a], similarity[:, a] = merged, merged
        similarity[a, a] = -np.inf
        similarity[b], similarity[:, b] = -np.inf, -np.inf
        sizes[a] += sizes[b]
        alive[b] = False
        members[members == b] = a
    return np.unique(members, return_inverse=True)[1]


def centroids(vectors: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    count = int(labels.max()) + 1 if len(labels) else 0
    sums = np.zeros((count, vectors.shape[1]))
    np.add.at(sums, labels, vectors * weights[:, None])
    return l2_normalise(sums)


def fold_small_clusters(
    labels: np.ndarray, centres: np.ndarray, seconds: np.ndarray, config: DiarizationConfig
) -> np.ndarray:
    """Fold clusters holding too little speech into the most similar other cluster, smallest first, unless
    they are clearly a voice of their own."""
    labels = labels.copy()
    while True:
        ids = np.unique(labels)
        if len(ids) <= 1:
            return labels
        share = np.array([seconds[labels == i].sum() for i in ids]) / max(seconds.sum(), 1e-9)
        order = np.argsort(share)
        smallest = ids[order[0]]
        if share[order[0]] >= config.min_cluster_share:
            return labels
        others = ids[ids != smallest]
        scores = centres[others] @ centres[smallest]
        if scores.max() < config.keep_distinct_below:
            return labels
        labels[labels == smallest] = others[int(np.argmax(scores))]


@dataclass(frozen=True)
class WindowLabels:
    labels: np.ndarray  # speaker index per window, numbered in order of first appearance
    centres: np.ndarray  # (speakers, dimension) L2-normalised centroid of each speaker's sub-windows


def label_windows(embeddings: np.ndarray, region_of: Sequence[int], config: DiarizationConfig) -> WindowLabels:
    """Cluster the sub-windows, fold stray clusters, then give each window its nearest speaker (its neighbours in
    the same region counting half as much, so one odd window does not flip alone)."""
    if len(embeddings) == 0:
        return WindowLabels(np.zeros(0, dtype=int), np.zeros((0, embeddings.shape[1]), np.float32))
    groups = sub_windows(region_of, config.segment_windows)
    vectors = l2_normalise(np.stack([embeddings[group].mean(axis=0) for group in groups]))
    weights = np.array([len(group) for group in groups], dtype=np.float64)
    sample = np.unique(np.linspace(0, len(groups) - 1, min(len(groups), config.max_cluster_items)).astype(int))
    labels = np.full(len(groups), -1)
    labels[sample] = agglomerate(vectors[sample], weights[sample], config.cluster_threshold)
    centres = centroids(vectors[sample], labels[sample], weights[sample])
    rest = labels < 0
    labels[rest] = np.argmax(vectors[rest] @ centres.T, axis=1)
    labels = fold_small_clusters(labels, centroids(vectors, labels, weights), weights, config)
    labels = np.unique(labels, return_inverse=True)[1]
    centres = centroids(vectors, labels, weights)
    smoothed = 2.0 * embeddings.astype(np.float64)
    for index in range(len(embeddings)):
        for neighbour in (index - 1, index + 1):
            if 0 <= neighbour < len(embeddings) and region_of[neighbour] == region_of[index]:
                smoothed[index] += embeddings[neighbour]
    nearest = np.argmax(smoothed @ centres.T, axis=1)
    first_seen = list(dict.fromkeys(int(label) for label in nearest))  # speakers no window kept are dropped
    renumber = {old: new for new, old in enumerate(first_seen)}
    return WindowLabels(np.array([renumber[int(label)] for label in nearest], dtype=int), centres[first_seen])


def name_clusters(
    centres: np.ndarray, known: Mapping[str, np.ndarray], threshold: float
) -> dict[int, tuple[str, float]]:
    """Cluster index → (known name, cosine), each name used once, best matches first."""
    pairs = sorted(
        ((float(centres[c] @ vector), c, name) for name, vector in known.items() for c in range(len(centres))),
        reverse=True,
    )
    named: dict[int, tuple[str, float]] = {}
    used: set[str] = set()
    for score, cluster, name in pairs:
        if score >= threshold and cluster not in named and name not in used:
            named[cluster] = (name, score)
            used.add(name)
    return named


# ---- turns -------------------------------------------------------------------------------------------


def window_turns(
    regions: Sequence[Span],
    windows: Sequence[tuple[int, int]],
    labels: Sequence[int],
    size: int,
    config: DiarizationConfig,
) -> list[Turn]:
    """Each region split between its windows' speakers halfway between neighbouring window centres, one
    speaker's pieces merged across short gaps, every turn padded into the silence around it (never past the
    middle of the gap to its neighbour)."""
    pieces: list[tuple[float, float, int]] = []
    for index, region in enumerate(regions):
        mine = [(first + size / 2, int(label)) for (r, first), label in zip(windows, labels, strict=True) if r == index]
        edge = float(region.start)
        for position, (centre, label) in enumerate(mine):
            cut = float(region.end) if position == len(mine) - 1 else (centre + mine[position + 1][0]) / 2
            cut = min(max(cut, edge), float(region.end))
            if cut > edge:
                pieces.append((edge, cut, label))
            edge = cut
    merged: list[tuple[float, float, int]] = []
    bridge = 2 * config.bridge_seconds * SAMPLE_RATE
    for piece in pieces:
        if merged and merged[-1][2] == piece[2] and piece[0] - merged[-1][1] <= bridge:
            merged[-1] = (merged[-1][0], piece[1], piece[2])
        else:
            merged.append(piece)
    pad = config.pad_seconds * SAMPLE_RATE
    turns: list[Turn] = []
    for position, (begin, finish, label) in enumerate(merged):
        low, high = begin - pad, finish + pad
        if position > 0:
            low = max(low, (begin + merged[position - 1][1]) / 2)
        if position < len(merged) - 1:
            high = min(high, (finish + merged[position + 1][0]) / 2)
        turns.append(Turn(max(0.0, low) / SAMPLE_RATE, high / SAMPLE_RATE, label))
    return turns
